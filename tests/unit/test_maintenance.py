"""Maintenance on libvirt's test driver: shutdown snapshots and powers off every running
or paused VM, bootup brings each back to the state it had, VMs with queued work or in an
unknown state are skipped, and the cloud status follows."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select
from typer.testing import CliRunner

from baadal import constants as C
from baadal.cli.main import app
from baadal.config import Settings, get_settings
from baadal.db.constants_table import get_constant
from baadal.db.models import VM, Snapshot
from baadal.db.session import session_scope
from baadal.host import maintenance
from baadal.services import vms
from baadal.services.policy import SYSTEM
from tests.support.cloud import Cloud
from tests.unit import test_vm_lifecycle as lifecycle
from tests.unit.test_vm_lifecycle import create, hv_of, operate, run_tasks

pytestmark = pytest.mark.unit

cloud, cloud_settings = lifecycle.cloud, lifecycle.cloud_settings  # the same fixtures


def _states(engine: Engine, ids: list[int]) -> list[tuple[C.VMStatus, C.VMStatus]]:
    """(DB status, libvirt state) per VM."""
    out = []
    for vm_id in ids:
        hv, identity = hv_of(engine, vm_id)
        with session_scope(engine) as s:
            db_status = C.VMStatus(s.get(VM, vm_id).status)
        out.append((db_status, hv.domain_info(identity).status))
    return out


def _maintenance_snapshots(engine: Engine) -> int:
    with session_scope(engine) as s:
        return s.scalar(
            select(func.count())
            .select_from(Snapshot)
            .where(Snapshot.type == C.SnapshotType.MAINTENANCE)
        )


def test_shutdown_then_bootup_restores_each_state(
    sqlite_engine: Engine, cloud_settings: Settings, cloud: Cloud
) -> None:
    running, paused, off = (create(sqlite_engine, cloud_settings, name=n) for n in "rpo")
    operate(sqlite_engine, cloud_settings, paused, "suspend")
    operate(sqlite_engine, cloud_settings, off, "stop")
    before = _states(sqlite_engine, [running, paused, off])

    with session_scope(sqlite_engine) as s:
        queued = maintenance.shutdown_baadal(s)
        assert get_constant(s, "baadal_status") == C.BaadalStatus.DOWN_PROGRESS
    assert len(queued.task_ids) == 3 and queued.skipped == []
    run_tasks(sqlite_engine, cloud_settings)
    with session_scope(sqlite_engine) as s:
        maintenance.finish(s, shutdown=True)
        assert get_constant(s, "baadal_status") == C.BaadalStatus.DOWN
    off_state = (C.VMStatus.SHUTDOWN, C.VMStatus.SHUTDOWN)
    assert _states(sqlite_engine, [running, paused, off]) == [off_state] * 3
    assert _maintenance_snapshots(sqlite_engine) == 2  # the shut-off VM needed none

    with session_scope(sqlite_engine) as s:
        queued = maintenance.bootup_baadal(s)
    assert len(queued.task_ids) == 2
    run_tasks(sqlite_engine, cloud_settings)
    assert _states(sqlite_engine, [running, paused, off]) == before
    assert _maintenance_snapshots(sqlite_engine) == 0


def test_vms_with_queued_work_or_unknown_state_are_skipped(
    sqlite_engine: Engine, cloud_settings: Settings, cloud: Cloud
) -> None:
    busy, broken, _fine = (create(sqlite_engine, cloud_settings, name=n) for n in "bxf")
    with session_scope(sqlite_engine) as s:
        vms.operate(s, SYSTEM, busy, "suspend")  # queued, not run
        s.get(VM, broken).status = C.VMStatus.UNKNOWN
        queued = maintenance.shutdown_host(s, cloud.host_ids)
    assert dict(queued.skipped) == {"b": "a task is queued for it", "x": "state unknown"}
    assert len(queued.task_ids) == 1


def test_cloud_cli_shutdown_and_bootup(
    sqlite_engine: Engine,
    sqlite_url: str,
    cloud_settings: Settings,
    cloud: Cloud,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    vm_id = create(sqlite_engine, cloud_settings)
    monkeypatch.setenv("BAADAL_DATABASE__URL", sqlite_url)
    monkeypatch.setenv("BAADAL_GENERAL__SNAPSHOT_REQUIRES_PING", "false")
    get_settings.cache_clear()
    runner = CliRunner()
    down = runner.invoke(app, ["cloud", "shutdown", "--inline"])
    assert down.exit_code == 0, down.output
    assert "snapshotted and shut down" in down.output
    assert _states(sqlite_engine, [vm_id]) == [(C.VMStatus.SHUTDOWN, C.VMStatus.SHUTDOWN)]
    up = runner.invoke(app, ["cloud", "bootup", "--inline"])
    assert up.exit_code == 0, up.output
    assert _states(sqlite_engine, [vm_id]) == [(C.VMStatus.RUNNING, C.VMStatus.RUNNING)]
    with session_scope(sqlite_engine) as s:
        assert get_constant(s, "baadal_status") == C.BaadalStatus.UP
