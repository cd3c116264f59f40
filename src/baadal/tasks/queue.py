"""The task queue: the ``task_queue`` table is the queue.

Life of a task::

    enqueue ── PENDING ──claim──> PROCESSING ──finish──> SUCCESS | FAILED | PARTIAL_SUCCESS
                  ^                   │ lease expired (worker died)
                  └──── RETRY <───────┘            admin: FAILED ─retry─> RETRY
                                                   admin: FAILED|PENDING ─ignore─> IGNORE

- ``enqueue`` runs in the caller's transaction, so a task exists iff the change that
  caused it was committed.
- ``claim`` takes the best runnable task whose VM has no earlier unfinished task (tasks of
  one VM run one at a time, in order) and leases it to a worker. PostgreSQL uses
  ``FOR UPDATE SKIP LOCKED`` so workers never wait on each other; SQLite serialises claims
  with ``BEGIN IMMEDIATE``.
- ``finish`` only lands if the worker still holds the lease: a worker that lost its lease
  (it was presumed dead and the task went to someone else) cannot end the task a second
  time. So every task ends exactly once.
- Every attempt has one ``task_queue_event`` row: the durable history.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any, NamedTuple

from sqlalchemy import (
    ARRAY,
    ColumnElement,
    Connection,
    Engine,
    Integer,
    Row,
    and_,
    any_,
    bindparam,
    cast,
    exists,
    func,
    insert,
    literal_column,
    select,
    update,
)
from sqlalchemy.orm import Session, aliased, make_transient_to_detached

from baadal import constants as C
from baadal.db.models import VM, Task, TaskEvent
from baadal.db.session import is_postgres, session_scope
from baadal.errors import ConflictError, NotFoundError, ValidationError
from baadal.mail import notify
from baadal.tasks import params as task_params
from baadal.tasks.params import TaskParams
from baadal.tasks.registry import REGISTRY, Record, TaskResult, database_lost
from baadal.tasks.wakeup import wake_workers
from baadal.timeutil import utcnow


@dataclass(frozen=True)
class ClaimedTask:
    id: int
    task_type: str
    vm_id: int | None
    requester_id: int | None
    parameters: dict[str, Any]
    attempt: int
    #: runs of this task whose worker was lost, since it was queued or last retried
    lost_attempts: int
    event_id: int
    #: the row of its handler's ``reads`` (read by the worker in the claim's transaction)
    read: Row[Any] | None = None


def _vm_name(session: Session, vm_id: int | None) -> str:
    """The VM's name; no query when the caller's session has the VM already (it
    usually has: it checked the VM before queueing its task)."""
    if vm_id is None:
        return ""
    vm = session.get(VM, vm_id)
    return vm.vm_name if vm is not None else ""


def _new_event(session: Session, task: Task, status: C.TaskStatus) -> TaskEvent:
    event = TaskEvent(
        task_id=task.id,
        task_type=task.task_type,
        vm_id=task.vm_id,
        vm_name=_vm_name(session, task.vm_id),
        requester_id=task.requester_id,
        parameters=task.parameters,
        status=status,
        start_time=utcnow(),
    )
    session.add(event)
    return event


def _latest_event(session: Session, task_id: int) -> TaskEvent | None:
    return session.scalar(
        select(TaskEvent).where(TaskEvent.task_id == task_id).order_by(TaskEvent.id.desc()).limit(1)
    )


def check_not_queued(session: Session, vm_id: int, task_type: str) -> None:
    """Upstream rule: refuse a VM task if the same type is queued or a delete is."""
    blocking = (
        session.connection().execute(_BLOCKING, {"vm_id": vm_id, "task_type": task_type}).scalar()
    )
    if blocking is not None:
        raise _queued(blocking)


def _queued(blocking: str) -> ConflictError:
    return ConflictError(f"a {blocking!r} task for this VM is already queued")


def _status_in(column: Any, statuses: Collection[C.TaskStatus]) -> ColumnElement[bool]:
    """``column IN (1, 5, 2)``, the statuses written into the statement: a bound list
    is expanded at every execution of the prebuilt statements below, a tenth of their
    cost."""
    return column.in_([literal_column(str(int(s)), Integer) for s in statuses])


def _blocking_task(task: type[Task] | Any) -> ColumnElement[bool]:
    """An unfinished task of ``task`` (the table or an alias) that blocks a new task of
    type ``:task_type`` for VM ``:vm_id``: one of that type, or a delete."""
    return and_(
        task.vm_id == bindparam("vm_id"),
        _status_in(task.status, C.TASK_UNFINISHED),
        task.task_type.in_([bindparam("task_type"), C.TaskType.DELETE_VM]),
    )


_BLOCKING = select(Task.task_type).where(_blocking_task(Task)).limit(1)
_TASK_COLUMNS = (
    "task_type", "requester_id", "vm_id", "parameters", "priority", "status", "created_at",
    "run_after", "attempts", "lost_attempts", "periodic_key",
)  # fmt: skip


def _task_inserts() -> tuple[Any, Any]:
    """The task's INSERT ... RETURNING id, built once: plain, and guarded (it inserts
    nothing when :func:`check_not_queued` would refuse: the check and the insert are one
    statement)."""
    table = Task.__table__
    values = [bindparam(name, type_=table.c[name].type) for name in _TASK_COLUMNS]
    plain = insert(table).values(dict(zip(_TASK_COLUMNS, values, strict=True)))
    blocked = exists().where(_blocking_task(aliased(Task)))
    guarded = insert(table).from_select(_TASK_COLUMNS, select(*values).where(~blocked))
    return plain.returning(table.c.id), guarded.returning(table.c.id)


_INSERT_TASK, _INSERT_TASK_UNLESS_QUEUED = _task_inserts()
_INSERT_EVENT = insert(TaskEvent.__table__)


def enqueue(
    session: Session,
    task_type: str,
    *,
    vm_id: int | None = None,
    parameters: TaskParams | Mapping[str, Any] | None = None,
    requester_id: int | None = None,
    priority: C.TaskPriority = C.TaskPriority.NORMAL,
    allow_duplicate: bool = False,
    periodic_key: str | None = None,
) -> Task:
    """Add a task in the caller's transaction (commits with the change that caused it).

    ``parameters`` (a dict or the task type's model) are checked against the task type's
    model first: a mistake is a ValidationError and nothing is written. The rows are
    written with plain, prebuilt statements (the ORM's flush cost more than the
    statements); the task returned is in the session as if loaded.
    """
    params = task_params.parse(task_type, parameters)
    values = params.model_dump(mode="json")
    if vm_id is not None:
        if params.vm_id not in (None, vm_id):
            raise ValidationError(f"parameters name VM {params.vm_id}, the task VM {vm_id}")
        values["vm_id"] = vm_id  # a plain int field: no model copy to validate again
    now = utcnow()
    row = {
        "task_type": task_type, "requester_id": requester_id, "vm_id": vm_id,
        "parameters": values, "priority": int(priority),
        "status": C.TaskStatus.PENDING, "created_at": now, "run_after": now, "attempts": 0,
        "lost_attempts": 0, "periodic_key": periodic_key,
    }  # fmt: skip
    session.flush()  # pending ORM changes first: the duplicate check must see them
    conn = session.connection()
    guarded = vm_id is not None and not allow_duplicate
    task_id = conn.execute(_INSERT_TASK_UNLESS_QUEUED if guarded else _INSERT_TASK, row).scalar()
    if task_id is None:  # refused: name the task in the way (on PostgreSQL it may have
        # ended since; it was there at the insert)
        raise _queued(conn.execute(_BLOCKING, row).scalar() or task_type)
    conn.execute(
        _INSERT_EVENT,
        {
            "task_id": task_id, "task_type": task_type, "vm_id": vm_id,
            "vm_name": _vm_name(session, vm_id), "requester_id": requester_id,
            "parameters": row["parameters"], "status": C.TaskStatus.PENDING, "start_time": now,
        },
    )  # fmt: skip
    wake_workers(session)
    task = Task(
        id=task_id, message=None, started_at=None, finished_at=None, lease_owner=None,
        lease_expires_at=None, **row,
    )  # fmt: skip
    make_transient_to_detached(task)
    session.add(task)
    return task


@lru_cache(maxsize=4)
def _claim_statements(postgres: bool, only: bool) -> tuple[Any, Any]:
    """The claim statements, built once (building them costs more than running them).

    Pick: the best ``p_limit`` runnable tasks whose VM has no earlier unfinished task
    (with ``only``: among the ids bound as ``p_only``), leased with one UPDATE ...
    RETURNING (two tasks of one VM are never picked together: the later one waits for
    the earlier). Unfinished: whether any task (of ``p_only``) is left.
    """
    candidate, earlier = aliased(Task), aliased(Task)
    blocked_by_earlier = exists().where(
        and_(
            earlier.vm_id == candidate.vm_id,
            earlier.id < candidate.id,
            _status_in(earlier.status, C.TASK_UNFINISHED),
        )
    )
    best = (
        select(candidate.id)
        .where(
            _status_in(candidate.status, C.TASK_RUNNABLE),
            candidate.run_after <= bindparam("p_now"),
            candidate.vm_id.is_(None) | ~blocked_by_earlier,
        )
        .order_by(candidate.priority.desc(), candidate.id)
        .limit(bindparam("p_limit"))
    )
    unfinished = exists().where(_status_in(Task.status, C.TASK_UNFINISHED))
    if only:
        best = best.where(candidate.id.in_(bindparam("p_only", expanding=True)))
        unfinished = unfinished.where(Task.id.in_(bindparam("p_only", expanding=True)))
    if postgres:
        # the chosen ids as one array, computed once (an InitPlan): a plan that ran the
        # LIMIT ... SKIP LOCKED subquery again per row could lease more than p_limit
        chosen = best.with_for_update(skip_locked=True, of=candidate).subquery()
        ids = select(func.array_agg(chosen.c.id)).scalar_subquery()
        picked = Task.id == any_(cast(ids, ARRAY(Integer)))
    else:
        picked = Task.id.in_(best.scalar_subquery())
    pick = (
        update(Task)
        .where(picked)
        .values(
            status=C.TaskStatus.PROCESSING,
            lease_owner=bindparam("p_worker"),
            lease_expires_at=bindparam("p_expires"),
            attempts=Task.attempts + 1,
            started_at=func.coalesce(Task.started_at, bindparam("p_now")),
        )
        .returning(
            Task.id,
            Task.task_type,
            Task.vm_id,
            Task.requester_id,
            Task.parameters,
            Task.attempts,
            Task.lost_attempts,
            Task.priority,
        )
    )
    return pick, select(unfinished)


def _events_of(tasks: ColumnElement[bool]) -> Any:
    """Each attempt's event row (opened when the task became runnable) of the ``tasks``
    marked PROCESSING; their task ids and ids."""
    latest = select(func.max(TaskEvent.id)).where(tasks).group_by(TaskEvent.task_id)
    return (
        update(TaskEvent)
        .where(TaskEvent.id.in_(latest.scalar_subquery()))
        .values(
            status=C.TaskStatus.PROCESSING,
            start_time=bindparam("p_now"),
            worker=bindparam("p_worker"),
        )
        .returning(TaskEvent.task_id, TaskEvent.id)
    )


#: one task's (the usual claim: a bound list is expanded at every execution), or several
_EVENT_OF_ONE = _events_of(TaskEvent.task_id == bindparam("p_task"))
_EVENTS_OF_SOME = _events_of(TaskEvent.task_id.in_(bindparam("p_tasks", expanding=True)))


def claim_batch(
    engine: Engine,
    worker_id: str,
    lease_s: float,
    limit: int,
    *,
    only: Collection[int] | None = None,
    idle_check: bool = False,
) -> tuple[list[ClaimedTask], bool]:
    """Lease up to ``limit`` runnable tasks to ``worker_id`` in one transaction (with
    ``only``: among those ids, for a command running its own tasks), best first.

    With ``idle_check``, when nothing was claimed the same transaction also asks whether
    any task (of ``only``) is unfinished: the second value is True when none is (the
    queue is done); it is False otherwise.
    """
    with engine.begin() as conn:
        return claim_in(conn, worker_id, lease_s, limit, only=only, idle_check=idle_check)


def claim_in(
    conn: Connection,
    worker_id: str,
    lease_s: float,
    limit: int,
    *,
    only: Collection[int] | None = None,
    idle_check: bool = False,
) -> tuple[list[ClaimedTask], bool]:
    """:func:`claim_batch` in the caller's transaction, which it ends on PostgreSQL
    without waiting for the disk (``synchronous_commit`` off: a claim lost in a server
    crash is like a worker lost, the task runs again; the handler's first durable commit
    flushes it anyway). What else the transaction wrote must be as cheap to lose."""
    now = utcnow()
    postgres = is_postgres(conn.engine)
    pick, _ = _claim_statements(postgres, only is not None)
    values: dict[str, Any] = {
        "p_now": now,
        "p_worker": worker_id,
        "p_expires": now + timedelta(seconds=lease_s),
        "p_limit": limit,
    }
    if only is not None:
        values["p_only"] = list(only)
    if postgres:
        conn.exec_driver_sql("SET LOCAL synchronous_commit TO OFF")
    rows = conn.execute(pick, values).all()
    if not rows:
        return [], idle_check and not _unfinished(conn, only)
    marked = {"p_now": now, "p_worker": worker_id}
    if len(rows) == 1:
        event_ids = dict(conn.execute(_EVENT_OF_ONE, marked | {"p_task": rows[0].id}).all())
    else:
        marked["p_tasks"] = [r.id for r in rows]
        event_ids = dict(conn.execute(_EVENTS_OF_SOME, marked).all())
    rows.sort(key=lambda r: (-r.priority, r.id))
    return [
        ClaimedTask(
            id=row.id,
            task_type=row.task_type,
            vm_id=row.vm_id,
            requester_id=row.requester_id,
            parameters=dict(row.parameters),
            attempt=row.attempts,
            lost_attempts=row.lost_attempts,
            event_id=event_ids[row.id],
        )
        for row in rows
    ], False


def _unfinished(conn: Connection, only: Collection[int] | None) -> bool:
    """Whether any task (of ``only``) is unfinished."""
    unfinished = _claim_statements(is_postgres(conn.engine), only is not None)[1]
    values = {} if only is None else {"p_only": list(only)}
    return bool(conn.execute(unfinished, values).scalar())


def claim(
    engine: Engine, worker_id: str, lease_s: float, *, only: Collection[int] | None = None
) -> ClaimedTask | None:
    """Lease the next runnable task to ``worker_id``; None when there is nothing to do."""
    claimed, _ = claim_batch(engine, worker_id, lease_s, 1, only=only)
    return claimed[0] if claimed else None


def renew_leases(engine: Engine, worker_id: str, task_ids: list[int], lease_s: float) -> set[int]:
    """Extend the leases this worker holds; returns the ids it still holds."""
    if not task_ids:
        return set()
    with session_scope(engine) as session:
        held = set(
            session.scalars(
                update(Task)
                .where(
                    Task.id.in_(task_ids),
                    Task.lease_owner == worker_id,
                    Task.status == C.TaskStatus.PROCESSING,
                )
                .values(lease_expires_at=utcnow() + timedelta(seconds=lease_s))
                .returning(Task.id)
            )
        )
    return held


def finish(
    engine: Engine,
    claimed: ClaimedTask,
    worker_id: str,
    status: C.TaskStatus,
    message: str,
    *,
    mail_to: Collection[int] | None = None,
    record: Record | None = None,
) -> bool:
    """End the task if this worker still holds its lease. False = lease was lost."""
    return end_task(
        engine, claimed, worker_id, status, message, mail_to=mail_to, record=record
    ).kept


class Ended(NamedTuple):
    """How :func:`end_task` went."""

    #: the task ended with this run (False: this worker had lost its lease; nothing
    #: was written)
    kept: bool
    #: asked to look (``idle_check``): once the task ended, no task (of ``only``) was
    #: unfinished, as a claim's idle check would have found
    queue_done: bool


def end_task(
    engine: Engine,
    claimed: ClaimedTask,
    worker_id: str,
    status: C.TaskStatus,
    message: str,
    *,
    mail_to: Collection[int] | None = None,
    record: Record | None = None,
    idle_check: bool = False,
    only: Collection[int] | None = None,
) -> Ended:
    """End the task if this worker still holds its lease, in one transaction.

    ``record`` (the handler's outcome rows, see ``TaskResult.record``) and the mail
    telling the VM's users (``mail_to``: as they were before the task ran) are written in
    the same transaction, so a task ends with them or not at all. A ``record`` that
    raises ends the task FAILED with its error instead; one that lost the database
    raises (the run is lost). With ``idle_check`` the same transaction then asks
    whether any task (of ``only``) is unfinished: a worker running until idle whose
    last task this was needs no claim of its own to learn that the queue is done."""
    if status not in C.TASK_FINAL:
        raise ValidationError(f"{status!r} does not end a task")
    look = (idle_check, only)
    try:
        return _finish(engine, claimed, worker_id, status, message, mail_to, record, look)
    except Exception as exc:
        if record is None or database_lost(exc):
            raise
        failed = TaskResult.error(exc)
        return _finish(
            engine, claimed, worker_id, failed.status, failed.message, mail_to, None, look
        )


def _finish(
    engine: Engine,
    claimed: ClaimedTask,
    worker_id: str,
    status: C.TaskStatus,
    message: str,
    mail_to: Collection[int] | None,
    record: Record | None,
    look: tuple[bool, Collection[int] | None],
) -> Ended:
    """Plain prebuilt statements on a connection: an ORM session (and its flush) only
    for the mail."""
    values = {"p_status": int(status), "p_message": message, "p_now": utcnow()}
    idle_check, only = look
    with engine.begin() as conn:
        ended = conn.execute(_FINISH_TASK, values | {"p_task": claimed.id, "p_worker": worker_id})
        if ended.rowcount != 1:
            return Ended(kept=False, queue_done=False)
        conn.execute(_FINISH_EVENT, values | {"p_event": claimed.event_id})
        if record is not None:
            record(conn)
        if claimed.task_type in C.TASK_TYPES_MAILED and notify.mail_on():
            # joined to this transaction (it commits with it; closing it commits nothing)
            with Session(bind=conn) as session:
                task = session.get(Task, claimed.id)
                if task is not None:
                    notify.task_finished(session, task, users=mail_to)
                session.flush()
        done = idle_check and not _unfinished(conn, only)
    return Ended(kept=True, queue_done=done)


_FINISH_TASK = (
    update(Task)
    .where(
        Task.id == bindparam("p_task"),
        Task.lease_owner == bindparam("p_worker"),
        Task.status == C.TaskStatus.PROCESSING,
    )
    .values(
        status=bindparam("p_status"),
        message=bindparam("p_message"),
        finished_at=bindparam("p_now"),
        lease_owner=None,
        lease_expires_at=None,
    )
)
_FINISH_EVENT = (
    update(TaskEvent)
    .where(TaskEvent.id == bindparam("p_event"))
    .values(
        status=bindparam("p_status"), message=bindparam("p_message"), end_time=bindparam("p_now")
    )
)


def _requeue_lost(session: Session, task: Task, message: str, now: datetime) -> None:
    """A run of ``task`` was lost: its attempt's event ends RETRY and the task waits for
    its next run (counted in ``lost_attempts``, compensated when it runs)."""
    event = _latest_event(session, task.id)
    if event is not None and event.status == C.TaskStatus.PROCESSING:
        event.status = C.TaskStatus.RETRY
        event.message = message
        event.attention_time = now
        event.end_time = now
    task.status = C.TaskStatus.RETRY
    task.lost_attempts += 1
    task.lease_owner = None
    task.lease_expires_at = None
    _new_event(session, task, C.TaskStatus.RETRY)
    wake_workers(session)


_LEASE_EXPIRED = (Task.status == C.TaskStatus.PROCESSING, Task.lease_expires_at < bindparam("now"))
_EXPIRED = select(Task.id).where(*_LEASE_EXPIRED).limit(1)


def leases_expired(conn: Connection) -> bool:
    """Whether a task's lease expired (its worker died): a prebuilt query that every
    worker round with housekeeping runs."""
    return conn.execute(_EXPIRED, {"now": utcnow()}).first() is not None


def recover_expired_in(session: Session) -> list[int]:
    """Put tasks whose worker died (lease expired) back in the queue as RETRY, in the
    caller's transaction; the rows (locked on PostgreSQL) are loaded only when a lease
    did expire."""
    if not leases_expired(session.connection()):
        return []
    now = utcnow()
    query = select(Task).where(*_LEASE_EXPIRED)
    if is_postgres(session.get_bind()):
        query = query.with_for_update(skip_locked=True)
    recovered = []
    for task in session.scalars(query, {"now": now}):
        _requeue_lost(
            session, task, f"worker {task.lease_owner} lost the task (lease expired)", now
        )
        recovered.append(task.id)
    return recovered


def recover_expired(engine: Engine) -> list[int]:
    """Put tasks whose worker died (lease expired) back in the queue as RETRY."""
    with session_scope(engine) as session:
        return recover_expired_in(session)


def release(engine: Engine, claimed: ClaimedTask, worker_id: str, message: str) -> bool:
    """Give a task whose run was lost (its handler lost the database) back to the queue
    at once, as lease recovery would after the lease ends; False when this worker no
    longer holds the lease (then recovery or another worker has it already)."""
    with session_scope(engine) as session:
        query = select(Task).where(
            Task.id == claimed.id,
            Task.lease_owner == worker_id,
            Task.status == C.TaskStatus.PROCESSING,
        )
        task = session.scalar(query.with_for_update())
        if task is None:
            return False
        _requeue_lost(session, task, f"worker {worker_id}: {message}", utcnow())
    return True


def get_task(session: Session, task_id: int) -> Task:
    """The task, or NotFoundError (also for an id beyond any row id: no overflow)."""
    in_range = isinstance(task_id, int) and 1 <= task_id <= C.ROW_ID_MAX
    task = session.get(Task, task_id) if in_range else None
    if task is None:
        raise NotFoundError(f"no task with id {task_id}")
    return task


def retry(session: Session, task_id: int) -> Task:
    """Admin retry of a failed task: it runs again from the start, with a fresh count of
    lost runs (a task given up after lost workers gets its full number of tries again)."""
    task = get_task(session, task_id)
    if task.status not in (C.TaskStatus.FAILED, C.TaskStatus.PARTIAL_SUCCESS):
        raise ConflictError(
            f"task {task_id} is {C.TaskStatus(task.status).name}; only failed tasks can be retried"
        )
    task.status = C.TaskStatus.RETRY
    task.lost_attempts = 0
    task.run_after = utcnow()
    task.message = None
    task.finished_at = None
    _new_event(session, task, C.TaskStatus.RETRY)
    wake_workers(session)
    hook = REGISTRY.handlers.get(task.task_type)
    if hook is not None and hook.on_retry is not None:
        hook.on_retry(session, task)
    session.flush()
    return task


def ignore(session: Session, task_id: int) -> Task:
    """Admin ignore: the task will not run (again); its handler may clean up rows."""
    task = get_task(session, task_id)
    if task.status not in (C.TaskStatus.FAILED, *C.TASK_RUNNABLE):
        raise ConflictError(
            f"task {task_id} is {C.TaskStatus(task.status).name}; only failed or waiting"
            " tasks can be ignored"
        )
    task.status = C.TaskStatus.IGNORE
    task.finished_at = utcnow()
    event = _latest_event(session, task.id)
    if event is not None and event.status in C.TASK_RUNNABLE:
        event.status = C.TaskStatus.IGNORE
        event.end_time = task.finished_at
    else:
        _new_event(session, task, C.TaskStatus.IGNORE).end_time = task.finished_at
    hook = REGISTRY.handlers.get(task.task_type)
    if hook is not None and hook.on_ignore is not None:
        hook.on_ignore(session, task)
    session.flush()
    return task


def list_tasks(
    session: Session,
    *,
    status: C.TaskStatus | None = None,
    vm_id: int | None = None,
    limit: int = C.ITEMS_PER_PAGE,
    visible: ColumnElement[bool] | None = None,
    before: int | None = None,
) -> list[Task]:
    """The newest tasks first (below id ``before``); ``visible`` narrows them (the
    policy's filter)."""
    query = select(Task).order_by(Task.id.desc()).limit(limit)
    if before is not None:
        query = query.where(Task.id < before)
    if visible is not None:
        query = query.where(visible)
    if status is not None:
        query = query.where(Task.status == status)
    if vm_id is not None:
        query = query.where(Task.vm_id == vm_id)
    return list(session.scalars(query))


def task_events(session: Session, task_id: int) -> list[TaskEvent]:
    return list(
        session.scalars(
            select(TaskEvent).where(TaskEvent.task_id == task_id).order_by(TaskEvent.id)
        )
    )


def enqueue_vm_tasks(session: Session, task_type: str, vms: Mapping[int, str]) -> list[int]:
    """One task of ``task_type`` (no parameters but its VM) per VM of ``vms`` (id ->
    name), in the caller's transaction, with the rows :func:`enqueue` would write; the
    ids in the order of ``vms``. Set-based, for cloud-wide operations: a few statements
    for 25,000 VMs where enqueue costs four each. The caller has checked that no task is
    unfinished for these VMs (enqueue's duplicate check is not repeated here)."""
    if not vms:
        return []
    base = task_params.parse(task_type, None).model_dump(mode="json")
    params = {vm_id: {**base, "vm_id": vm_id} for vm_id in vms}  # vm_id: a plain int field
    now = utcnow()
    session.flush()
    session.execute(
        insert(Task.__table__),  # Core: the ORM's bulk path costs 0.1 ms a row
        [
            {"task_type": task_type, "vm_id": vm_id, "parameters": params[vm_id],
             "priority": int(C.TaskPriority.NORMAL), "status": C.TaskStatus.PENDING,
             "created_at": now, "run_after": now, "attempts": 0, "lost_attempts": 0}
            for vm_id in vms
        ],
    )  # fmt: skip
    # this transaction's rows: the same type and creation time (one call's marker) for
    # these VMs, none of which had an unfinished task
    ids = {
        vm_id: task_id
        for task_id, vm_id in session.execute(
            select(Task.id, Task.vm_id).where(
                Task.task_type == task_type,
                Task.created_at == now,
                Task.status == C.TaskStatus.PENDING,
            )
        )
        if vm_id in vms
    }
    session.execute(
        insert(TaskEvent.__table__),
        [
            {"task_id": ids[vm_id], "task_type": task_type, "vm_id": vm_id, "vm_name": name,
             "requester_id": None, "parameters": params[vm_id],
             "status": C.TaskStatus.PENDING, "start_time": now}
            for vm_id, name in vms.items()
        ],
    )  # fmt: skip
    wake_workers(session)
    return [ids[vm_id] for vm_id in vms]
