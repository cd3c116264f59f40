"""Clones (the seed's VM_clone): copies of a shut-off VM, as overlays or full copies.

A linked clone's disk holds only what differs from the template (``qemu-img convert -B``),
so it is small and quick and does not depend on the parent staying unchanged; a full clone
is standalone. Extra disks are copied in full. The datastore is shared by all hosts, so a
clone is defined directly on the host placement picks for it: the upstream step "clone on
the parent's host, then migrate to a better one" is not needed, and the message is the
seed's first one.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from baadal import constants as C
from baadal.config import Settings
from baadal.db.models import VM, AttachedDisk, Datastore, Task
from baadal.db.session import session_scope
from baadal.drivers import domain_xml, hypervisor_for
from baadal.drivers.base import HypervisorError
from baadal.errors import ConflictError, user_message
from baadal.monitor import rrd
from baadal.tasks.params import CloneVMParams
from baadal.tasks.registry import TaskContext, TaskResult, handler
from baadal.vm import storage
from baadal.vm.common import load_vm, set_status, vm_hypervisor
from baadal.vm.disk import attach_disk
from baadal.vm.install import (
    VMProperties,
    active_template,
    allocate_vm_properties,
    drop_unfinished_vm,
    free_vm_properties,
    reset_vm_for_retry,
    undo_unfinished_install,
    vm_domain_spec,
)

log = logging.getLogger("baadal")

CLONE_SUCCESS = "Task Status: SUCCESS Message: Cloned successfully."


def get_clone_properties(session: Session, parent: VM, clone: VM) -> VMProperties:
    """Addresses, port, datastore and host for one clone (same rules as a new VM)."""
    if clone.parent_id != parent.id:
        raise ConflictError(f"{clone.vm_name} is not a clone of {parent.vm_name}")
    return allocate_vm_properties(session, clone)


@dataclass(frozen=True)
class _DiskCopy:
    """One extra disk of the parent, and where the clone's copy of it goes."""

    source: Path
    dest: Path
    name: str
    datastore_id: int
    capacity: int


def _extra_disk_copies(
    session: Session, settings: Settings, parent: VM, clone: VM
) -> list[_DiskCopy]:
    copies = []
    disks = session.scalars(select(AttachedDisk).where(AttachedDisk.vm_id == parent.id)).all()
    for index, disk in enumerate(disks, start=1):
        datastore = session.get(Datastore, disk.datastore_id)
        name = storage.extra_disk_name(clone.vm_identity, index)
        copies.append(
            _DiskCopy(
                source=storage.get_extra_disk_location(
                    settings, datastore, parent.vm_identity, disk.attached_disk_name
                ).path,
                dest=storage.get_extra_disk_location(
                    settings, datastore, clone.vm_identity, name
                ).path,
                name=name,
                datastore_id=datastore.id,
                capacity=disk.capacity,
            )
        )
    return copies


def clone_one(ctx: TaskContext, parent_id: int, clone_id: int, *, full: bool) -> None:
    """Allocate, then copy and define outside any transaction (a full copy can take
    minutes and must not hold the database), then record the disks and the state."""
    with session_scope(ctx.engine) as session:
        parent, clone = load_vm(session, parent_id), load_vm(session, clone_id)
        props = get_clone_properties(session, parent, clone)
    with session_scope(ctx.engine) as session:
        parent, clone = load_vm(session, parent_id), load_vm(session, clone_id)
        template = active_template(session, clone.template_id)
        source = storage.get_vm_image_location(ctx.settings, parent.datastore, parent.vm_identity)
        dest = storage.get_vm_image_location(ctx.settings, clone.datastore, clone.vm_identity).path
        backing = None if full else storage.template_path(ctx.settings, template)
        spec = vm_domain_spec(ctx.settings, clone, clone.host, template, dest, props)
        hv, identity = hypervisor_for(clone.host.libvirt_uri), clone.vm_identity
        copies = _extra_disk_copies(session, ctx.settings, parent, clone)
    try:
        rrd.forget_rrd(ctx.settings, identity)  # a new VM: no history of an old namesake
        storage.full_copy(source.path, dest, backing=backing)
        hv.define(domain_xml.build_domain_xml(spec), autostart=True)
        for copy in copies:
            storage.full_copy(copy.source, copy.dest)
            attach_disk(hv, identity, copy.dest, live=False)
        with session_scope(ctx.engine) as session:
            _record_clone(session, load_vm(session, clone_id), copies, ctx.requester_id)
    except Exception:
        # what is not recorded yet free_vm_properties would not find (nor a deleted clone's)
        for copy in copies:
            storage.remove_path(copy.dest)
        with contextlib.suppress(HypervisorError):
            hv.undefine(identity)
        raise


def _record_clone(
    session: Session, clone: VM, copies: list[_DiskCopy], requester_id: int | None
) -> None:
    for copy in copies:
        session.add(
            AttachedDisk(
                vm_id=clone.id,
                datastore_id=copy.datastore_id,
                attached_disk_name=copy.name,
                capacity=copy.capacity,
            )
        )
        session.execute(
            update(Datastore)
            .where(Datastore.id == copy.datastore_id)
            .values(used=Datastore.used + copy.capacity)
        )
    set_status(session, clone, C.VMStatus.SHUTDOWN, requester_id)


def compensate_clone(ctx: TaskContext[CloneVMParams]) -> None:
    """A worker died mid-clone: the clones it had not finished give back what they took."""
    for clone_id in ctx.params.clone_vm_id:
        undo_unfinished_install(ctx, clone_id)


def reset_clones_for_retry(session: Session, task: Task) -> None:
    for clone_id in CloneVMParams.model_validate(task.parameters).clone_vm_id:
        reset_vm_for_retry(session, clone_id)


def drop_clones_on_ignore(session: Session, task: Task) -> None:
    for clone_id in CloneVMParams.model_validate(task.parameters).clone_vm_id:
        drop_unfinished_vm(session, clone_id)


@handler(
    C.TaskType.CLONE_VM,
    compensate=compensate_clone,
    on_retry=reset_clones_for_retry,
    on_ignore=drop_clones_on_ignore,
)
def clone(ctx: TaskContext[CloneVMParams]) -> TaskResult:
    """The 'Clone VM' handler: the task's VM is the parent."""
    clone_ids, full = ctx.params.clone_vm_id, ctx.params.full
    try:
        with session_scope(ctx.engine) as session:
            parent = load_vm(session, ctx.vm_id)
            hv, identity, name = vm_hypervisor(parent), parent.vm_identity, parent.vm_name
        if hv.domain_info(identity).status != C.VMStatus.SHUTDOWN:
            raise ConflictError(f"{name} must be shut off to be cloned")
    except Exception as exc:
        return TaskResult.error(exc)
    failures = []
    for clone_id in clone_ids:
        try:
            clone_one(ctx, ctx.vm_id, clone_id, full=full)
        except Exception as exc:
            log.exception("clone %d of VM %s failed", clone_id, ctx.vm_id)
            failures.append(f"clone {clone_id}: {user_message(exc)}")
            with session_scope(ctx.engine) as session:
                vm = session.get(VM, clone_id)
                if vm is not None:
                    free_vm_properties(session, ctx.settings, vm)
                    set_status(session, vm, C.VMStatus.UNKNOWN, ctx.requester_id)
    if not failures:
        return TaskResult.success(CLONE_SUCCESS)
    detail = "; ".join(failures)
    if len(failures) == len(clone_ids):
        return TaskResult.failed(f"{C.TASK_FAILED_PREFIX}{detail}")
    return TaskResult(
        C.TaskStatus.PARTIAL_SUCCESS,
        f"Task Status: PARTIAL_SUCCESS Message: {len(clone_ids) - len(failures)} of "
        f"{len(clone_ids)} cloned. {detail}",
    )
