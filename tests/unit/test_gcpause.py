"""The collector is paused for a bulk read and on again after the last overlapping one."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from baadal.config import Settings
from baadal.db.models import VM
from baadal.db.session import session_scope
from baadal.gcpause import paused_gc
from baadal.services import cloud
from baadal.services.policy import SYSTEM

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def _collector_on() -> Iterator[None]:
    gc.enable()
    yield
    gc.enable()


def test_paused_while_any_block_runs_and_on_after_the_last() -> None:
    outer = paused_gc()
    inner = paused_gc()
    outer.__enter__()
    assert not gc.isenabled()
    inner.__enter__()  # another thread's sweep overlapping
    outer.__exit__(None, None, None)
    assert not gc.isenabled()  # the other block still runs
    inner.__exit__(None, None, None)
    assert gc.isenabled()


def test_on_again_after_an_error() -> None:
    with pytest.raises(ValueError), paused_gc():
        raise ValueError("boom")
    assert gc.isenabled()


def test_a_collector_turned_off_by_the_process_stays_off() -> None:
    gc.disable()
    with paused_gc():
        assert not gc.isenabled()
    assert not gc.isenabled()


def test_cloud_wide_queueing_runs_with_the_collector_paused(
    sqlite_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Shutdown and bootup build a row per VM of the cloud (25,000 at scale)."""
    from baadal.host import maintenance

    seen: list[bool] = []

    def queue_all(_session: Session) -> None:
        seen.append(gc.isenabled())

    monkeypatch.setattr(maintenance, "shutdown_baadal", queue_all)
    monkeypatch.setattr(maintenance, "bootup_baadal", queue_all)
    with session_scope(sqlite_engine) as s:
        cloud.shutdown(s, SYSTEM)
        cloud.bootup(s, SYSTEM)
    assert seen == [False, False] and gc.isenabled()


def test_dhcp_entries_and_the_rrd_pass_are_made_with_the_collector_paused(
    sqlite_engine: Engine, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A DHCP rebuild's 25,000 entries and an RRD pass's 25,000 samples."""
    from baadal.monitor import rrd
    from baadal.net import dhcp
    from baadal.vm import network

    seen: list[bool] = []

    def entries(rows: object) -> list[dhcp.DhcpEntry]:
        seen.append(gc.isenabled())
        return []

    def hosts(_engine: Engine) -> tuple[list[object], list[str]]:
        seen.append(gc.isenabled())
        return [], []

    monkeypatch.setattr(dhcp, "vm_entries", entries)
    monkeypatch.setattr(rrd, "_cloud_hosts", hosts)
    with session_scope(sqlite_engine) as s:
        assert network.dhcp_entries_from_db(s) == []
    rrd.update_all_rrds(sqlite_engine, settings)
    assert seen == [False, False] and gc.isenabled()


def test_the_whole_vm_list_is_read_with_the_collector_paused(
    sqlite_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``vm list`` without a limit: a row per VM of the cloud."""
    from baadal.services import vms

    seen: list[bool] = []

    def summary(row: object) -> object:
        seen.append(gc.isenabled())
        return row

    with session_scope(sqlite_engine) as s:
        s.add(VM(vm_name="gc", vm_identity="o~u~gc", RAM=256, vCPU=1))
    monkeypatch.setattr(vms, "_summary", summary)
    with session_scope(sqlite_engine) as s:
        assert len(vms.list_vms(s, SYSTEM)) == 1
    assert seen == [False] and gc.isenabled()
