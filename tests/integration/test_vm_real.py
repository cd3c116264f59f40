"""The VM lifecycle on a real libvirtd with QEMU (TCG), using the tiny bootable guest.

The guest is installed from its template through the task engine, runs, is suspended and
resumed, snapshotted and reverted (a file written after the snapshot is gone), gets an
extra disk the guest kernel sees, is cloned (the clone boots with the parent's data) and
everything is deleted with no file, row or domain left behind.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import libvirt
import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from baadal import constants as C
from baadal.config import Settings
from baadal.db.models import VM, AttachedDisk, Snapshot
from baadal.db.session import session_scope
from baadal.drivers.libvirt_driver import LibvirtHypervisor
from baadal.lab.guest import build_tiny_guest, console_line, parse_ready_line
from baadal.services import vms
from baadal.services.policy import SYSTEM
from baadal.vm import domain_usage, storage
from baadal.vm.snapshot import vm_has_snapshots
from tests.support.cloud import Cloud, make_cloud
from tests.support.libvirtd import console_send, ensure_libvirtd, qemu_workdir
from tests.support.ovs import ensure_ovs_bridge
from tests.unit.test_vm_lifecycle import last_task, run_tasks

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BOOT_TIMEOUT_S = 90
GUEST_CACHE = Path("/var/cache/baadal-test/tiny-guest")


@pytest.fixture
def real_cloud(
    sqlite_engine: Engine, settings: Settings
) -> Iterator[tuple[Cloud, Settings, libvirt.virConnect]]:
    uri = ensure_libvirtd()
    ensure_ovs_bridge(settings.network.bridge)
    settings.general.snapshot_requires_ping = False  # no DHCP on this VLAN here
    settings.vm.stop_timeout_s = 20
    with qemu_workdir() as root:
        templates = root / "datastore" / settings.paths.templates_dir / "tiny"
        guest = build_tiny_guest(templates, cache_dir=GUEST_CACHE)
        boot = ("tiny/vmlinuz", "tiny/tiny-initrd.gz", guest.cmdline + " tiny.dhcp=0")
        cloud = make_cloud(
            sqlite_engine, settings, root, [uri], template_file=guest.disk, boot=boot
        )
        conn = libvirt.open(uri)
        try:
            yield cloud, settings, conn
        finally:
            for dom in conn.listAllDomains():
                if dom.name().startswith("ADMIN~system~"):
                    if dom.isActive():
                        dom.destroy()
                    dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA)
            conn.close()


def console(settings: Settings, engine: Engine, vm_id: int) -> Path:
    with session_scope(engine) as s:
        vm = s.get(VM, vm_id)
        return storage.console_log_path(settings, vm.datastore, vm.vm_identity)


def ask_guest(conn: libvirt.virConnect, name: str, log: Path, shell: str, key: str) -> str:
    """Run ``shell`` on the guest's console; returns the text after ``<key>=``."""
    tag = uuid.uuid4().hex[:6]
    console_send(conn, conn.lookupByName(name), f'echo "{key}""{tag}=$({shell})"\n')
    line = console_line(log, f"{key}{tag}=", 30)
    assert line is not None, f"guest did not answer {shell!r}"
    return line.split(f"{key}{tag}=", 1)[1].strip()


def queue_and_run(engine: Engine, settings: Settings, request: Callable[[Session], object]) -> str:
    """Queue through the service layer, run the worker until idle, expect success."""
    with session_scope(engine) as s:
        request(s)
    run_tasks(engine, settings)
    task = last_task(engine)
    assert task.status == C.TaskStatus.SUCCESS, task.message
    return task.message


def test_tiny_guest_lifecycle_on_real_libvirt(
    sqlite_engine: Engine, real_cloud: tuple[Cloud, Settings, libvirt.virConnect]
) -> None:
    cloud, settings, conn = real_cloud
    engine = sqlite_engine
    with session_scope(engine) as s:
        queued = vms.request_vm(
            s, SYSTEM, settings, vm_name="tiny1", template="tiny", ram_mb=256, vcpus=1,
            security_domain="research",
        )  # fmt: skip
    run_tasks(engine, settings)
    assert last_task(engine).message == "VM is installed successfully"
    vm_id = queued.vm_id
    name = "ADMIN~system~tiny1"
    log = console(settings, engine, vm_id)
    ready = console_line(log, "TINY-READY", BOOT_TIMEOUT_S)
    assert ready is not None, log.read_text(errors="replace")[-2000:]
    assert parse_ready_line(ready).disks == ("vda",)
    dom = conn.lookupByName(name)
    assert dom.info()[0] == libvirt.VIR_DOMAIN_RUNNING
    assert "type='qemu'" in dom.XMLDesc(0)
    assert console_line(log, "TINY-DATA", 30) is not None

    def vm_op(op: str, vid: int = vm_id) -> str:
        return queue_and_run(engine, settings, lambda s: vms.operate(s, SYSTEM, vid, op))

    assert vm_op("suspend") == "tiny1 is suspend successfully"
    assert dom.info()[0] == libvirt.VIR_DOMAIN_PAUSED
    assert vm_op("resume") == "tiny1 is resumed successfully"
    assert dom.info()[0] == libvirt.VIR_DOMAIN_RUNNING

    # snapshot, write a file, revert: the file is gone again
    queue_and_run(engine, settings, lambda s: vms.request_snapshot(s, SYSTEM, vm_id))
    assert (
        ask_guest(conn, name, log, "echo x > /data/after; sync; ls /data", "LS").count("after") == 1
    )
    with session_scope(engine) as s:
        snap_id = s.scalar(select(Snapshot.id))
    queue_and_run(engine, settings, lambda s: vms.request_revert(s, SYSTEM, vm_id, snap_id))
    assert dom.info()[0] == libvirt.VIR_DOMAIN_RUNNING
    assert "after" not in ask_guest(conn, name, log, "ls /data", "LS")
    with session_scope(engine) as s:
        assert vm_has_snapshots(s, vm_id)
    queue_and_run(
        engine, settings, lambda s: vms.request_delete_snapshot(s, SYSTEM, vm_id, snap_id)
    )
    assert dom.snapshotListNames() == []
    with session_scope(engine) as s:
        assert not vm_has_snapshots(s, vm_id)

    # utilization from libvirt's stats of the running guest
    hv = LibvirtHypervisor(conn.getURI())
    domain_usage.get_actual_usage(hv, name)
    usage = domain_usage.get_actual_usage(hv, name)
    assert usage.ram > 64 * 2**20 and usage.cpu >= 0
    assert domain_usage.get_current_dom_resource_usage(hv, name).cpu_time_ns > 0

    # extra disk, attached live: the guest kernel sees vdb
    message = queue_and_run(
        engine, settings, lambda s: vms.request_attach_disk(s, SYSTEM, vm_id, 1)
    )
    assert message == "Attached extra disk successfully"
    assert "vdb" in ask_guest(conn, name, log, "ls /sys/block | tr '\\n' ,", "BLK")
    assert "vdb" in dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)

    # clone (linked) of the shut-off VM; the clone boots with the parent's /data
    assert vm_op("stop") == "tiny1 is stopped successfully"
    assert dom.info()[0] == libvirt.VIR_DOMAIN_SHUTOFF
    message = queue_and_run(
        engine, settings, lambda s: vms.request_edit(s, SYSTEM, vm_id, ram_mb=512, vcpus=2)
    )
    assert message == "Edited RAM successfully. Edited vCPU successfully."
    assert dom.info()[1] == 512 * 1024 and dom.info()[3] == 2
    with session_scope(engine) as s:
        _, (clone_id,) = vms.request_clone(s, SYSTEM, vm_id, 1)
    run_tasks(engine, settings)
    assert last_task(engine).message == "Task Status: SUCCESS Message: Cloned successfully."
    assert vm_op("start", clone_id) == "tiny1_clone1 is started successfully"
    clone_log = console(settings, engine, clone_id)
    clone_ready = console_line(clone_log, "TINY-READY", BOOT_TIMEOUT_S)
    assert clone_ready is not None and parse_ready_line(clone_ready).disks == ("vda", "vdb")
    data = console_line(clone_log, "TINY-DATA", 30)
    assert data is not None and "mounted" in data  # the parent's filesystem, not a new one

    assert vm_op("destroy", clone_id) == "tiny1_clone1 is destroyed successfully"
    assert conn.lookupByName("ADMIN~system~tiny1_clone1").info()[0] == libvirt.VIR_DOMAIN_SHUTOFF

    # delete both: nothing left behind
    for vid in (clone_id, vm_id):
        vm_op("delete", vid)
    assert {d.name() for d in conn.listAllDomains()} & {name, "ADMIN~system~tiny1_clone1"} == set()
    with session_scope(engine) as s:
        assert s.scalar(select(func.count()).select_from(VM)) == 0
        assert s.scalar(select(func.count()).select_from(AttachedDisk)) == 0
        assert s.scalar(select(func.count()).select_from(Snapshot)) == 0

    # an image already on the datastore becomes a running VM (admin, synchronous)
    old = cloud.datastore_path / "vm_images" / "ADMIN~system~old" / "ADMIN~system~old.qcow2"
    storage.create_overlay(cloud.template_file, old)
    with session_scope(engine) as s:
        old_id = vms.launch_existing_vm_image(
            s, SYSTEM, settings, vm_name="old", template="tiny", datastore="ds1", ram_mb=256,
            vcpus=1, security_domain="research",
        ).id  # fmt: skip
    assert conn.lookupByName("ADMIN~system~old").isActive()
    assert vm_op("delete", old_id) == "old is deleted successfully"
    leftovers = [
        p
        for p in cloud.datastore_path.rglob("*")
        if p.is_file() and settings.paths.templates_dir not in p.parts
    ]
    assert leftovers == []
