"""Migration: refusals change nothing, a driver without migration (libvirt's test driver)
fails cleanly with the VM untouched; on the fake driver a VM moves with its snapshots, and
an interrupted migration is settled. The real thing is tests/e2e/test_migration.py."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import typer
from sqlalchemy import Engine, func, select, update
from typer.testing import CliRunner

from baadal import address_pools
from baadal import constants as C
from baadal.cli.vm_commands import migrate_cmd
from baadal.config import Settings, get_settings
from baadal.db.models import VM, Host, Task, VMEventLog, VncAccess
from baadal.db.session import dispose_engines, session_scope
from baadal.drivers import domain_xml
from baadal.drivers.base import Hypervisor, SnapshotInfo
from baadal.errors import ConflictError, NotFoundError, ResourceExhausted
from baadal.services import vms
from baadal.services.policy import SYSTEM
from baadal.tasks.params import MigrateVMHostParams
from baadal.tasks.registry import TaskContext
from baadal.timeutil import utcnow
from baadal.vm import migration
from tests.support.cloud import Cloud
from tests.unit import test_vm_lifecycle as lifecycle
from tests.unit.test_vm_lifecycle import create, hv_of, last_task, run_tasks

# the same fixtures
cloud, cloud_settings, fake_cloud = lifecycle.cloud, lifecycle.cloud_settings, lifecycle.fake_cloud

pytestmark = pytest.mark.unit


def _state(engine: Engine, vm_id: int) -> tuple[int | None, int, int]:
    """(host, event rows, tasks): what a refused migration must not change."""
    with session_scope(engine) as s:
        return (
            s.get(VM, vm_id).host_id,
            s.scalar(select(func.count()).select_from(VMEventLog)),
            s.scalar(select(func.count()).select_from(Task)),
        )


def _snapshot(engine: Engine, settings: Settings, vm_id: int, times: int) -> list[str]:
    for _ in range(times):
        with session_scope(engine) as s:
            vms.request_snapshot(s, SYSTEM, vm_id)
        run_tasks(engine, settings)
    hv, identity = hv_of(engine, vm_id)
    return [snap.name for snap in hv.snapshot_list(identity)]


def _ctx(
    engine: Engine, settings: Settings, vm_id: int, **params: object
) -> TaskContext[MigrateVMHostParams]:
    args = MigrateVMHostParams.model_validate(params)
    return TaskContext(1, C.TaskType.MIGRATE_VM_HOST, vm_id, None, args, 2, "t", engine, settings)


def _backup(engine: Engine, settings: Settings, vm_id: int) -> Path:
    with session_scope(engine) as s:
        vm = s.get(VM, vm_id)
        return migration.migration_dir(settings, vm.datastore, vm.vm_identity)


def _vm_with_saved_snapshots(
    engine: Engine, settings: Settings
) -> tuple[int, list[str], Hypervisor, str, Path, list[SnapshotInfo]]:
    """A VM with two snapshots whose XML a migration saved to its backup directory:
    (vm id, snapshot names, hypervisor, identity, backup dir, snapshots)."""
    vm_id = create(engine, settings)
    names = _snapshot(engine, settings, vm_id, 2)
    hv, identity = hv_of(engine, vm_id)
    backup = _backup(engine, settings, vm_id)
    snaps = hv.snapshot_list(identity)
    migration.save_snapshot_xmls(backup, snaps)
    return vm_id, names, hv, identity, backup, snaps


def test_refusals_change_nothing(
    sqlite_engine: Engine, cloud_settings: Settings, cloud: Cloud
) -> None:
    engine, settings = sqlite_engine, cloud_settings
    vm_id = create(engine, settings)
    h1, h2 = cloud.host_ids
    before = _state(engine, vm_id)
    with session_scope(engine) as s:
        vm = s.get(VM, vm_id)
        assert vm.host_id == h1
        with pytest.raises(ConflictError, match="already on host host1"):
            vms.request_migrate(s, SYSTEM, vm.id, "host1", True)
        with pytest.raises(NotFoundError):
            vms.request_migrate(s, SYSTEM, vm.id, "nohost", True)
        s.get(Host, h2).status = C.HostStatus.MAINTENANCE
        s.flush()
        with pytest.raises(ConflictError, match="host2: it is MAINTENANCE"):
            vms.request_migrate(s, SYSTEM, vm.id, "host2", True)
        with pytest.raises(ResourceExhausted, match="no host is UP"):
            vms.request_migrate(s, SYSTEM, vm.id, None, True)
        s.rollback()
    with session_scope(engine) as s:
        s.execute(update(Host).where(Host.id == h2).values(RAM=0))
    with (
        session_scope(engine) as s,
        pytest.raises(ResourceExhausted, match="cannot migrate web to host2: no UP host"),
    ):
        vms.request_migrate(s, SYSTEM, vm_id, "host2", True)
    # the handler checks again at run time (the host may have filled since)
    result = migration.migrate_domain(engine, settings, vm_id, h2, True)
    assert result.status == C.TaskStatus.FAILED
    assert result.message.startswith("Task Status: FAILED Error: cannot migrate web to host2")
    with session_scope(engine) as s:
        queued = vms.request_vm(
            s, SYSTEM, settings, vm_name="waiting", template="tiny", ram_mb=256, vcpus=1,
            network=False,
        )  # fmt: skip
    with session_scope(engine) as s, pytest.raises(ConflictError, match="not installed"):
        vms.request_migrate(s, SYSTEM, queued.vm_id, None, True)
    after = _state(engine, vm_id)
    assert after[:2] == before[:2] and after[2] == before[2] + 1  # only the create task


def test_driver_without_migration_fails_cleanly(
    sqlite_engine: Engine, cloud_settings: Settings, cloud: Cloud
) -> None:
    engine, settings = sqlite_engine, cloud_settings
    vm_id = create(engine, settings)
    names = _snapshot(engine, settings, vm_id, 2)
    hv, identity = hv_of(engine, vm_id)
    current = [snap.name for snap in hv.snapshot_list(identity) if snap.is_current]
    host_before, events_before, _ = _state(engine, vm_id)
    with session_scope(engine) as s:
        task = vms.request_migrate(s, SYSTEM, vm_id, "host2", True)
        assert task.parameters == {
            "destination_host": cloud.host_ids[1],
            "live_migration": True,
            "source_host": cloud.host_ids[0],
            "vm_id": vm_id,
        }
    run_tasks(engine, settings)
    task = last_task(engine)
    assert task.status == C.TaskStatus.FAILED
    assert task.message == (f"Task Status: FAILED Error: migration is not supported by {hv.uri}")
    after = _state(engine, vm_id)
    assert after[:2] == (host_before, events_before)
    assert hv.domain_info(identity).active
    snaps = hv.snapshot_list(identity)
    assert [s.name for s in snaps] == names
    assert [s.name for s in snaps if s.is_current] == current
    assert not _backup(engine, settings, vm_id).exists()


def test_snapshot_xmls_are_saved_in_order_and_cleaned(tmp_path: Path) -> None:
    snaps = [
        SnapshotInfo("user_a", "<domainsnapshot><name>user_a</name></domainsnapshot>", False),
        SnapshotInfo("user-b", "<domainsnapshot><name>user-b</name></domainsnapshot>", True),
        SnapshotInfo("c", "<domainsnapshot><name>c</name></domainsnapshot>", False),
    ]
    directory = tmp_path / "vm_migration_data" / "org_u_web"
    assert migration.saved_snapshots(directory) == []
    migration.save_snapshot_xmls(directory, snaps)
    assert migration.saved_snapshots(directory) == snaps
    migration.save_snapshot_xmls(directory, snaps[:1])  # a new save replaces the old one
    assert migration.saved_snapshots(directory) == snaps[:1]
    migration.clean_migration_directory(directory)
    assert not directory.exists()
    migration.clean_migration_directory(directory)  # idempotent


def test_vnc_listen_is_rewritten_in_domain_and_snapshot_xml() -> None:
    spec = domain_xml.DomainSpec(
        "d", "00000000-0000-4000-8000-000000000001", 64, 1, [], vnc_port=5901,
        vnc_listen="10.0.0.1",
    )  # fmt: skip
    dom = domain_xml.build_domain_xml(spec, allow_diskless=True)
    snap = f"<domainsnapshot><name>s</name>{dom}</domainsnapshot>"
    for xml in (dom, snap):
        out = domain_xml.set_vnc_listen(xml, "10.0.0.2")
        assert "10.0.0.1" not in out and out.count("10.0.0.2") == 2
    plain = domain_xml.build_domain_xml(
        dataclasses.replace(spec, vnc_port=None), allow_diskless=True
    )
    assert (
        domain_xml.parse(domain_xml.set_vnc_listen(plain, "1.2.3.4")).find("devices/graphics")
        is None
    )


def test_a_vm_moves_with_its_snapshots(
    sqlite_engine: Engine, cloud_settings: Settings, fake_cloud: Cloud
) -> None:
    engine, settings = sqlite_engine, cloud_settings
    vm_id = create(engine, settings)
    names = _snapshot(engine, settings, vm_id, 2)
    source, identity = hv_of(engine, vm_id)
    with session_scope(engine) as s:
        vms.request_migrate(s, SYSTEM, vm_id, "host2", True)
    run_tasks(engine, settings)
    task = last_task(engine)
    assert (task.status, task.message) == (C.TaskStatus.SUCCESS, "web is migrated successfully")
    dest, _ = hv_of(engine, vm_id)
    assert dest.uri == "fake:///h2" and not source.is_defined(identity)
    assert dest.domain_info(identity).status == C.VMStatus.RUNNING
    snaps = dest.snapshot_list(identity)
    assert [(s.name, s.is_current) for s in snaps] == [(names[0], False), (names[1], True)]
    assert not _backup(engine, settings, vm_id).exists()


def test_a_vm_takes_its_vnc_port_reservation_to_the_new_host(
    sqlite_engine: Engine, cloud_settings: Settings, fake_cloud: Cloud
) -> None:
    engine, settings = sqlite_engine, cloud_settings
    vm_id = create(engine, settings)
    h1, h2 = fake_cloud.host_ids
    with session_scope(engine) as s:
        port = s.get(VM, vm_id).vnc_port
        assert address_pools.vnc_port_taken(s, h1, port)
    with session_scope(engine) as s:
        vms.request_migrate(s, SYSTEM, vm_id, "host2", True)
    run_tasks(engine, settings)
    assert last_task(engine).status == C.TaskStatus.SUCCESS
    with session_scope(engine) as s:
        vm = s.get(VM, vm_id)
        assert (vm.host_id, vm.vnc_port) == (h2, port)
        # the old host's port is free again, the new host's held
        assert not address_pools.vnc_port_taken(s, h1, port)
        assert address_pools.vnc_port_taken(s, h2, port)


def test_a_host_where_the_vms_vnc_port_is_held_is_no_destination(
    sqlite_engine: Engine, cloud_settings: Settings, fake_cloud: Cloud
) -> None:
    engine, settings = sqlite_engine, cloud_settings
    vm_id = create(engine, settings)
    other = create(engine, settings, "db")
    h1, h2 = fake_cloud.host_ids
    with session_scope(engine) as s:
        port = s.get(VM, vm_id).vnc_port
        s.get(VM, vm_id).host_id = h1
        s.get(VM, other).host_id = h2
        s.flush()
        s.get(VM, other).vnc_port = port  # the same port, on the other host: allowed
    before = _state(engine, vm_id)
    with session_scope(engine) as s:
        with pytest.raises(ConflictError, match=f"another VM there holds its VNC port {port}"):
            vms.request_migrate(s, SYSTEM, vm_id, "host2", True)
        with pytest.raises(ResourceExhausted):
            vms.request_migrate(s, SYSTEM, vm_id, None, True)
    assert _state(engine, vm_id) == before


def test_compensation_finishes_a_migration_that_happened(
    sqlite_engine: Engine, cloud_settings: Settings, fake_cloud: Cloud
) -> None:
    engine, settings, cloud = sqlite_engine, cloud_settings, fake_cloud
    vm_id, names, hv, identity, backup, snaps = _vm_with_saved_snapshots(engine, settings)
    dest_uri = "fake:///h2"
    with session_scope(engine) as s:
        s.add(
            VncAccess(
                vm_id=vm_id, token="t", host_id=cloud.host_ids[0], vnc_source_port=6000,
                vnc_destination_port=5901, status="active", expiry_time=utcnow(),
            )
        )  # fmt: skip
    # the worker died after the domain moved, before the VM row and the snapshots followed
    for snap in reversed(snaps):
        hv.snapshot_delete(identity, snap.name, metadata_only=True)
    hv.migrate(identity, dest_uri, "127.0.0.1", live=True, vnc_listen="127.0.0.1")
    migration.compensate_migration(_ctx(engine, settings, vm_id))
    with session_scope(engine) as s:  # the console grant followed the VM
        grant = s.scalars(select(VncAccess)).one()
        vm = s.get(VM, vm_id)
        assert (grant.status, grant.host_id) == ("active", cloud.host_ids[1])
        assert (grant.vnc_source_port, grant.vnc_destination_port) == (6000, vm.vnc_port)
    with session_scope(engine) as s:
        assert s.get(VM, vm_id).host_id == cloud.host_ids[1]
        event = s.scalars(select(VMEventLog).where(VMEventLog.attribute == "host")).all()[-1]
        assert (event.old_value, event.new_value) == ("host1", "host2")
    dest, _ = hv_of(engine, vm_id)
    assert dest.uri == dest_uri
    assert [s.name for s in dest.snapshot_list(identity)] == names
    assert dest.snapshot_list(identity)[-1].is_current
    assert not backup.exists()
    # the re-run after compensation reports the migration instead of moving again
    ctx = _ctx(
        engine, settings, vm_id, destination_host=cloud.host_ids[1], source_host=cloud.host_ids[0]
    )
    result = migration.migrate(ctx)
    assert (result.status, result.message) == (C.TaskStatus.SUCCESS, "web is migrated successfully")


def test_compensation_undoes_a_migration_that_did_not_happen(
    sqlite_engine: Engine, cloud_settings: Settings, cloud: Cloud
) -> None:
    engine, settings = sqlite_engine, cloud_settings
    vm_id, names, hv, identity, backup, snaps = _vm_with_saved_snapshots(engine, settings)
    for snap in reversed(snaps):  # test:/// cannot delete metadata only: the same to it
        hv.snapshot_delete(identity, snap.name)
    host_before, events_before, _ = _state(engine, vm_id)
    migration.compensate_migration(_ctx(engine, settings, vm_id))
    assert _state(engine, vm_id)[:2] == (host_before, events_before)
    assert [s.name for s in hv.snapshot_list(identity)] == names
    assert [s.is_current for s in hv.snapshot_list(identity)] == [False, True]
    assert not backup.exists()


def test_two_running_copies_need_a_person(
    sqlite_engine: Engine, cloud_settings: Settings, cloud: Cloud
) -> None:
    engine, settings = sqlite_engine, cloud_settings
    vm_id = create(engine, settings)
    hv, identity = hv_of(engine, vm_id)
    with session_scope(engine) as s:
        places = [migration._place(settings, s.get(Host, h)) for h in cloud.host_ids]
    places[1].hv.define(hv.xml(identity, inactive=True, secure=True))
    assert migration.locate_domain(places, identity) == places[0]  # the running one
    places[1].hv.start(identity)
    with pytest.raises(ConflictError, match=r"cannot tell where .*host1, host2"):
        migration.locate_domain(places, identity)
    hv.undefine(identity)
    places[1].hv.undefine(identity)
    with pytest.raises(ConflictError, match="hosts defining it: none"):
        migration.locate_domain(places, identity)


def test_clone_migration_needs_a_shut_off_clone_and_a_driver_that_migrates(
    sqlite_engine: Engine, cloud_settings: Settings, cloud: Cloud
) -> None:
    engine, settings = sqlite_engine, cloud_settings
    vm_id = create(engine, settings)
    h2 = cloud.host_ids[1]
    assert not migration.migrate_clone_to_new_host(engine, settings, vm_id, h2)  # running
    hv, identity = hv_of(engine, vm_id)
    hv.destroy(identity)
    assert not migration.migrate_clone_to_new_host(engine, settings, vm_id, h2)  # test:///
    with session_scope(engine) as s:
        assert s.get(VM, vm_id).host_id == cloud.host_ids[0]
    assert hv.is_defined(identity)


def test_an_unfinished_earlier_attempt_is_settled_first(
    sqlite_engine: Engine, cloud_settings: Settings, cloud: Cloud
) -> None:
    engine, settings = sqlite_engine, cloud_settings
    vm_id, names, hv, identity, backup, _ = _vm_with_saved_snapshots(engine, settings)
    for name in reversed(names):
        hv.snapshot_delete(identity, name)
    result = migration.migrate_domain(engine, settings, vm_id, cloud.host_ids[1], True)
    assert result.message.endswith("migration is not supported by " + hv.uri)
    assert [s.name for s in hv.snapshot_list(identity)] == names
    assert not backup.exists()


def test_cli_migrate(
    sqlite_engine: Engine,
    sqlite_url: str,
    cloud_settings: Settings,
    cloud: Cloud,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    create(sqlite_engine, cloud_settings)
    monkeypatch.setenv("BAADAL_DATABASE__URL", sqlite_url)
    get_settings.cache_clear()
    dispose_engines()
    app = typer.Typer()
    app.command()(migrate_cmd)
    runner = CliRunner()
    try:
        refused = runner.invoke(app, ["web", "--to", "host1"])
        assert refused.exit_code == 2 and "already on host host1" in refused.output
        queued = runner.invoke(app, ["web", "--to", "host2", "--offline", "--no-wait"])
        assert queued.exit_code == 0 and "queued task" in queued.output
        with session_scope(sqlite_engine) as s:
            task = s.scalars(select(Task).order_by(Task.id.desc())).first()
            assert task.parameters["live_migration"] is False
            s.delete(task)
        failed = runner.invoke(app, ["web", "--inline"])  # placement chooses host2
        assert failed.exit_code == 1 and "migration is not supported" in failed.output
    finally:
        get_settings.cache_clear()
        dispose_engines()
