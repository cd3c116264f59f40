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

from baadal.db.models import VM, VMEventLog
from baadal.db.session import session_scope
from baadal.errors import ValidationError
from baadal.tasks.params import NoParams, PeriodicParams, TaskParams
from baadal.tasks.registry import TaskContext, TaskResult, handler
from baadal.timeutil import utcnow

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
