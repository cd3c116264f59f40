"""Shutting the whole cloud (or some hosts) down and bringing it back (the seed's
maintenance module), and evacuating a host (the seed's host_vms.migrate_all_vms_from_host).

Shutdown takes a MAINTENANCE snapshot of every running or paused VM and destroys it;
bootup reverts each VM to that snapshot -- so it runs (or is paused) again exactly where
it was -- and deletes the snapshot. Each VM is one task, so the workers' concurrency
bounds the parallelism (the seed's Worker/ThreadPool) and every VM's outcome is in the
task history. VMs in an unknown state, still being installed or with a task queued are
skipped: the task already queued for them decides their state.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Collection
from dataclasses import dataclass

from sqlalchemy import Engine, delete, exists, select
from sqlalchemy.orm import Session

from baadal import constants as C
from baadal.db.constants_table import update_constant
from baadal.db.models import VM, Host, Snapshot, Task
from baadal.db.session import session_scope
from baadal.drivers.base import DomainNotFound
from baadal.errors import ConflictError, NotFoundError
from baadal.tasks import queue
from baadal.tasks.registry import TaskContext, TaskResult, handler
from baadal.vm import migration
from baadal.vm.common import load_vm, log_vm_event, set_status, vm_hypervisor
from baadal.vm.snapshot import take_snapshot

BAADAL_STATUS = C.BAADAL_STATUS_KEY
SHUTDOWN_EVENT = "System Shutdown"
BOOTUP_EVENT = "System Bootup"


@dataclass(frozen=True)
class Queued:
    """What a shutdown or bootup queued, and whom it skipped (with why)."""

    task_ids: list[int]
    skipped: list[tuple[str, str]]


# --- one VM ----------------------------------------------------------------------------


def snapshot_and_destroy(engine: Engine, vm_id: int) -> str:
    """Snapshot a running or paused VM, then power it off; a shut-off VM is left as is."""
    with session_scope(engine) as session:
        vm = load_vm(session, vm_id)
        hv, identity, name = vm_hypervisor(vm), vm.vm_identity, vm.vm_name
    state = hv.domain_info(identity).status
    if state == C.VMStatus.SHUTDOWN:
        return f"{name} was already shut off"
    take_snapshot(engine, vm_id, C.SnapshotType.MAINTENANCE)
    hv.destroy(identity)
    with session_scope(engine) as session:
        vm = load_vm(session, vm_id)
        log_vm_event(session, vm, "maintenance", state.name, SHUTDOWN_EVENT)
        set_status(session, vm, C.VMStatus.SHUTDOWN, None)
    return f"{name} is snapshotted and shut down"


def revert_and_resume(engine: Engine, vm_id: int) -> str:
    """Revert to the latest MAINTENANCE snapshot (the VM runs or is paused again where it
    was) and delete the maintenance snapshots."""
    with session_scope(engine) as session:
        vm = load_vm(session, vm_id)
        hv, identity, name = vm_hypervisor(vm), vm.vm_identity, vm.vm_name
        snaps = session.execute(
            select(Snapshot.id, Snapshot.snapshot_name)
            .where(Snapshot.vm_id == vm_id, Snapshot.type == C.SnapshotType.MAINTENANCE)
            .order_by(Snapshot.timestamp, Snapshot.id)
        ).all()
    if not snaps:
        return f"{name} has no maintenance snapshot: left as it is"
    hv.snapshot_revert(identity, snaps[-1].snapshot_name)
    for _, snap_name in snaps:
        with contextlib.suppress(DomainNotFound):
            hv.snapshot_delete(identity, snap_name)
    state = hv.domain_info(identity).status
    with session_scope(engine) as session:
        session.execute(delete(Snapshot).where(Snapshot.id.in_([s.id for s in snaps])))
        vm = load_vm(session, vm_id)
        log_vm_event(session, vm, "maintenance", SHUTDOWN_EVENT, BOOTUP_EVENT)
        set_status(session, vm, state, None)
    return f"{name} is back ({state.name.lower()})"


def _vm_step(step: Callable[[Engine, int], str]) -> Callable[[TaskContext], TaskResult]:
    """A handler running ``step`` on the task's VM (both maintenance tasks take one VM)."""

    def run(ctx: TaskContext) -> TaskResult:
        try:
            if ctx.vm_id is None:
                raise NotFoundError("a maintenance task needs a VM")
            return TaskResult.success(step(ctx.engine, ctx.vm_id))
        except Exception as exc:
            return TaskResult.error(exc)

    return run


maintenance_shutdown_vm = handler(C.TaskType.MAINTENANCE_SHUTDOWN_VM)(
    _vm_step(snapshot_and_destroy)
)
maintenance_bootup_vm = handler(C.TaskType.MAINTENANCE_BOOTUP_VM)(_vm_step(revert_and_resume))


# --- many VMs ---------------------------------------------------------------------------


def _queue_for(
    session: Session,
    task_type: C.TaskType,
    host_ids: Collection[int] | None,
    *,
    needs_snapshot: bool,
) -> Queued:
    """One task per VM, set-based: the VMs and which of them have unfinished tasks are
    read in two queries and the tasks written in bulk (a cloud of 25,000 VMs is queued
    in a few statements). Skipped: VMs not installed or in an unknown state, and VMs
    with a task queued (that task decides their state)."""
    query = select(VM.id, VM.vm_name, VM.host_id, VM.status).order_by(VM.id)
    if host_ids is not None:
        query = query.where(VM.host_id.in_(list(host_ids)))
    if needs_snapshot:
        query = query.where(
            exists().where(Snapshot.vm_id == VM.id, Snapshot.type == C.SnapshotType.MAINTENANCE)
        )
    rows = session.execute(query).all()
    busy = set(
        session.scalars(
            select(Task.vm_id).where(Task.vm_id.is_not(None), Task.status.in_(C.TASK_UNFINISHED))
        )
    )
    wanted: dict[int, str] = {}
    skipped = []
    for vm_id, name, host_id, status in rows:
        if host_id is None or status in (C.VMStatus.UNKNOWN, C.VMStatus.IN_QUEUE):
            skipped.append((name, f"state {C.VMStatus(status).name.lower()}"))
        elif vm_id in busy:
            skipped.append((name, "a task is queued for it"))
        else:
            wanted[vm_id] = name
    return Queued(queue.enqueue_vm_tasks(session, task_type, wanted), skipped)


def shutdown_baadal(session: Session) -> Queued:
    """Queue snapshot-and-destroy for every VM; the cloud is 'down-progress' meanwhile."""
    update_constant(session, BAADAL_STATUS, C.BaadalStatus.DOWN_PROGRESS)
    return _queue_for(session, C.TaskType.MAINTENANCE_SHUTDOWN_VM, None, needs_snapshot=False)


def shutdown_host(session: Session, host_ids: Collection[int]) -> Queued:
    return _queue_for(session, C.TaskType.MAINTENANCE_SHUTDOWN_VM, host_ids, needs_snapshot=False)


def bootup_baadal(session: Session) -> Queued:
    """Queue revert-and-resume for every VM a shutdown snapshotted."""
    update_constant(session, BAADAL_STATUS, C.BaadalStatus.UP_PROGRESS)
    return _queue_for(session, C.TaskType.MAINTENANCE_BOOTUP_VM, None, needs_snapshot=True)


def bootup_host(session: Session, host_ids: Collection[int]) -> Queued:
    return _queue_for(session, C.TaskType.MAINTENANCE_BOOTUP_VM, host_ids, needs_snapshot=True)


def finish(session: Session, shutdown: bool) -> None:
    """The cloud-wide status once the queued work has ended."""
    final = C.BaadalStatus.DOWN if shutdown else C.BaadalStatus.UP
    update_constant(session, BAADAL_STATUS, final)


# --- evacuation ----------------------------------------------------------------------


def migrate_all_vms_from_host(
    session: Session, host_id: int, requester_id: int | None = None
) -> Queued:
    """The seed's evacuation: one migration task per VM of the host (live when it runs),
    each destination chosen by placement when the task runs. Returns the task ids and
    the VMs skipped with why (not installed, or a migration already queued)."""
    host = session.get(Host, host_id)
    if host is None:
        raise NotFoundError(f"no host with id {host_id}")
    movable = (C.VMStatus.RUNNING, C.VMStatus.SUSPENDED, C.VMStatus.SHUTDOWN)
    task_ids, skipped = [], []
    for vm in session.scalars(select(VM).where(VM.host_id == host_id).order_by(VM.id)):
        if vm.status not in movable:
            skipped.append((vm.vm_name, f"state {C.VMStatus(vm.status).name.lower()}"))
            continue
        live = vm.status == C.VMStatus.RUNNING
        try:
            task = migration.add_migrate_task_to_queue(session, vm.id, None, live, requester_id)
        except ConflictError as exc:
            skipped.append((vm.vm_name, str(exc)))
            continue
        task_ids.append(task.id)
    return Queued(task_ids, skipped)
