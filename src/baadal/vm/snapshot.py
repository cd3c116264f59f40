"""Snapshots (the seed's VM_snapshot): internal libvirt snapshots mirrored in the DB.

Users keep at most USER_SNAPSHOT_LIMIT snapshots per VM. System snapshots (daily,
weekly, monthly) keep one of each kind: taking a new one deletes the previous of its kind.
The seed refuses to snapshot a running VM that does not answer ping (a hung guest makes
a useless snapshot); that rule is the ``general.snapshot_requires_ping`` setting.
"""

from __future__ import annotations

import contextlib

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from baadal import constants as C
from baadal.db.models import VM, Snapshot
from baadal.db.session import session_scope
from baadal.drivers.base import DomainNotFound
from baadal.errors import ConflictError, NotFoundError
from baadal.net.ping import is_pingable
from baadal.tasks import queue
from baadal.tasks.registry import TaskContext, TaskResult
from baadal.timeutil import utcnow
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


def _snapshot_row(session: Session, vm_id: int, snapshot_id: object) -> Snapshot:
    snap = session.get(Snapshot, int(snapshot_id)) if snapshot_id is not None else None
    if snap is None or snap.vm_id != vm_id:
        raise NotFoundError(f"no snapshot {snapshot_id} for this VM")
    return snap


def take_snapshot(session: Session, vm: VM, kind: C.SnapshotType) -> Snapshot:
    """Create the libvirt snapshot and its row (used by the handler and by maintenance)."""
    hv = vm_hypervisor(vm)
    if kind in SCHEDULED_KINDS.values():
        for old in session.scalars(
            select(Snapshot).where(Snapshot.vm_id == vm.id, Snapshot.type == kind)
        ):
            with contextlib.suppress(DomainNotFound):
                hv.snapshot_delete(vm.vm_identity, old.snapshot_name)
            session.delete(old)
    name = snapshot_name(kind)
    hv.snapshot_create(vm.vm_identity, name)
    snap = Snapshot(vm_id=vm.id, datastore_id=vm.datastore_id, snapshot_name=name, type=kind)
    session.add(snap)
    session.flush()
    return snap


def snapshot(ctx: TaskContext) -> TaskResult:
    """The 'Snapshot VM' handler: parameters vm_id, snapshot_type."""
    kind = C.SnapshotType(int(ctx.parameters.get("snapshot_type", C.SnapshotType.USER)))
    try:
        with session_scope(ctx.engine) as session:
            vm = load_vm(session, ctx.vm_id)
            if kind == C.SnapshotType.USER:
                check_user_snapshot_limit(session, vm.id)
            running = vm_hypervisor(vm).domain_info(vm.vm_identity).status == C.VMStatus.RUNNING
            ip = vm.private_ip.private_ip if vm.private_ip else None
            if (
                running
                and ctx.settings.general.snapshot_requires_ping
                and not (ip and is_pingable(ip))
            ):
                return TaskResult.failed(f"Unable to ping VM before snapshotting : {ip}")
            snap = take_snapshot(session, vm, kind)
            log_vm_event(session, vm, "snapshot", None, snap.snapshot_name, ctx.requester_id)
    except Exception as exc:
        return TaskResult.failed(f"Task Status: FAILED Error: {exc}")
    return TaskResult.success(SNAPSHOT_SUCCESS)


def revert_to(session: Session, vm: VM, snap: Snapshot) -> None:
    hv = vm_hypervisor(vm)
    hv.snapshot_revert(vm.vm_identity, snap.snapshot_name)
    set_status(session, vm, hv.domain_info(vm.vm_identity).status, None)


def revert(ctx: TaskContext) -> TaskResult:
    """The 'Revert to Snapshot' handler: parameters vm_id, snapshot_id."""
    try:
        with session_scope(ctx.engine) as session:
            vm = load_vm(session, ctx.vm_id)
            snap = _snapshot_row(session, vm.id, ctx.parameters.get("snapshot_id"))
            revert_to(session, vm, snap)
            log_vm_event(session, vm, "revert", None, snap.snapshot_name, ctx.requester_id)
    except Exception as exc:
        return TaskResult.failed(f"Task Status: FAILED Error: {exc}")
    return TaskResult.success(REVERT_SUCCESS)


def delete_snapshot(ctx: TaskContext) -> TaskResult:
    """The 'Delete Snapshot' handler: parameters vm_id, snapshot_id."""
    try:
        with session_scope(ctx.engine) as session:
            vm = load_vm(session, ctx.vm_id)
            snap = _snapshot_row(session, vm.id, ctx.parameters.get("snapshot_id"))
            with contextlib.suppress(DomainNotFound):
                vm_hypervisor(vm).snapshot_delete(vm.vm_identity, snap.snapshot_name)
            session.delete(snap)
    except Exception as exc:
        return TaskResult.failed(f"Task Status: FAILED Error: {exc}")
    return TaskResult.success(DELETE_SUCCESS)


def schedule_snapshots(ctx: TaskContext) -> TaskResult:
    """Periodic: queue one system snapshot per VM that asked for this kind."""
    job = str(ctx.parameters.get("periodic_job", ""))
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
                parameters={"snapshot_type": int(kind)},
                requester_id=C.SYSTEM_USER_ID,
                allow_duplicate=True,
            )
    return TaskResult.success(f"queued {len(vms)} {SNAPSHOT_LABELS[kind]} snapshots")
