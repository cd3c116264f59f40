"""A host's VMs against a real libvirtd (baadal.host.domains, baadal.host.respawn, baadal.vm.sanity) with the tiny bootable guest.

A domain undefined behind Baadal's back is defined again and boots with its disk; a
respawn with revert brings back the disk of the latest snapshot (a file written after it
is gone) and libvirt can still revert to and delete that snapshot; an orphan domain is
reported and removed.
"""

from __future__ import annotations

from pathlib import Path

import libvirt
import pytest
from sqlalchemy import Engine, select

from baadal import constants as C
from baadal.config import Settings
from baadal.db.models import VM, Snapshot
from baadal.db.session import session_scope
from baadal.drivers import domain_xml
from baadal.host import domains as host_domains
from baadal.host import respawn as host_respawn
from baadal.lab.guest import console_line
from baadal.services import vms
from baadal.services.policy import SYSTEM
from baadal.vm import sanity, storage
from tests.integration import test_vm_real as real
from tests.integration.test_vm_real import BOOT_TIMEOUT_S, ask_guest, console, queue_and_run
from tests.support.cloud import Cloud
from tests.unit.test_vm_lifecycle import run_tasks

pytestmark = [pytest.mark.integration, pytest.mark.slow]

real_cloud = real.real_cloud  # the same fixture
NAME = "ADMIN~system~tiny1"


def qemu_pid(name: str) -> int | None:
    """The QEMU process libvirt started for the domain, if it is alive."""
    pid_file = Path(f"/run/libvirt/qemu/{name}.pid")
    if not pid_file.exists():
        return None
    pid = int(pid_file.read_text().strip())
    return pid if Path(f"/proc/{pid}").exists() else None


def wait_ready(log: Path) -> None:
    assert console_line(log, "TINY-READY", BOOT_TIMEOUT_S) is not None, log.read_text(
        errors="replace"
    )[-2000:]


def remove_behind_baadals_back(conn: libvirt.virConnect, name: str) -> None:
    dom = conn.lookupByName(name)
    dom.destroy()
    dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA)


def install_tiny(engine: Engine, settings: Settings) -> int:
    with session_scope(engine) as s:
        queued = vms.request_vm(
            s, SYSTEM, settings, vm_name="tiny1", template="tiny", ram_mb=256, vcpus=1,
            security_domain="research",
        )  # fmt: skip
    run_tasks(engine, settings)
    wait_ready(console(settings, engine, queued.vm_id))
    return queued.vm_id


def test_lost_domain_is_respawned_and_reverted_on_real_libvirt(
    sqlite_engine: Engine, real_cloud: tuple[Cloud, Settings, libvirt.virConnect]
) -> None:
    _, settings, conn = real_cloud
    engine = sqlite_engine
    vm_id = install_tiny(engine, settings)
    log = console(settings, engine, vm_id)
    mac = conn.lookupByName(NAME).XMLDesc(0).split("mac address='")[1][:17]

    # undefined behind Baadal's back: the sanity check defines it again and it boots
    remove_behind_baadals_back(conn, NAME)
    assert qemu_pid(NAME) is None
    row = next(r for r in sanity.vm_sanity_check(engine, settings).rows if r.vm_identity == NAME)
    assert (row.state, row.action) == (sanity.UNDEFINED, "respawned on host1")
    dom = conn.lookupByName(NAME)
    assert dom.info()[0] == libvirt.VIR_DOMAIN_RUNNING and qemu_pid(NAME) is not None
    assert f"mac address='{mac}'" in dom.XMLDesc(0)
    wait_ready(log)
    data = console_line(log, "TINY-DATA", 30)
    assert data is not None and "boots=2" in data  # the same disk, booted again
    with session_scope(engine) as s:
        assert s.get(VM, vm_id).status == C.VMStatus.RUNNING

    # snapshot, write a file, lose the domain, respawn with revert: the file is gone
    queue_and_run(engine, settings, lambda s: vms.request_snapshot(s, SYSTEM, vm_id))
    with session_scope(engine) as s:
        snap_id, snap_name = s.execute(select(Snapshot.id, Snapshot.snapshot_name)).one()
    assert "after" in ask_guest(conn, NAME, log, "echo x > /data/after; sync; ls /data", "LS")
    remove_behind_baadals_back(conn, NAME)
    result = host_respawn.respawn_vm(engine, settings, vm_id, revert_to_latest_snapshot=True)
    assert result.message == f"respawned on host1, reverted to {snap_name}"
    wait_ready(log)
    assert "after" not in ask_guest(conn, NAME, log, "ls /data", "LS")
    dom = conn.lookupByName(NAME)
    assert dom.snapshotListNames() == [snap_name]
    assert dom.snapshotCurrent().getName() == snap_name

    # libvirt's own revert and delete work with the redefined metadata
    queue_and_run(engine, settings, lambda s: vms.request_revert(s, SYSTEM, vm_id, snap_id))
    assert dom.info()[0] == libvirt.VIR_DOMAIN_RUNNING
    assert "after" not in ask_guest(conn, NAME, log, "ls /data", "LS")
    queue_and_run(
        engine, settings, lambda s: vms.request_delete_snapshot(s, SYSTEM, vm_id, snap_id)
    )
    assert dom.snapshotListNames() == []
    with session_scope(engine) as s:
        image = storage.get_vm_image_location(settings, s.get(VM, vm_id).datastore, NAME).path
    assert storage.image_info(image).get("snapshots", []) == []


def test_orphan_domain_is_found_and_deleted_on_real_libvirt(
    sqlite_engine: Engine, real_cloud: tuple[Cloud, Settings, libvirt.virConnect]
) -> None:
    cloud, settings, conn = real_cloud
    templates = cloud.datastore_path / settings.paths.templates_dir
    disk = cloud.datastore_path / "stray.qcow2"
    storage.create_overlay(cloud.template_file, disk)
    spec = domain_xml.DomainSpec(
        name="ADMIN~system~stray", uuid="7d1e0f3a-0000-4000-8000-000000000002", memory_mb=128,
        vcpus=1, disks=[domain_xml.DiskSpec(str(disk))], kernel=str(templates / "tiny/vmlinuz"),
        initrd=str(templates / "tiny/tiny-initrd.gz"), cmdline="console=ttyS0 quiet",
    )  # fmt: skip
    conn.defineXML(domain_xml.build_domain_xml(spec)).create()
    report = sanity.vm_sanity_check(sqlite_engine, settings)
    orphans = [(r.vm_identity, r.host) for r in report.rows if r.state == sanity.ORPHAN]
    assert ("ADMIN~system~stray", "host1") in orphans
    host_domains.delete_orphan_vm(sqlite_engine, cloud.host_ids[0], "ADMIN~system~stray")
    assert "ADMIN~system~stray" not in [d.name() for d in conn.listAllDomains()]
    assert qemu_pid("ADMIN~system~stray") is None
    assert disk.is_file()  # the disk is left for the admin
