"""Handlers used by the task engine tests; they record what really ran in the database.

Each run writes a ``vm_event_log`` row (attribute = the handler's record kind,
old_value = start, new_value = end, vm_identity = worker id) so tests can check from the
database how many times, where, and in which order handlers ran.
"""

from __future__ import annotations

import os
import time
from datetime import datetime
from pathlib import Path

from sqlalchemy import Connection, insert, select
from sqlalchemy.exc import OperationalError

from baadal import constants as C
from baadal.db.models import VM, VMEventLog
from baadal.db.session import session_scope
from baadal.errors import ConflictError, ValidationError
from baadal.tasks import queue
from baadal.tasks.params import NoParams, PeriodicParams, TaskParams
from baadal.tasks.registry import TaskContext, TaskResult, handler
from baadal.timeutil import utcnow
from baadal.vm.install import allocate_vm_properties, free_vm_properties

ECHO = "Test Echo"
SLEEP = "Test Sleep"
FAIL = "Test Fail"
CRASHY = "Test Crashy"
DB_ERROR = "Test DB Error"
TICK_JOB = "test_tick"


class EchoParams(PeriodicParams):
    message: str = "echo"


class SleepParams(TaskParams):
    seconds: float = 0.05


class DbErrorParams(TaskParams):
    secret: str


class CrashyParams(TaskParams):
    #: a file the first attempt writes its pid to
    marker: str


def record(ctx: TaskContext, kind: str, start: datetime, end: datetime | None = None) -> None:
    with session_scope(ctx.engine) as session:
        session.add(
            VMEventLog(
                vm_id=ctx.vm_id or 0,
                vm_identity=ctx.worker_id,
                attribute=f"{kind}:{ctx.task_id}",
                old_value=start.isoformat(),
                new_value=(end or utcnow()).isoformat(),
                requester_id=ctx.attempt,
            )
        )


@handler(ECHO, params=EchoParams, periodic=(TICK_JOB,))
def echo(ctx: TaskContext[EchoParams]) -> TaskResult:
    record(ctx, "run", utcnow())
    return TaskResult.success(ctx.params.message)


SPAWNS = "Test Spawns"


@handler(SPAWNS, params=NoParams)
def spawns(ctx: TaskContext[NoParams]) -> TaskResult:
    """Queues an ECHO task while it runs (in a transaction of its own)."""
    with session_scope(ctx.engine) as session:
        queue.enqueue(session, ECHO, parameters={"message": f"spawned by {ctx.task_id}"})
    return TaskResult.success("spawned")


@handler(SLEEP, params=SleepParams)
def sleep(ctx: TaskContext[SleepParams]) -> TaskResult:
    start = utcnow()
    time.sleep(ctx.params.seconds)
    record(ctx, "run", start)
    return TaskResult.success("slept")


@handler(FAIL, params=NoParams)
def fail(ctx: TaskContext) -> TaskResult:
    raise ValidationError("Task Status: FAILED Error: asked to fail")


@handler(DB_ERROR, params=DbErrorParams)
def db_error(ctx: TaskContext[DbErrorParams]) -> TaskResult:
    """A real constraint violation whose SQL parameters hold a secret."""
    with session_scope(ctx.engine) as session:
        session.add(VM(vm_name=ctx.params.secret, vm_identity=None))
    return TaskResult.success("not reached")


def _undo_crashy(ctx: TaskContext[CrashyParams]) -> None:
    record(ctx, "compensate", utcnow())


@handler(CRASHY, params=CrashyParams, compensate=_undo_crashy)
def crashy(ctx: TaskContext[CrashyParams]) -> TaskResult:
    """First attempt: announce pid in a file and hang (the test SIGKILLs us)."""
    start = utcnow()
    if ctx.attempt == 1:
        record(ctx, "partial", start)
        Path(ctx.params.marker).write_text(str(os.getpid()))
        time.sleep(600)
    record(ctx, "run", start)
    return TaskResult.success("done after recovery")


# --- tasks that hold resources (fault injection): a VM is placed (host, datastore space,
# private IP + MAC, VNC port, and a "domain": a file standing in for libvirt's definition,
# written outside the transaction as a define is) and unplaced again

PLACE = "Test Place"
UNPLACE = "Test Unplace"


class DomainParams(TaskParams):
    #: the directory of the domain files (shared by every worker process)
    domains: str


def domain_file(ctx: TaskContext[DomainParams]) -> Path:
    return Path(ctx.params.domains) / f"{ctx.vm_id}.domain"


def _unplace(ctx: TaskContext[DomainParams]) -> None:
    """Idempotent: the domain goes first, then every reservation (as a delete does)."""
    domain_file(ctx).unlink(missing_ok=True)
    with session_scope(ctx.engine) as session:
        vm = session.get(VM, ctx.vm_id)
        free_vm_properties(session, ctx.settings, vm)
        vm.status = C.VMStatus.SHUTDOWN


@handler(PLACE, params=DomainParams, compensate=_unplace)
def place(ctx: TaskContext[DomainParams]) -> TaskResult:
    start = utcnow()
    with session_scope(ctx.engine) as session:
        vm = session.get(VM, ctx.vm_id)
        props = allocate_vm_properties(session, vm)
        vm.status = C.VMStatus.RUNNING
    domain_file(ctx).write_text(f"{props.host_id} {props.private_ip} {props.vnc_port}")
    record(ctx, "run", start)
    return TaskResult.success("placed")


@handler(UNPLACE, params=DomainParams)
def unplace(ctx: TaskContext[DomainParams]) -> TaskResult:
    start = utcnow()
    _unplace(ctx)
    record(ctx, "run", start)
    return TaskResult.success("unplaced")


# --- a run that loses its database, outcome rows written with the task's end

LOSES_DB = "Test Loses Database"
RECORDS = "Test Records"
HOLDS_TRANSACTION = "Test Holds Transaction"


def lost_connection() -> OperationalError:
    """What SQLAlchemy raises when the server went away under a statement."""
    return OperationalError(
        "SELECT 1", {}, Exception("server closed the connection"), connection_invalidated=True
    )


@handler(LOSES_DB, params=NoParams, compensate=_undo_crashy)
def loses_db(ctx: TaskContext) -> TaskResult:
    """First run: the database goes away under it (caught as handlers do); then runs."""
    try:
        if ctx.attempt == 1:
            record(ctx, "partial", utcnow())
            raise lost_connection()
        record(ctx, "run", utcnow())
    except Exception as exc:
        return TaskResult.error(exc)
    return TaskResult.success("ran after the database came back")


class RecordsParams(TaskParams):
    #: the outcome's writer raises this ConflictError message instead of writing
    refuse: str | None = None


@handler(RECORDS, params=RecordsParams)
def records(ctx: TaskContext[RecordsParams]) -> TaskResult:
    """Leaves its outcome row to the task's end (TaskResult.record)."""

    def write(conn: Connection) -> None:
        if ctx.params.refuse:
            raise ConflictError(ctx.params.refuse)
        conn.execute(
            insert(VMEventLog.__table__),
            {"vm_id": 0, "vm_identity": "outcome", "attribute": f"outcome:{ctx.task_id}"},
        )

    return TaskResult.success("recorded", write)


class HoldParams(TaskParams):
    #: directory: the run writes ``started`` there, then waits for ``go``
    signals: str


@handler(HOLDS_TRANSACTION, params=HoldParams)
def holds_transaction(ctx: TaskContext[HoldParams]) -> TaskResult:
    """Opens a transaction, says so, waits (the test restarts PostgreSQL meanwhile), then
    writes in it; a handler like the others: it turns exceptions into its result."""
    signals = Path(ctx.params.signals)
    try:
        with session_scope(ctx.engine) as session:
            session.execute(select(1))
            (signals / f"started.{ctx.attempt}").touch()
            for _ in range(600):
                if (signals / "go").exists():
                    break
                time.sleep(0.1)
            session.add(VMEventLog(vm_id=0, vm_identity="held", attribute=f"run:{ctx.task_id}"))
    except Exception as exc:
        return TaskResult.error(exc)
    return TaskResult.success("held")
