"""Extra disks (the seed's VM_disk): create, locate, attach (live and persistent).

A disk is reserved first (datastore space + an attached_disks row naming the task,
committed), then the file is made and attached outside any transaction, then recorded;
if making or attaching fails the reservation is given back. A worker lost in between is
compensated: an unattached reservation is given back, an attached one recorded by the
re-run. A disk that does not fit any datastore is refused before anything exists.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
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
from baadal.errors import ConflictError, ValidationError
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


def attach_disk(hv: Hypervisor, vm_identity: str, disk_path: Path, *, live: bool = True) -> str:
    """Attach to the domain (persistently, and live when it runs); returns the target."""
    target = domain_xml.next_disk_target(hv.xml(vm_identity, inactive=True))
    hv.attach_disk(
        vm_identity, domain_xml.disk_xml(domain_xml.DiskSpec(str(disk_path), target)), live=live
    )
    return target


def _reserve_disk(
    session: Session, vm: VM, size_gb: int, task_id: int | None = None
) -> AttachedDisk:
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
        task_id=task_id,
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


@dataclass(frozen=True)
class _DiskWork:
    """A reserved disk as plain values: what is made and attached outside a transaction."""

    name: str
    vm_identity: str
    libvirt_uri: str
    path: Path
    size_gb: int


def _disk_work(session: Session, settings: Settings, vm: VM, disk: AttachedDisk) -> _DiskWork:
    if vm.host is None:
        raise ConflictError(f"VM {vm.vm_name} is not placed on any host")
    datastore = session.get(Datastore, disk.datastore_id)
    name = disk.attached_disk_name
    location = storage.get_extra_disk_location(settings, datastore, vm.vm_identity, name)
    return _DiskWork(name, vm.vm_identity, vm.host.libvirt_uri, location.path, disk.capacity)


def _make_and_attach(work: _DiskWork) -> str:
    """The slow part (qemu-img, libvirt); returns the target it got."""
    storage.create_blank(work.path, work.size_gb)
    return attach_disk(hypervisor_for(work.libvirt_uri), work.vm_identity, work.path, live=True)


def _record(session: Session, vm: VM, disk: AttachedDisk, where: str, *, new_vm: bool) -> None:
    """The disk is the VM's now (a new VM's extra_HDD counts it already)."""
    disk.task_id = None
    if not new_vm:
        vm.extra_HDD += disk.capacity
    log_vm_event(session, vm, "extra disk", None, f"{disk.capacity} GB as {where}")


def serve_extra_disk_request(
    session: Session, settings: Settings, vm: VM, disk_size: int, *, new_vm: bool
) -> bool:
    """Choose a datastore, create the disk and attach it. True when it worked.

    (The seed returned False on success; a modern caller reads True as success.)
    Runs inside the caller's transaction (an install's last step); on failure nothing of
    the disk remains. The 'Attach Disk' task does the same outside any transaction.
    """
    check_disk_size(disk_size)
    with session.begin_nested():
        disk = _reserve_disk(session, vm, disk_size)
    try:
        target = _make_and_attach(_disk_work(session, settings, vm, disk))
    except Exception:
        log.exception("extra disk for %s failed", vm.vm_identity)
        _release_disk(session, settings, vm, disk)
        return False
    _record(session, vm, disk, target, new_vm=new_vm)
    return True


def _pending_disks(session: Session, task_id: int) -> list[AttachedDisk]:
    """The disks this 'Attach Disk' task reserved and has not recorded (one at most)."""
    return list(session.scalars(select(AttachedDisk).where(AttachedDisk.task_id == task_id)))


def compensate_attach_disk(ctx: TaskContext[AttachDiskParams]) -> None:
    """A worker died mid-attach: a disk it reserved but did not attach is given back
    (file, row, datastore space); one it attached stays for the re-run to record."""
    with session_scope(ctx.engine) as session:
        vm = load_vm(session, ctx.vm_id)
        works = [
            _disk_work(session, ctx.settings, vm, disk)
            for disk in _pending_disks(session, ctx.task_id)
        ]
    for work in works:  # libvirt outside the transaction
        xml = hypervisor_for(work.libvirt_uri).xml(work.vm_identity, inactive=True)
        if str(work.path) in domain_xml.disk_paths(xml):
            continue
        with session_scope(ctx.engine) as session:
            vm = load_vm(session, ctx.vm_id)
            for disk in _pending_disks(session, ctx.task_id):
                if disk.attached_disk_name == work.name:
                    _release_disk(session, ctx.settings, vm, disk)


@handler(C.TaskType.ATTACH_DISK, compensate=compensate_attach_disk)
def attach_extra_disk(ctx: TaskContext[AttachDiskParams]) -> TaskResult:
    """The 'Attach Disk' handler: reserve (committed), make and attach outside any
    transaction (qemu-img and libvirt take seconds; SQLite would stop every writer
    meanwhile), then record. A lost run's attached disk is just recorded."""
    try:
        with session_scope(ctx.engine) as session:
            vm = load_vm(session, ctx.vm_id)
            pending = _pending_disks(session, ctx.task_id)
            if pending:  # compensation kept it: the lost run attached it
                for disk in pending:
                    _record(session, vm, disk, disk.attached_disk_name, new_vm=False)
                return TaskResult.success(ATTACH_SUCCESS)
            disk = _reserve_disk(
                session, vm, check_disk_size(ctx.params.disk_size), task_id=ctx.task_id
            )
            work = _disk_work(session, ctx.settings, vm, disk)
        try:
            target = _make_and_attach(work)
        except Exception:
            log.exception("extra disk for %s failed", work.vm_identity)
            with session_scope(ctx.engine) as session:
                vm = load_vm(session, ctx.vm_id)
                (disk,) = _pending_disks(session, ctx.task_id)
                _release_disk(session, ctx.settings, vm, disk)
            return TaskResult.failed(ATTACH_FAILED)
        with session_scope(ctx.engine) as session:
            vm = load_vm(session, ctx.vm_id)
            (disk,) = _pending_disks(session, ctx.task_id)
            _record(session, vm, disk, target, new_vm=False)
    except Exception:
        log.exception("attach disk task %d failed", ctx.task_id)
        return TaskResult.failed(ATTACH_FAILED)
    return TaskResult.success(ATTACH_SUCCESS)
