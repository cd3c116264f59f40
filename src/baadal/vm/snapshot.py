"""Snapshots (the seed's VM_snapshot): internal libvirt snapshots mirrored in the DB.

Users keep at most USER_SNAPSHOT_LIMIT snapshots per VM. System snapshots (daily,
weekly, monthly) keep one of each kind: taking a new one deletes the previous of its kind.
The seed refuses to snapshot a running VM that does not answer ping (a hung guest makes
a useless snapshot); that rule is the ``general.snapshot_requires_ping`` setting.
"""

from __future__ import annotations

import contextlib
from typing import Any, NamedTuple

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    Row,
    Select,
    bindparam,
    delete,
    func,
    insert,
    select,
)
from sqlalchemy.orm import Session

from baadal import constants as C
from baadal.db.models import VM, PrivateIpPool, Snapshot
from baadal.db.session import session_scope
from baadal.drivers.base import DomainNotFound, Hypervisor
from baadal.errors import ConflictError, NotFoundError
from baadal.net.ping import is_pingable
from baadal.tasks import queue
from baadal.tasks.params import ScheduledSnapshotsParams, SnapshotIdParams, SnapshotVMParams
from baadal.tasks.registry import TaskContext, TaskResult, handler
from baadal.timeutil import utcnow
from baadal.vm import console
from baadal.vm.common import (
    PlacedVM,
    claimed_row,
    placed_hypervisor,
    placed_vm_query,
    record_event,
    record_status,
)

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


def _user_snapshots_of(vm_id: ColumnElement[Any]) -> Select[Any]:
    """How many user snapshots the VM ``vm_id`` (a bound id, or the VM row's) has."""
    return (
        select(func.count())
        .select_from(Snapshot)
        .where(Snapshot.vm_id == vm_id, Snapshot.type == C.SnapshotType.USER)
    )


_USER_SNAPSHOTS_OF = _user_snapshots_of(bindparam("vm_id"))
SNAPSHOT_LIMIT_REACHED = (
    f"a VM can have at most {C.USER_SNAPSHOT_LIMIT} snapshots; delete one first"
)


def check_user_snapshot_limit(session: Session, vm_id: int) -> None:
    """A prebuilt count (every snapshot request asks), after the session's own changes."""
    session.flush()
    if session.connection().execute(_USER_SNAPSHOTS_OF, {"vm_id": vm_id}).scalar_one() >= (
        C.USER_SNAPSHOT_LIMIT
    ):
        raise ConflictError(SNAPSHOT_LIMIT_REACHED)


def snapshot_name(kind: C.SnapshotType) -> str:
    return f"{SNAPSHOT_LABELS[kind]}_{utcnow():%Y%m%d_%H%M%S_%f}"


class _Source(NamedTuple):
    """What taking a snapshot of a VM needs (read in one prebuilt query)."""

    vm: PlacedVM
    datastore_id: int | None
    private_ip: str | None
    user_snapshots: int
    #: (id, name) of the snapshots a new one of its kind replaces
    replaced: list[tuple[int, str]]


_SOURCE = placed_vm_query(
    VM.datastore_id, PrivateIpPool.private_ip, _user_snapshots_of(VM.id).scalar_subquery()
).outerjoin(PrivateIpPool, PrivateIpPool.id == VM.private_ip_id)
_OF_KIND = select(Snapshot.id, Snapshot.snapshot_name).where(
    Snapshot.vm_id == bindparam("vm_id"), Snapshot.type == bindparam("kind")
)
_INSERT = insert(Snapshot.__table__)


def _source(
    engine: Engine, vm_id: int, kind: C.SnapshotType, row: Row[Any] | None = None
) -> _Source:
    """What taking a snapshot needs; ``row``: the VM's row of ``_SOURCE`` if read already."""
    replaced: list[tuple[int, str]] = []
    if row is None or kind in SCHEDULED_KINDS.values():
        with session_scope(engine, read=True) as session:
            conn = session.connection()
            row = row or conn.execute(_SOURCE, {"vm_id": vm_id}).first()
            if kind in SCHEDULED_KINDS.values():
                of_kind = conn.execute(_OF_KIND, {"vm_id": vm_id, "kind": kind})
                replaced = [(i, n) for i, n in of_kind]
    if row is None:
        raise NotFoundError(f"no VM with id {vm_id}")
    placed = len(PlacedVM._fields)
    return _Source(PlacedVM(*row[:placed]), *row[placed:], replaced)


def take_snapshot(engine: Engine, vm_id: int, kind: C.SnapshotType) -> str:
    """Create the libvirt snapshot and its row; a system kind replaces its predecessor."""
    return _take(engine, vm_id, kind, _source(engine, vm_id, kind))


def _take(engine: Engine, vm_id: int, kind: C.SnapshotType, source: _Source) -> str:
    """The libvirt calls run after a read and before a short write (on SQLite a write
    transaction holds the database's write lock); plain prebuilt statements."""
    hv, identity = placed_hypervisor(source.vm), source.vm.vm_identity
    for _, old_name in source.replaced:
        with contextlib.suppress(DomainNotFound):
            hv.snapshot_delete(identity, old_name)
    name = snapshot_name(kind)
    hv.snapshot_create(identity, name)
    with engine.begin() as conn:
        if source.replaced:
            conn.execute(delete(Snapshot).where(Snapshot.id.in_([i for i, _ in source.replaced])))
        conn.execute(
            _INSERT,
            {"vm_id": vm_id, "datastore_id": source.datastore_id, "snapshot_name": name,
             "type": int(kind), "path": None, "timestamp": utcnow()},
        )  # fmt: skip
    return name


@handler(C.TaskType.SNAPSHOT_VM, reads=_SOURCE)
def snapshot(ctx: TaskContext[SnapshotVMParams]) -> TaskResult:
    """The 'Snapshot VM' handler."""
    kind = ctx.params.snapshot_type
    try:
        source = _source(ctx.engine, ctx.vm_id, kind, ctx.read)  # type: ignore[arg-type]
        if kind == C.SnapshotType.USER and source.user_snapshots >= C.USER_SNAPSHOT_LIMIT:
            raise ConflictError(SNAPSHOT_LIMIT_REACHED)
        hv, ip = placed_hypervisor(source.vm), source.private_ip
        running = hv.domain_info(source.vm.vm_identity).status == C.VMStatus.RUNNING
        if running and ctx.settings.general.snapshot_requires_ping and not (ip and is_pingable(ip)):
            return TaskResult.failed(f"Unable to ping VM before snapshotting : {ip}")
        name = _take(ctx.engine, ctx.vm_id, kind, source)  # type: ignore[arg-type]
    except Exception as exc:
        return TaskResult.error(exc)

    def record(conn: Connection) -> None:
        record_event(conn, ctx.vm_id, "snapshot", name, ctx.requester_id)

    return TaskResult.success(SNAPSHOT_SUCCESS, record)


_SNAPSHOT = placed_vm_query(
    select(Snapshot.snapshot_name)
    .where(Snapshot.id == bindparam("snapshot_id"), Snapshot.vm_id == VM.id)
    .scalar_subquery()
)


def _read_snapshot(ctx: TaskContext[SnapshotIdParams]) -> tuple[PlacedVM, Hypervisor, str]:
    """(the VM, its hypervisor, the snapshot's name): the claim's row of ``_SNAPSHOT``."""
    snapshot_id = ctx.params.snapshot_id
    row = claimed_row(ctx, _SNAPSHOT, snapshot_id=snapshot_id)
    vm, name = PlacedVM(*row[:-1]), row[-1]
    if name is None:
        raise NotFoundError(f"no snapshot {snapshot_id} for this VM")
    return vm, placed_hypervisor(vm), name


@handler(C.TaskType.REVERT_TO_SNAPSHOT, reads=_SNAPSHOT)
def revert(ctx: TaskContext[SnapshotIdParams]) -> TaskResult:
    """The 'Revert to Snapshot' handler."""
    try:
        vm, hv, name = _read_snapshot(ctx)
        hv.snapshot_revert(vm.vm_identity, name)
        state = hv.domain_info(vm.vm_identity).status
        if vm.vnc_port is not None:  # the snapshot's password may be a grant's
            with console.console_lock(ctx.settings):
                console.replace_password(hv, vm.vm_identity, ctx.vm_id, definition=True)
    except Exception as exc:
        return TaskResult.error(exc)

    def record(conn: Connection) -> None:
        record_status(conn, ctx.vm_id, state, ctx.requester_id)
        record_event(conn, ctx.vm_id, "revert", name, ctx.requester_id)

    return TaskResult.success(REVERT_SUCCESS, record)


@handler(C.TaskType.DELETE_SNAPSHOT, reads=_SNAPSHOT)
def delete_snapshot(ctx: TaskContext[SnapshotIdParams]) -> TaskResult:
    """The 'Delete Snapshot' handler."""
    snap_id = ctx.params.snapshot_id
    try:
        vm, hv, name = _read_snapshot(ctx)
        with contextlib.suppress(DomainNotFound):
            hv.snapshot_delete(vm.vm_identity, name)
    except Exception as exc:
        return TaskResult.error(exc)
    return TaskResult.success(
        DELETE_SUCCESS,
        lambda conn: conn.execute(_DELETE, {"snapshot_id": snap_id}),
    )


_DELETE = delete(Snapshot).where(Snapshot.id == bindparam("snapshot_id"))


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
