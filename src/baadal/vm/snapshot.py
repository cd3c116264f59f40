"""Snapshots (the seed's VM_snapshot): internal libvirt snapshots mirrored in the DB.

Users keep at most USER_SNAPSHOT_LIMIT snapshots per VM. System snapshots (daily,
weekly, monthly) keep one of each kind: taking a new one deletes the previous of its kind.
The seed refuses to snapshot a running VM that does not answer ping (a hung guest makes
a useless snapshot); that rule is the ``general.snapshot_requires_ping`` setting.
"""

from __future__ import annotations

import contextlib

from sqlalchemy import Engine, delete, func, select
from sqlalchemy.orm import Session, joinedload

from baadal import constants as C
from baadal.db.models import VM, Snapshot
from baadal.db.session import session_scope
from baadal.drivers.base import DomainNotFound, Hypervisor
from baadal.errors import ConflictError, NotFoundError
from baadal.net.ping import is_pingable
from baadal.tasks import queue
from baadal.tasks.params import ScheduledSnapshotsParams, SnapshotIdParams, SnapshotVMParams
from baadal.tasks.registry import TaskContext, TaskResult, handler
from baadal.timeutil import utcnow
from baadal.vm import console
from baadal.vm.common import load_vm, log_vm_event, set_status, vm_hypervisor

SNAPSHOT_SUCCESS = "Snapshotted successfully"
REVERT_SUCCESS = "Reverted to snapshot successfully"
DELETE_SUCCESS = "Deleted snapshot successfully"

SNAPSHOT_LABELS = {
    C.SnapshotType.DAILY: "daily",
    C.SnapshotType.WEEKLY: "weekly",
    C.SnapshotType.MONTHLY: "monthly",
    C.SnapshotType.YEARLY: "yearly",
    C.SnapshotType.MAINTENANCE: "maintenance",
    C.SnapshotType.USER: "user",
}
#: periodic job name -> the snapshot kind it takes
SCHEDULED_KINDS = {
    "snapshot_daily": C.SnapshotType.DAILY,
    "snapshot_weekly": C.SnapshotType.WEEKLY,
    "snapshot_monthly": C.SnapshotType.MONTHLY,
}


def vm_has_snapshots(session: Session, vm_id: int) -> bool:
    return session.scalar(select(Snapshot.id).where(Snapshot.vm_id == vm_id).limit(1)) is not None


def user_snapshot_count(session: Session, vm_id: int) -> int:
    return (
        session.scalar(
            select(func.count())
            .select_from(Snapshot)
            .where(Snapshot.vm_id == vm_id, Snapshot.type == C.SnapshotType.USER)
        )
        or 0
    )


def check_user_snapshot_limit(session: Session, vm_id: int) -> None:
    if user_snapshot_count(session, vm_id) >= C.USER_SNAPSHOT_LIMIT:
        raise ConflictError(
            f"a VM can have at most {C.USER_SNAPSHOT_LIMIT} snapshots; delete one first"
        )


def snapshot_name(kind: C.SnapshotType) -> str:
    return f"{SNAPSHOT_LABELS[kind]}_{utcnow():%Y%m%d_%H%M%S_%f}"


def _snapshot_row(session: Session, vm_id: int, snapshot_id: int) -> Snapshot:
    snap = session.get(Snapshot, snapshot_id)
    if snap is None or snap.vm_id != vm_id:
        raise NotFoundError(f"no snapshot {snapshot_id} for this VM")
    return snap


def take_snapshot(engine: Engine, vm_id: int, kind: C.SnapshotType) -> str:
    """Create the libvirt snapshot and its row; a system kind replaces its predecessor.

    The libvirt calls run between two short transactions (on SQLite a transaction holds
    the database's write lock).
    """
    with session_scope(engine) as session:
        vm = load_vm(session, vm_id)
        hv, identity, datastore_id = vm_hypervisor(vm), vm.vm_identity, vm.datastore_id
        replaced = []
        if kind in SCHEDULED_KINDS.values():
            replaced = session.execute(
                select(Snapshot.id, Snapshot.snapshot_name).where(
                    Snapshot.vm_id == vm_id, Snapshot.type == kind
                )
            ).all()
    for _, old_name in replaced:
        with contextlib.suppress(DomainNotFound):
            hv.snapshot_delete(identity, old_name)
    name = snapshot_name(kind)
    hv.snapshot_create(identity, name)
    with session_scope(engine) as session:
        session.execute(delete(Snapshot).where(Snapshot.id.in_([i for i, _ in replaced])))
        session.add(Snapshot(vm_id=vm_id, datastore_id=datastore_id, snapshot_name=name, type=kind))
    return name


@handler(C.TaskType.SNAPSHOT_VM)
def snapshot(ctx: TaskContext[SnapshotVMParams]) -> TaskResult:
    """The 'Snapshot VM' handler."""
    kind = ctx.params.snapshot_type
    try:
        with session_scope(ctx.engine) as session:
            vm = load_vm(session, ctx.vm_id)
            if kind == C.SnapshotType.USER:
                check_user_snapshot_limit(session, vm.id)
            hv, identity = vm_hypervisor(vm), vm.vm_identity
            ip = vm.private_ip.private_ip if vm.private_ip else None
        running = hv.domain_info(identity).status == C.VMStatus.RUNNING
        if running and ctx.settings.general.snapshot_requires_ping and not (ip and is_pingable(ip)):
            return TaskResult.failed(f"Unable to ping VM before snapshotting : {ip}")
        name = take_snapshot(ctx.engine, ctx.vm_id, kind)
    except Exception as exc:
        return TaskResult.error(exc)

    def record(session: Session) -> None:
        log_vm_event(session, load_vm(session, ctx.vm_id), "snapshot", None, name, ctx.requester_id)

    return TaskResult.success(SNAPSHOT_SUCCESS, record)


def _read_snapshot(ctx: TaskContext[SnapshotIdParams]) -> tuple[Hypervisor, str, int, str]:
    """(hypervisor, domain name, snapshot id, snapshot name) in one short transaction."""
    with session_scope(ctx.engine, read=True) as session:
        vm = load_vm(session, ctx.vm_id, joinedload(VM.host))
        snap = _snapshot_row(session, vm.id, ctx.params.snapshot_id)
        return vm_hypervisor(vm), vm.vm_identity, snap.id, snap.snapshot_name


@handler(C.TaskType.REVERT_TO_SNAPSHOT)
def revert(ctx: TaskContext[SnapshotIdParams]) -> TaskResult:
    """The 'Revert to Snapshot' handler."""
    try:
        hv, identity, _, name = _read_snapshot(ctx)
        hv.snapshot_revert(identity, name)
        state = hv.domain_info(identity).status
        with console.console_lock(ctx.settings):  # the snapshot's password may be a grant's
            console.forget_password(ctx.engine, ctx.vm_id, definition=True)
    except Exception as exc:
        return TaskResult.error(exc)

    def record(session: Session) -> None:
        vm = load_vm(session, ctx.vm_id)
        set_status(session, vm, state, ctx.requester_id)
        log_vm_event(session, vm, "revert", None, name, ctx.requester_id)

    return TaskResult.success(REVERT_SUCCESS, record)


@handler(C.TaskType.DELETE_SNAPSHOT)
def delete_snapshot(ctx: TaskContext[SnapshotIdParams]) -> TaskResult:
    """The 'Delete Snapshot' handler."""
    try:
        hv, identity, snap_id, name = _read_snapshot(ctx)
        with contextlib.suppress(DomainNotFound):
            hv.snapshot_delete(identity, name)
    except Exception as exc:
        return TaskResult.error(exc)
    return TaskResult.success(
        DELETE_SUCCESS,
        lambda session: session.execute(delete(Snapshot).where(Snapshot.id == snap_id)),
    )


@handler(C.TaskType.SCHEDULED_SNAPSHOTS, periodic=tuple(SCHEDULED_KINDS))
def schedule_snapshots(ctx: TaskContext[ScheduledSnapshotsParams]) -> TaskResult:
    """Periodic: queue one system snapshot per VM that asked for this kind."""
    job = ctx.params.periodic_job
    kind = SCHEDULED_KINDS.get(job)
    if kind is None:
        return TaskResult.failed(f"unknown snapshot schedule {job!r}")
    with session_scope(ctx.engine) as session:
        vms = session.scalars(
            select(VM).where(
                VM.snapshot_flag.op("&")(int(kind)) != 0,
                VM.status.in_((C.VMStatus.RUNNING, C.VMStatus.SUSPENDED, C.VMStatus.SHUTDOWN)),
            )
        ).all()
        for vm in vms:
            queue.enqueue(
                session,
                C.TaskType.SNAPSHOT_VM,
                vm_id=vm.id,
                parameters=SnapshotVMParams(snapshot_type=kind),
                requester_id=C.SYSTEM_USER_ID,
                allow_duplicate=True,
            )
    return TaskResult.success(f"queued {len(vms)} {SNAPSHOT_LABELS[kind]} snapshots")
