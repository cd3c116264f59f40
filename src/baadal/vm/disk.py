"""Extra disks (the seed's VM_disk): create, locate, attach (live and persistent).

A disk is reserved first (datastore space + an attached_disks row, committed), then the
file is made and attached; if either fails the reservation is given back. A disk that
does not fit any datastore is refused before anything exists.
"""

from __future__ import annotations

import logging
from pathlib import Path

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from baadal import constants as C
from baadal import placement
from baadal.config import Settings
from baadal.db.models import VM, AttachedDisk, Datastore
from baadal.db.session import session_scope
from baadal.drivers import domain_xml, hypervisor_for
from baadal.drivers.base import Hypervisor
from baadal.errors import ValidationError
from baadal.tasks.params import AttachDiskParams
from baadal.tasks.registry import TaskContext, TaskResult, handler
from baadal.vm import storage
from baadal.vm.common import load_vm, log_vm_event

log = logging.getLogger("baadal")

ATTACH_SUCCESS = "Attached extra disk successfully"
ATTACH_FAILED = "Your request for additional HDD could not be completed at this moment. Check logs."


def check_disk_size(size_gb: int) -> int:
    low, high = C.EXTRA_DISK_GB_RANGE
    if isinstance(size_gb, bool) or not isinstance(size_gb, int) or not low <= size_gb <= high:
        raise ValidationError(f"extra disk size must be {low}-{high} GB, not {size_gb!r}")
    return size_gb


def create_extra_disk_image(
    settings: Settings, vm: VM, disk_name: str, size: int, datastore: Datastore
) -> Path:
    location = storage.get_extra_disk_location(settings, datastore, vm.vm_identity, disk_name)
    storage.create_blank(location.path, size)
    return location.path


def attach_disk(hv: Hypervisor, vm_identity: str, disk_path: Path, *, live: bool = True) -> str:
    """Attach to the domain (persistently, and live when it runs); returns the target."""
    target = domain_xml.next_disk_target(hv.xml(vm_identity, inactive=True))
    hv.attach_disk(
        vm_identity, domain_xml.disk_xml(domain_xml.DiskSpec(str(disk_path), target)), live=live
    )
    return target


def _reserve_disk(session: Session, vm: VM, size_gb: int) -> AttachedDisk:
    datastore = placement.choose_datastore(session, size_gb)
    index = 1 + (
        session.scalar(
            select(func.count()).select_from(AttachedDisk).where(AttachedDisk.vm_id == vm.id)
        )
        or 0
    )
    disk = AttachedDisk(
        vm_id=vm.id,
        datastore_id=datastore.id,
        attached_disk_name=storage.extra_disk_name(vm.vm_identity, index),
        capacity=size_gb,
    )
    session.add(disk)
    session.execute(
        update(Datastore).where(Datastore.id == datastore.id).values(used=Datastore.used + size_gb)
    )
    session.flush()
    return disk


def _release_disk(session: Session, settings: Settings, vm: VM, disk: AttachedDisk) -> None:
    datastore = session.get(Datastore, disk.datastore_id)
    location = storage.get_extra_disk_location(
        settings, datastore, vm.vm_identity, disk.attached_disk_name
    )
    storage.remove_path(location.path)
    session.execute(
        delete(AttachedDisk).where(
            AttachedDisk.vm_id == vm.id,
            AttachedDisk.attached_disk_name == disk.attached_disk_name,
        )
    )
    session.execute(
        update(Datastore)
        .where(Datastore.id == disk.datastore_id)
        .values(used=Datastore.used - disk.capacity)
    )


def serve_extra_disk_request(
    session: Session, settings: Settings, vm: VM, disk_size: int, *, new_vm: bool
) -> bool:
    """Choose a datastore, create the disk and attach it. True when it worked.

    (The seed returned False on success; a modern caller reads True as success.)
    Runs inside the caller's transaction; on failure nothing of the disk remains.
    """
    check_disk_size(disk_size)
    with session.begin_nested():
        disk = _reserve_disk(session, vm, disk_size)
    datastore = session.get(Datastore, disk.datastore_id)
    try:
        path = create_extra_disk_image(settings, vm, disk.attached_disk_name, disk_size, datastore)
        target = attach_disk(hypervisor_for(vm.host.libvirt_uri), vm.vm_identity, path, live=True)
    except Exception:
        log.exception("extra disk for %s failed", vm.vm_identity)
        _release_disk(session, settings, vm, disk)
        return False
    if not new_vm:
        vm.extra_HDD += disk_size
    log_vm_event(session, vm, "extra disk", None, f"{disk_size} GB as {target}")
    return True


@handler(C.TaskType.ATTACH_DISK)
def attach_extra_disk(ctx: TaskContext[AttachDiskParams]) -> TaskResult:
    """The 'Attach Disk' handler."""
    try:
        with session_scope(ctx.engine) as session:
            vm = load_vm(session, ctx.vm_id)
            ok = serve_extra_disk_request(
                session, ctx.settings, vm, ctx.params.disk_size, new_vm=False
            )
    except Exception:
        log.exception("attach disk task %d failed", ctx.task_id)
        ok = False
    return TaskResult.success(ATTACH_SUCCESS) if ok else TaskResult.failed(ATTACH_FAILED)
