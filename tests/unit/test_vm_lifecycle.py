"""VM lifecycle on libvirt's test driver: every operation and every failure path.

The real-libvirtd counterpart is tests/integration/test_vm_real.py.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select, update
from typer.testing import CliRunner

from baadal import constants as C
from baadal.cli.main import app
from baadal.config import Settings, get_settings, load_settings
from baadal.db.models import (
    VM,
    AttachedDisk,
    Datastore,
    Host,
    PrivateIpPool,
    Snapshot,
    Task,
    Template,
    User,
    UserVMMap,
)
from baadal.db.session import dispose_engines, session_scope
from baadal.drivers import domain_xml, fake, hypervisor_for
from baadal.drivers.base import Hypervisor
from baadal.drivers.libvirt_driver import LibvirtHypervisor
from baadal.errors import ConflictError, NotFoundError, ResourceExhausted, ValidationError
from baadal.lab import layout as lab_layout
from baadal.lab import settings_file as lab_settings_file
from baadal.services import vms
from baadal.services.policy import SYSTEM
from baadal.tasks import queue
from baadal.tasks.registry import load_handler_modules
from baadal.tasks.worker import Worker
from baadal.timeutil import utcnow
from baadal.vm import clone as clone_mod
from baadal.vm import disk as disk_mod
from baadal.vm import domain_usage, storage
from tests.support.cloud import Cloud, fake_host_uri, make_cloud

pytestmark = pytest.mark.unit


@pytest.fixture
def cloud_settings(settings: Settings) -> Settings:
    settings.general.snapshot_requires_ping = False
    settings.vm.stop_timeout_s = 0.5
    return settings


@pytest.fixture
def cloud(sqlite_engine: Engine, cloud_settings: Settings, tmp_path: Path) -> Cloud:
    uris = [fake_host_uri(tmp_path, f"h{i}") for i in (1, 2)]
    return make_cloud(sqlite_engine, cloud_settings, tmp_path, uris)


@pytest.fixture
def fake_cloud(sqlite_engine: Engine, cloud_settings: Settings, tmp_path: Path) -> Iterator[Cloud]:
    """The same cloud on two hosts of the in-memory fake driver, which can migrate."""
    fake.reset()
    yield make_cloud(sqlite_engine, cloud_settings, tmp_path, ["fake:///h1", "fake:///h2"])
    fake.reset()


def run_tasks(engine: Engine, settings: Settings) -> None:
    Worker(engine, settings, registry=load_handler_modules(), worker_id="t").run(until_idle=True)


def last_task(engine: Engine) -> Task:
    with session_scope(engine) as s:
        return s.scalars(select(Task).order_by(Task.id.desc())).first()


def create(engine: Engine, settings: Settings, name: str = "web", **kw: object) -> int:
    with session_scope(engine) as s:
        args = {
            "vm_name": name,
            "template": "tiny",
            "ram_mb": 256,
            "vcpus": 1,
            "security_domain": "research",
        }
        args.update(kw)
        queued = vms.request_vm(s, SYSTEM, settings, **args)
    run_tasks(engine, settings)
    return queued.vm_id


def hv_of(engine: Engine, vm_id: int) -> tuple[Hypervisor, str]:
    with session_scope(engine) as s:
        vm = s.get(VM, vm_id)
        return hypervisor_for(vm.host.libvirt_uri), vm.vm_identity


def operate(engine: Engine, settings: Settings, vm_id: int, op: str) -> Task:
    with session_scope(engine) as s:
        vms.operate(s, SYSTEM, vm_id, op)
    run_tasks(engine, settings)
    return last_task(engine)


def counts(engine: Engine) -> dict[str, int]:
    with session_scope(engine) as s:
        used_ips = s.scalar(
            select(func.count()).select_from(VM).where(VM.private_ip_id.is_not(None))
        )
        return {
            "vms": s.scalar(select(func.count()).select_from(VM)),
            "used_ips": used_ips,
            "vnc": s.scalar(select(func.count()).select_from(VM).where(VM.vnc_port.is_not(None))),
            "disks": s.scalar(select(func.count()).select_from(AttachedDisk)),
            "snapshots": s.scalar(select(func.count()).select_from(Snapshot)),
            "maps": s.scalar(select(func.count()).select_from(UserVMMap)),
            "ds_used": s.scalar(select(Datastore.used)),
        }


def test_identities_of_different_owners_never_collide(
    sqlite_engine: Engine, cloud_settings: Settings, cloud: Cloud
) -> None:
    """With '_' joining the parts, user system_web's VM x and system's VM web_x were both
    ADMIN_system_web_x: the second was refused as "system already has a VM named"."""
    with session_scope(sqlite_engine) as s:
        system = s.get(User, C.SYSTEM_USER_ID)
        s.add(User(username="system_web", organisation_id=system.organisation_id))
        # a VM made before the separator changed keeps its identity, and its name
        s.add(VM(vm_name="db", vm_identity="ADMIN_system_db", owner_id=C.SYSTEM_USER_ID,
                 RAM=256, vCPU=1))  # fmt: skip
    theirs = create(sqlite_engine, cloud_settings, "x", owner="system_web")
    mine = create(sqlite_engine, cloud_settings, "web_x")
    with session_scope(sqlite_engine) as s:
        assert (s.get(VM, theirs).vm_identity, s.get(VM, mine).vm_identity) == (
            "ADMIN~system_web~x",
            "ADMIN~system~web_x",
        )
    with pytest.raises(ConflictError, match="system already has a VM named 'db'"):
        create(sqlite_engine, cloud_settings, "db")


def test_install_makes_a_running_vm_on_an_overlay(
    sqlite_engine: Engine, cloud_settings: Settings, cloud: Cloud
) -> None:
    vm_id = create(sqlite_engine, cloud_settings, extra_disk_gb=2)
    task = last_task(sqlite_engine)
    assert (task.status, task.message) == (
        C.TaskStatus.SUCCESS,
        "VM is installed successfully Attached extra disk successfully.",
    )
    hv, identity = hv_of(sqlite_engine, vm_id)
    assert identity == "ADMIN~system~web"
    assert hv.domain_info(identity).status == C.VMStatus.RUNNING
    xml = hv.xml(identity, inactive=True)
    with session_scope(sqlite_engine) as s:
        vm = s.get(VM, vm_id)
        assert vm.status == C.VMStatus.RUNNING
        assert vm.private_ip.private_ip.startswith("10.99.10.")
        mac = vm.private_ip.mac_addr
        assert C.VNC_PORT_RANGE[0] <= vm.vnc_port <= C.VNC_PORT_RANGE[1]
        # a password nobody is told (each grant sets its own), kept out of plain XML
        assert "passwd=" in hv.xml(identity, inactive=True, secure=True) and "passwd" not in xml
        image = storage.get_vm_image_location(cloud_settings, vm.datastore, identity)
        assert s.scalar(select(Datastore.used)) == 1 + 2
    assert image.present
    info = storage.image_info(image.path)
    assert info["backing-filename"] == str(cloud.template_file)
    assert mac.lower() in xml and "<tag id='10'/>" in xml
    assert f"port='{vm.vnc_port}'" in xml
    assert "vdb" in xml  # the extra disk


def test_power_operations_and_messages(
    sqlite_engine: Engine, cloud_settings: Settings, cloud: Cloud
) -> None:
    vm_id = create(sqlite_engine, cloud_settings)
    hv, identity = hv_of(sqlite_engine, vm_id)
    for op, state, message in [
        ("suspend", C.VMStatus.SUSPENDED, "web is suspend successfully"),
        ("resume", C.VMStatus.RUNNING, "web is resumed successfully"),
        ("destroy", C.VMStatus.SHUTDOWN, "web is destroyed successfully"),
        ("start", C.VMStatus.RUNNING, "web is started successfully"),
        ("stop", C.VMStatus.SHUTDOWN, "web is stopped successfully"),
    ]:
        task = operate(sqlite_engine, cloud_settings, vm_id, op)
        assert (task.status, task.message) == (C.TaskStatus.SUCCESS, message)
        assert hv.domain_info(identity).status == state
        with session_scope(sqlite_engine) as s:
            assert s.get(VM, vm_id).status == state
    task = operate(sqlite_engine, cloud_settings, vm_id, "resume")
    assert task.status == C.TaskStatus.FAILED and "shutdown" in task.message


def test_a_power_operation_whose_run_was_lost_after_acting_is_recorded_on_its_rerun(
    sqlite_engine: Engine, cloud_settings: Settings, cloud: Cloud
) -> None:
    """The lost run suspended the domain but its worker died before the task's end (the
    new status commits with it): the re-run finds the domain suspended, has nothing left
    to do, and records it. A first run that finds it so is refused as before."""
    vm_id = create(sqlite_engine, cloud_settings)
    hv, identity = hv_of(sqlite_engine, vm_id)
    with session_scope(sqlite_engine) as s:
        task_id = vms.operate(s, SYSTEM, vm_id, "suspend").id
    assert queue.claim(sqlite_engine, "dead", 30) is not None
    hv.suspend(identity)  # what the lost run got done
    with session_scope(sqlite_engine) as s:
        s.execute(update(Task).values(lease_expires_at=utcnow() - timedelta(seconds=1)))
    queue.recover_expired(sqlite_engine)
    run_tasks(sqlite_engine, cloud_settings)
    with session_scope(sqlite_engine) as s:
        task = s.get(Task, task_id)
        assert (task.status, task.message) == (C.TaskStatus.SUCCESS, "web is suspend successfully")
        assert s.get(VM, vm_id).status == C.VMStatus.SUSPENDED
    task = operate(sqlite_engine, cloud_settings, vm_id, "suspend")
    assert task.status == C.TaskStatus.FAILED and "suspended" in task.message


def test_request_errors_change_nothing(
    sqlite_engine: Engine, cloud_settings: Settings, cloud: Cloud
) -> None:
    create(sqlite_engine, cloud_settings)
    before = counts(sqlite_engine)
    cases = [
        ({"template": "nope"}, NotFoundError, "no template named 'nope'"),
        ({"vm_name": "web"}, ConflictError, "already has a VM named 'web'"),
        ({"vm_name": "bad name"}, ValidationError, "may contain only"),
        ({"ram_mb": 300}, ValidationError, "RAM must be one of"),
        ({"extra_disk_gb": 500}, ResourceExhausted, "no datastore"),
        ({"security_domain": "nope"}, NotFoundError, "no security domain named 'nope'"),
        ({"host": "host9"}, NotFoundError, "no host named 'host9'"),
        ({"ram_mb": 65536}, ResourceExhausted, "RAM"),
    ]
    for kw, error, match in cases:
        args = {"vm_name": "other"} | kw
        with pytest.raises(error, match=match):
            create(sqlite_engine, cloud_settings, **args)
    with session_scope(sqlite_engine) as s:
        s.get(Host, cloud.host_ids[0]).status = C.HostStatus.DOWN
    with pytest.raises(ConflictError, match="host host1 is DOWN"):
        create(sqlite_engine, cloud_settings, "other", host="host1")
    assert counts(sqlite_engine) == before


def test_missing_template_file_fails_cleanly(
    sqlite_engine: Engine, cloud_settings: Settings, cloud: Cloud
) -> None:
    cloud.template_file.rename(cloud.template_file.with_suffix(".gone"))
    with pytest.raises(NotFoundError, match="image file is missing"):
        create(sqlite_engine, cloud_settings)


def test_failed_install_leaks_nothing(
    sqlite_engine: Engine, cloud_settings: Settings, cloud: Cloud
) -> None:
    before = counts(sqlite_engine)
    with session_scope(sqlite_engine) as s:
        queued = vms.request_vm(
            s, SYSTEM, cloud_settings, vm_name="doomed", template="tiny", ram_mb=256, vcpus=1,
            security_domain="research", public_ip=True,
        )  # fmt: skip
    cloud.template_file.rename(cloud.template_file.with_suffix(".gone"))  # vanishes mid-way
    run_tasks(sqlite_engine, cloud_settings)
    task = last_task(sqlite_engine)
    assert task.status == C.TaskStatus.FAILED
    assert task.message.startswith("Task Status: FAILED Error: template image")
    with session_scope(sqlite_engine) as s:
        vm = s.get(VM, queued.vm_id)
        assert vm.status == C.VMStatus.UNKNOWN
        assert (vm.private_ip_id, vm.public_ip_id, vm.vnc_port, vm.host_id) == (None,) * 4
        assert vm.datastore_id is None
    assert counts(sqlite_engine) == before | {"vms": before["vms"] + 1, "maps": before["maps"] + 1}
    assert not (cloud.datastore_path / cloud_settings.paths.vms / "ADMIN~system~doomed").exists()
    # retry after fixing the template: installs; ignore would have removed the row
    cloud.template_file.with_suffix(".gone").rename(cloud.template_file)
    with session_scope(sqlite_engine) as s:
        queue.retry(s, task.id)
    run_tasks(sqlite_engine, cloud_settings)
    assert last_task(sqlite_engine).status == C.TaskStatus.SUCCESS


def test_snapshots_limit_revert_and_delete(
    sqlite_engine: Engine, cloud_settings: Settings, cloud: Cloud
) -> None:
    vm_id = create(sqlite_engine, cloud_settings)
    hv, identity = hv_of(sqlite_engine, vm_id)
    for _ in range(3):
        with session_scope(sqlite_engine) as s:
            vms.request_snapshot(s, SYSTEM, vm_id)
        run_tasks(sqlite_engine, cloud_settings)
        assert last_task(sqlite_engine).message == "Snapshotted successfully"
    with (
        pytest.raises(ConflictError, match="at most 3 snapshots"),
        session_scope(sqlite_engine) as s,
    ):
        vms.request_snapshot(s, SYSTEM, vm_id)
    names = [snap.name for snap in hv.snapshot_list(identity)]
    assert len(names) == 3
    with session_scope(sqlite_engine) as s:
        first = s.scalars(select(Snapshot).order_by(Snapshot.id)).first()
        vms.request_revert(s, SYSTEM, vm_id, first.id)
    run_tasks(sqlite_engine, cloud_settings)
    assert last_task(sqlite_engine).message == "Reverted to snapshot successfully"
    assert [s.is_current for s in hv.snapshot_list(identity) if s.name == first.snapshot_name] == [
        True
    ]
    with session_scope(sqlite_engine) as s:
        vms.request_delete_snapshot(s, SYSTEM, vm_id, first.snapshot_name)
    run_tasks(sqlite_engine, cloud_settings)
    assert last_task(sqlite_engine).message == "Deleted snapshot successfully"
    assert first.snapshot_name not in [snap.name for snap in hv.snapshot_list(identity)]
    with pytest.raises(NotFoundError), session_scope(sqlite_engine) as s:
        vms.request_revert(s, SYSTEM, vm_id, first.id)


def test_delete_with_snapshots_and_disks_leaves_nothing(
    sqlite_engine: Engine, cloud_settings: Settings, cloud: Cloud
) -> None:
    before = counts(sqlite_engine)
    vm_id = create(sqlite_engine, cloud_settings, extra_disk_gb=1, public_ip=True)
    with session_scope(sqlite_engine) as s:
        vms.request_snapshot(s, SYSTEM, vm_id)
        vms.request_attach_disk(s, SYSTEM, vm_id, 1)
    run_tasks(sqlite_engine, cloud_settings)
    hv, identity = hv_of(sqlite_engine, vm_id)
    assert len(hv.snapshot_list(identity)) == 1
    with session_scope(sqlite_engine) as s:
        assert s.scalar(select(func.count()).select_from(AttachedDisk)) == 2
    task = operate(sqlite_engine, cloud_settings, vm_id, "delete")
    assert (task.status, task.message) == (C.TaskStatus.SUCCESS, "web is deleted successfully")
    assert not hv.is_defined(identity)
    assert counts(sqlite_engine) == before
    leftovers = [
        p for p in cloud.datastore_path.rglob("*") if p.is_file() and p != cloud.template_file
    ]
    assert leftovers == []
    with session_scope(sqlite_engine) as s:
        free = s.scalar(
            select(func.count()).select_from(PrivateIpPool).where(PrivateIpPool.is_active)
        )
        assert free == 41


def test_attach_disk_refused_when_it_does_not_fit(
    sqlite_engine: Engine, cloud_settings: Settings, cloud: Cloud
) -> None:
    vm_id = create(sqlite_engine, cloud_settings)
    with pytest.raises(ResourceExhausted), session_scope(sqlite_engine) as s:
        vms.request_attach_disk(s, SYSTEM, vm_id, 1000)
    with pytest.raises(ValidationError), session_scope(sqlite_engine) as s:
        vms.request_attach_disk(s, SYSTEM, vm_id, 0)
    with session_scope(sqlite_engine) as s:
        vms.request_attach_disk(s, SYSTEM, vm_id, 3)
    run_tasks(sqlite_engine, cloud_settings)
    assert last_task(sqlite_engine).message == "Attached extra disk successfully"
    with session_scope(sqlite_engine) as s:
        vm = s.get(VM, vm_id)
        loc = storage.get_extra_disk_location(
            cloud_settings, vm.datastore, vm.vm_identity, f"{vm.vm_identity}_disk1.qcow2", True
        )
        assert vm.extra_HDD == 3
    assert loc.present and loc.size_gb == 3


def _one_writer_commits(engine: Engine) -> str:
    """What another process trying to write right now gets (SQLite: one writer)."""
    other = sqlite3.connect(engine.url.database, timeout=0.2)
    try:
        other.execute("BEGIN IMMEDIATE")
        other.execute("COMMIT")
        return "committed"
    except sqlite3.OperationalError as exc:
        return str(exc)
    finally:
        other.close()


def test_attach_disk_makes_and_attaches_outside_any_transaction(
    sqlite_engine: Engine, cloud_settings: Settings, cloud: Cloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    """qemu-img and the libvirt attach used to run in the handler's open transaction,
    holding SQLite's write lock for everyone meanwhile."""
    vm_id = create(sqlite_engine, cloud_settings)
    real_blank = storage.create_blank
    writes: list[str] = []

    def blank_while_another_writer_commits(path: Path, size_gb: int) -> None:
        writes.append(_one_writer_commits(sqlite_engine))
        real_blank(path, size_gb)

    monkeypatch.setattr(storage, "create_blank", blank_while_another_writer_commits)
    with session_scope(sqlite_engine) as s:
        vms.request_attach_disk(s, SYSTEM, vm_id, 1)
    run_tasks(sqlite_engine, cloud_settings)
    assert last_task(sqlite_engine).message == "Attached extra disk successfully"
    assert writes == ["committed"]


@pytest.mark.parametrize("attached", [False, True])
def test_attach_disk_whose_worker_died_is_compensated(
    sqlite_engine: Engine, cloud_settings: Settings, cloud: Cloud, attached: bool
) -> None:
    """A worker died after reserving and making the disk (and maybe attaching it): the
    re-run ends with exactly one disk, counted once, recorded, attached once."""
    vm_id = create(sqlite_engine, cloud_settings)
    before = counts(sqlite_engine)
    with session_scope(sqlite_engine) as s:
        task_id = vms.request_attach_disk(s, SYSTEM, vm_id, 1).id
    claimed = queue.claim(sqlite_engine, "dead", 30)
    assert claimed is not None and claimed.id == task_id
    with session_scope(sqlite_engine) as s:  # what the lost run got done
        vm = s.get(VM, vm_id)
        work = disk_mod._disk_work(
            s, cloud_settings, vm, disk_mod._reserve_disk(s, vm, 1, task_id=task_id)
        )
    if attached:
        disk_mod._make_and_attach(work)
    else:
        storage.create_blank(work.path, 1)
    with session_scope(sqlite_engine) as s:
        s.execute(update(Task).values(lease_expires_at=utcnow() - timedelta(seconds=1)))
    queue.recover_expired(sqlite_engine)
    run_tasks(sqlite_engine, cloud_settings)
    assert last_task(sqlite_engine).status == C.TaskStatus.SUCCESS
    after = counts(sqlite_engine)
    assert (after["disks"], after["ds_used"]) == (before["disks"] + 1, before["ds_used"] + 1)
    with session_scope(sqlite_engine) as s:
        vm = s.get(VM, vm_id)
        assert vm.extra_HDD == 1
        assert [d.task_id for d in s.scalars(select(AttachedDisk))] == [None]
    hv, identity = hv_of(sqlite_engine, vm_id)
    paths = domain_xml.disk_paths(hv.xml(identity, inactive=True))
    assert paths.count(str(work.path)) == 1 and len(paths) == 2
    assert list(work.path.parent.iterdir()) == [work.path]


def test_edit_config_gives_one_message_per_item(
    sqlite_engine: Engine, cloud_settings: Settings, cloud: Cloud
) -> None:
    vm_id = create(sqlite_engine, cloud_settings)
    with session_scope(sqlite_engine) as s:
        vms.request_edit(s, SYSTEM, vm_id, ram_mb=512, vcpus=2)
    run_tasks(sqlite_engine, cloud_settings)
    task = last_task(sqlite_engine)
    assert task.status == C.TaskStatus.FAILED and "must be shut off" in task.message
    operate(sqlite_engine, cloud_settings, vm_id, "destroy")
    with session_scope(sqlite_engine) as s:
        vms.request_edit(s, SYSTEM, vm_id, ram_mb=512, vcpus=2, public_ip=True)
    run_tasks(sqlite_engine, cloud_settings)
    task = last_task(sqlite_engine)
    assert task.message == (
        "Edited RAM successfully. Edited vCPU successfully. Edited public IP successfully."
    )
    hv, identity = hv_of(sqlite_engine, vm_id)
    xml = hv.xml(identity, inactive=True)
    assert "<memory unit='KiB'>524288</memory>" in xml and ">2</vcpu>" in xml
    with session_scope(sqlite_engine) as s:
        vm = s.get(VM, vm_id)
        assert (vm.RAM, vm.vCPU) == (512, 2) and vm.public_ip is not None
    with (
        pytest.raises(ValidationError, match="nothing to change"),
        session_scope(sqlite_engine) as s,
    ):
        vms.request_edit(s, SYSTEM, vm_id, ram_mb=512)


@pytest.mark.parametrize("full", [False, True])
def test_clone_linked_and_full(
    sqlite_engine: Engine, cloud_settings: Settings, cloud: Cloud, full: bool
) -> None:
    vm_id = create(sqlite_engine, cloud_settings, extra_disk_gb=1)
    with pytest.raises(ConflictError, match="must be shut off"), session_scope(sqlite_engine) as s:
        vms.request_clone(s, SYSTEM, vm_id, 2, full=full)
    operate(sqlite_engine, cloud_settings, vm_id, "destroy")
    with session_scope(sqlite_engine) as s:
        _, clone_ids = vms.request_clone(s, SYSTEM, vm_id, 2, full=full)
    run_tasks(sqlite_engine, cloud_settings)
    task = last_task(sqlite_engine)
    assert (task.status, task.message) == (
        C.TaskStatus.SUCCESS,
        "Task Status: SUCCESS Message: Cloned successfully.",
    )
    with session_scope(sqlite_engine) as s:
        clones = [s.get(VM, i) for i in clone_ids]
        assert [c.vm_name for c in clones] == ["web_clone1", "web_clone2"]
        ips = {c.private_ip_id for c in clones} | {s.get(VM, vm_id).private_ip_id}
        assert len(ips) == 3
        for c in clones:
            assert c.status == C.VMStatus.SHUTDOWN and c.parent_id == vm_id
            image = storage.get_vm_image_location(cloud_settings, c.datastore, c.vm_identity)
            assert image.present
            backing = storage.image_info(image.path).get("backing-filename")
            assert backing == (None if full else str(cloud.template_file))
            hv = LibvirtHypervisor(c.host.libvirt_uri)
            assert hv.domain_info(c.vm_identity).status == C.VMStatus.SHUTDOWN
            assert (
                s.scalar(
                    select(func.count()).select_from(AttachedDisk).where(AttachedDisk.vm_id == c.id)
                )
                == 1
            )


def test_clone_whose_workers_died_gives_everything_back(
    sqlite_engine: Engine, cloud_settings: Settings, cloud: Cloud
) -> None:
    """Every worker running a clone task died after taking the clone's addresses and
    making its disk: when the task is given up, the clone holds nothing and no file, and
    an admin's ignore removes the never-made clone."""
    vm_id = create(sqlite_engine, cloud_settings)
    operate(sqlite_engine, cloud_settings, vm_id, "destroy")
    with session_scope(sqlite_engine) as s:
        task, (clone_id,) = vms.request_clone(s, SYSTEM, vm_id, 1)
        task_id = task.id
    for _ in range(cloud_settings.worker.max_attempts):
        claimed = queue.claim(sqlite_engine, "dead", 30)
        assert claimed is not None and claimed.id == task_id
        with session_scope(sqlite_engine) as s:  # what the lost attempt got done
            parent, clone = s.get(VM, vm_id), s.get(VM, clone_id)
            clone_mod.get_clone_properties(s, parent, clone)
            image = storage.get_vm_image_location(
                cloud_settings, clone.datastore, clone.vm_identity
            )
            source = storage.get_vm_image_location(
                cloud_settings, parent.datastore, parent.vm_identity
            )
        storage.full_copy(source.path, image.path)
        with session_scope(sqlite_engine) as s:
            s.execute(update(Task).values(lease_expires_at=utcnow() - timedelta(seconds=1)))
        queue.recover_expired(sqlite_engine)
    run_tasks(sqlite_engine, cloud_settings)
    with session_scope(sqlite_engine) as s:
        task = s.get(Task, task_id)
        clone = s.get(VM, clone_id)
        assert task.status == C.TaskStatus.FAILED and "gave up" in task.message
        assert clone.status == C.VMStatus.IN_QUEUE
        assert (clone.private_ip_id, clone.vnc_port, clone.host_id, clone.datastore_id) == (
            None, None, None, None,
        )  # fmt: skip
    assert not image.path.exists()
    with session_scope(sqlite_engine) as s:
        queue.ignore(s, task_id)
    with session_scope(sqlite_engine) as s:
        assert s.get(VM, clone_id) is None


def test_utilization_from_libvirt_stats(
    sqlite_engine: Engine, cloud_settings: Settings, cloud: Cloud
) -> None:
    vm_id = create(sqlite_engine, cloud_settings)
    hv, identity = hv_of(sqlite_engine, vm_id)
    first = domain_usage.get_actual_usage(hv, identity)
    second = domain_usage.get_actual_usage(hv, identity)
    assert first.ram > 0 and second.ram > 0
    rx, tx = domain_usage.get_dom_nw_usage(hv, identity)
    rd, wr = domain_usage.get_dom_disk_usage(hv, identity)
    assert min(rx, tx, rd, wr) >= 0
    assert domain_usage.get_current_dom_resource_usage(hv, identity).vcpus == 1


def test_save_as_template_makes_a_standalone_private_template(
    sqlite_engine: Engine, cloud_settings: Settings, cloud: Cloud
) -> None:
    vm_id = create(sqlite_engine, cloud_settings)
    task = operate(sqlite_engine, cloud_settings, vm_id, "save-template")
    assert task.status == C.TaskStatus.FAILED and "must be shut off" in task.message
    operate(sqlite_engine, cloud_settings, vm_id, "destroy")
    task = operate(sqlite_engine, cloud_settings, vm_id, "save-template")
    assert task.message == "Saved web as template web_template successfully"
    with session_scope(sqlite_engine) as s:
        vm = s.get(VM, vm_id)
        tmpl = s.get(Template, vm.saved_template_id)
        assert tmpl is not None and tmpl.name == "web_template"
        assert [u.id for u in tmpl.owners] == [C.SYSTEM_USER_ID]
        path = storage.template_path(cloud_settings, tmpl)
    assert path.is_file() and storage.image_info(path).get("backing-filename") is None
    task = operate(sqlite_engine, cloud_settings, vm_id, "save-template")
    assert "already has a saved template" in task.message
    # the saved template makes new VMs
    create(sqlite_engine, cloud_settings, "fromsaved", template="web_template")
    assert last_task(sqlite_engine).status == C.TaskStatus.SUCCESS


@pytest.mark.parametrize("op", ["clone", "save-template"])
def test_disk_copies_run_outside_any_transaction(
    sqlite_engine: Engine,
    cloud_settings: Settings,
    cloud: Cloud,
    op: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A full copy can take minutes; on SQLite a transaction held meanwhile would stop
    every other writer (the portal, other workers) for that long."""
    vm_id = create(sqlite_engine, cloud_settings, extra_disk_gb=1)
    operate(sqlite_engine, cloud_settings, vm_id, "destroy")
    real_copy = storage.full_copy
    write_attempts: list[str] = []

    def copy_while_another_writer_commits(source: Path, dest: Path, **kw: object) -> None:
        write_attempts.append(_one_writer_commits(sqlite_engine))
        real_copy(source, dest, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(storage, "full_copy", copy_while_another_writer_commits)
    if op == "clone":
        with session_scope(sqlite_engine) as s:
            vms.request_clone(s, SYSTEM, vm_id, 1, full=True)
        run_tasks(sqlite_engine, cloud_settings)
        task = last_task(sqlite_engine)
    else:
        task = operate(sqlite_engine, cloud_settings, vm_id, "save-template")
    assert task.status == C.TaskStatus.SUCCESS, task.message
    assert write_attempts and set(write_attempts) == {"committed"}


def test_template_name_taken_during_the_copy_leaves_no_file_and_no_row(
    sqlite_engine: Engine, cloud_settings: Settings, cloud: Cloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The name is checked before the copy and again when the row is written: a rival
    that took it meanwhile wins, and the copy made for us is removed."""
    vm_id = create(sqlite_engine, cloud_settings)
    operate(sqlite_engine, cloud_settings, vm_id, "destroy")
    real_copy = storage.full_copy
    copies: list[Path] = []

    def copy_then_a_rival_takes_the_name(source: Path, dest: Path, **kw: object) -> None:
        real_copy(source, dest, **kw)  # type: ignore[arg-type]
        copies.append(dest)
        with session_scope(sqlite_engine) as s:
            base = s.get(VM, vm_id).template
            columns = {c.key: getattr(base, c.key) for c in Template.__table__.columns}
            s.add(Template(**{**columns, "id": None, "name": "web_template"}))

    monkeypatch.setattr(storage, "full_copy", copy_then_a_rival_takes_the_name)
    task = operate(sqlite_engine, cloud_settings, vm_id, "save-template")
    assert task.status == C.TaskStatus.FAILED
    assert "a template named web_template already exists" in task.message
    assert len(copies) == 1 and not copies[0].exists()
    assert list(copies[0].parent.iterdir()) == []
    with session_scope(sqlite_engine) as s:
        assert s.get(VM, vm_id).saved_template_id is None


def test_scheduled_snapshots_keep_one_per_kind(
    sqlite_engine: Engine, cloud_settings: Settings, cloud: Cloud
) -> None:
    vm_id = create(sqlite_engine, cloud_settings)
    other = create(sqlite_engine, cloud_settings, "other")
    with session_scope(sqlite_engine) as s:
        s.get(VM, vm_id).snapshot_flag = C.SnapshotType.DAILY | C.SnapshotType.WEEKLY
    for _ in range(2):
        with session_scope(sqlite_engine) as s:
            queue.enqueue(
                s, C.TaskType.SCHEDULED_SNAPSHOTS, parameters={"periodic_job": "snapshot_daily"}
            )
        run_tasks(sqlite_engine, cloud_settings)
    with session_scope(sqlite_engine) as s:
        kinds = [(snap.vm_id, snap.type) for snap in s.scalars(select(Snapshot))]
        messages = [t.message for t in s.scalars(select(Task).order_by(Task.id))][-4:]
    assert kinds == [(vm_id, C.SnapshotType.DAILY)]  # the second replaced the first
    assert messages.count("queued 1 daily snapshots") == 2
    hv, identity = hv_of(sqlite_engine, vm_id)
    assert len(hv.snapshot_list(identity)) == 1
    assert other != vm_id


def test_launch_existing_vm_image(
    sqlite_engine: Engine, cloud_settings: Settings, cloud: Cloud
) -> None:
    image = cloud.datastore_path / "vm_images" / "ADMIN~system~old" / "ADMIN~system~old.qcow2"
    with pytest.raises(NotFoundError, match="no image at"), session_scope(sqlite_engine) as s:
        vms.launch_existing_vm_image(
            s, SYSTEM, cloud_settings, vm_name="old", template="tiny", datastore="ds1",
            ram_mb=256, vcpus=1, security_domain="research",
        )  # fmt: skip
    before = counts(sqlite_engine)
    assert before["vms"] == 0
    storage.create_blank(image, 2)
    with session_scope(sqlite_engine) as s:
        vm = vms.launch_existing_vm_image(
            s, SYSTEM, cloud_settings, vm_name="old", template="tiny", datastore="ds1",
            ram_mb=256, vcpus=1, security_domain="research",
        )  # fmt: skip
        vm_id = vm.id
    hv, identity = hv_of(sqlite_engine, vm_id)
    assert hv.domain_info(identity).status == C.VMStatus.RUNNING
    assert str(image) in hv.xml(identity)
    with session_scope(sqlite_engine) as s:
        assert s.get(VM, vm_id).status == C.VMStatus.RUNNING
        assert s.scalar(select(Datastore.used)) == 2


def test_kvm_is_never_assumed_without_a_boot_probe() -> None:
    hv = hypervisor_for("test:///default")
    assert hv.domain_type() == "qemu"
    # a host without a probe kernel is never given kvm, whatever it advertises
    assert hv.domain_type(Path("/nonexistent")) == "qemu"


# --- the security domain of a new VM (issue 12 item 13) ------------------------------


def _request(engine: Engine, settings: Settings, **kw: object) -> vms.Queued:
    with session_scope(engine) as s:
        args: dict[str, object] = {"vm_name": "web", "template": "tiny", "ram_mb": 256}
        return vms.request_vm(s, SYSTEM, settings, vcpus=1, **{**args, **kw})


def test_a_vm_without_a_domain_and_no_default_is_refused(
    sqlite_engine: Engine, cloud_settings: Settings, cloud: Cloud
) -> None:
    """It used to be made with no private IP and no MAC: no DHCP, a public IP mapping to
    nothing, snapshots failing on ping."""
    before = counts(sqlite_engine)
    with pytest.raises(ValidationError, match=r"no security domain given and no default set"):
        _request(sqlite_engine, cloud_settings)
    cloud_settings.network.default_security_domain = "gone"
    with pytest.raises(NotFoundError, match="default security domain 'gone'"):
        _request(sqlite_engine, cloud_settings)
    assert counts(sqlite_engine) == before


def test_the_default_security_domain_gives_the_vm_its_address(
    sqlite_engine: Engine, cloud_settings: Settings, cloud: Cloud
) -> None:
    cloud_settings.network.default_security_domain = "research"
    vm_id = _request(sqlite_engine, cloud_settings).vm_id
    run_tasks(sqlite_engine, cloud_settings)
    with session_scope(sqlite_engine) as s:
        vm = s.get(VM, vm_id)
        assert vm.security_domain.name == "research"
        assert vm.private_ip is not None and vm.private_ip.mac_addr


def test_a_vm_without_a_network_only_when_asked(
    sqlite_engine: Engine, cloud_settings: Settings, cloud: Cloud
) -> None:
    cloud_settings.network.default_security_domain = "research"
    before = counts(sqlite_engine)
    for kw, match in (
        ({"security_domain": "research"}, "cannot have a security domain"),
        ({"public_ip": True}, "cannot have a public IP"),
    ):
        with pytest.raises(ValidationError, match=match):
            _request(sqlite_engine, cloud_settings, network=False, **kw)
    assert counts(sqlite_engine) == before
    vm_id = _request(sqlite_engine, cloud_settings, network=False).vm_id
    run_tasks(sqlite_engine, cloud_settings)
    with session_scope(sqlite_engine) as s:
        vm = s.get(VM, vm_id)
        assert vm.status == C.VMStatus.RUNNING
        assert vm.security_domain_id is None and vm.private_ip_id is None


def test_cli_vm_create_without_a_domain_says_how(
    sqlite_engine: Engine,
    sqlite_url: str,
    cloud_settings: Settings,
    cloud: Cloud,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BAADAL_DATABASE__URL", sqlite_url)
    get_settings.cache_clear()
    dispose_engines()
    runner = CliRunner()
    try:
        refused = runner.invoke(app, ["vm", "create", "web", "--template", "tiny", "--no-wait"])
        assert refused.exit_code == 2 and refused.stdout == ""
        assert refused.stderr.startswith("error: no security domain given and no default set")
        # the message names the setting; Rich must not take "[network]" for markup
        assert "([network] default_security_domain)" in refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1
        argv = ["vm", "create", "web", "--template", "tiny", "--no-network", "--no-wait"]
        made = runner.invoke(app, argv)
        assert made.exit_code == 0, made.output
    finally:
        get_settings.cache_clear()
        dispose_engines()
    with session_scope(sqlite_engine) as s:
        (vm,) = s.scalars(select(VM)).all()
        assert vm.vm_name == "web" and vm.security_domain_id is None


def test_the_lab_sets_a_default_security_domain(settings: Settings) -> None:
    """`baadal lab up` writes it, so `vm create` in the lab needs no --domain."""
    sections = lab_settings_file.lab_settings(settings)
    assert sections["network"] == {"default_security_domain": lab_layout.VLANS[0].domain}
    assert load_settings(**sections).network.default_security_domain == "lab"
