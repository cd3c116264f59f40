"""Which code runs for which task type, and the contract a handler follows.

A handler is a function ``(TaskContext) -> TaskResult``. It may be run more than once for
one task: when a worker dies mid-task the lease expires and another worker runs the task
again. So a handler is idempotent (re-running it finishes the job) or declares
``compensate``, which is called before every re-run to undo what a lost attempt may have
left (a half-made disk, a defined domain). Exactly one run ends the task.

Each handler is registered where it is defined, with ``@handler(task_type, ...)`` on the
function (hooks and periodic jobs named there too), so one operation reads in one place.
Its parameters arrive typed as ``ctx.params``, the task type's model in ``tasks.params``.

A handler may declare ``reads``: a prebuilt query of what it needs to start (a VM's
domain and host), run in the claim's transaction with the task's VM and parameters
bound; its first row arrives as ``ctx.read``. That spares every such run a transaction
of its own. The row is read at the claim, before ``compensate``; without a claim (a
handler called directly) ``ctx.read`` is None and the handler reads for itself.
"""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from sqlalchemy import Connection, Engine, Executable, Row
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.orm import Session

from baadal import constants as C
from baadal.config import Settings
from baadal.db.models import Task
from baadal.errors import BaadalError, NotFoundError, user_message
from baadal.tasks import params as task_params
from baadal.tasks.params import PeriodicParams, TaskParams

log = logging.getLogger("baadal")


#: writes a handler leaves to the task's end: they commit with it (see TaskResult.record)
Record = Callable[[Connection], None]


def database_lost(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) says the database connection broke or could
    not be made (a server restart, a network cut), or SQLite stayed locked: the run is
    lost, not failed."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, DBAPIError) and (
            seen.connection_invalidated
            or isinstance(seen, InterfaceError)
            or (isinstance(seen, OperationalError) and _transient(seen))
        ):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _transient(exc: OperationalError) -> bool:
    """PostgreSQL's OperationalError is about the server or the connection (gone, starting
    up, shutting down); SQLite's also covers mistakes (no such table), so only its busy
    timeout counts."""
    if type(exc.orig).__module__ == "sqlite3":
        return "database is locked" in str(exc.orig)
    return True


@dataclass(frozen=True)
class TaskResult:
    """How a run ended. ``record`` (optional) gets the finish transaction's connection
    and writes the run's outcome rows with plain statements (a VM's new status, its
    event log), so they commit together with the task's end, in one transaction, or not
    at all (a worker that lost its lease writes nothing: the task's next run records its
    own outcome). If it raises, the task ends FAILED with that error instead."""

    status: C.TaskStatus
    message: str
    record: Record | None = field(default=None, compare=False)

    @classmethod
    def success(cls, message: str, record: Record | None = None) -> TaskResult:
        return cls(C.TaskStatus.SUCCESS, message, record)

    @classmethod
    def failed(cls, message: str) -> TaskResult:
        return cls(C.TaskStatus.FAILED, message)

    @classmethod
    def lost(cls, exc: BaseException) -> TaskResult:
        """The run lost its database: the worker gives the task back to the queue (it
        runs again, compensated, like a task whose worker died) instead of failing it."""
        log.warning("task run lost its database connection: %s", user_message(exc))
        return cls(C.TaskStatus.RETRY, f"the database connection was lost: {user_message(exc)}")

    @classmethod
    def error(cls, exc: BaseException, prefix: str = C.TASK_FAILED_PREFIX) -> TaskResult:
        """A failure message for an exception a handler caught (by default the seed's
        "Task Status: FAILED Error: ..."); what is not a BaadalError is a surprise, so
        its traceback is logged. A lost database connection is no failure: see ``lost``."""
        if database_lost(exc):
            return cls.lost(exc)
        if not isinstance(exc, BaadalError):
            log.error("task failed", exc_info=exc)
        return cls.failed(f"{prefix}{user_message(exc)}")


P = TypeVar("P", bound=TaskParams)


@dataclass(frozen=True)
class TaskContext(Generic[P]):
    task_id: int
    task_type: str
    vm_id: int | None
    requester_id: int | None
    params: P
    #: 1 for the first run; more when a previous attempt was lost or retried
    attempt: int
    worker_id: str
    engine: Engine
    settings: Settings
    #: the first row of the handler's ``reads``, read when the task was claimed (None:
    #: no row, or not claimed by a worker)
    read: Row[Any] | None = None


Run = Callable[[TaskContext[Any]], TaskResult]
Compensate = Callable[[TaskContext[Any]], None]
#: called inside the admin's transaction when a failed task is retried or ignored
AdminHook = Callable[[Session, Task], None]


@dataclass(frozen=True)
class Handler:
    task_type: str
    run: Run
    compensate: Compensate | None = None
    on_retry: AdminHook | None = None
    on_ignore: AdminHook | None = None
    #: a query run in the claim's transaction, its row given to the run (ctx.read)
    reads: Executable | None = None


@dataclass
class Registry:
    handlers: dict[str, Handler] = field(default_factory=dict)
    #: periodic job name -> task type it enqueues
    periodic: dict[str, str] = field(default_factory=dict)

    def add(self, handler: Handler) -> None:
        self.handlers[handler.task_type] = handler

    def get(self, task_type: str) -> Handler:
        try:
            return self.handlers[task_type]
        except KeyError:
            raise NotFoundError(f"no handler registered for task type {task_type!r}") from None


#: the process-wide registry that handler modules register into when imported
REGISTRY = Registry()

#: every module that defines handlers; the worker imports them all (each registers its
#: handlers on import)
BUILTIN_HANDLER_MODULES: tuple[str, ...] = (
    "baadal.vm.install",
    "baadal.vm.lifecycle",
    "baadal.vm.edit",
    "baadal.vm.disk",
    "baadal.vm.snapshot",
    "baadal.vm.clone",
    "baadal.vm.migration",
    "baadal.vm.network",
    "baadal.host.health",
    "baadal.vm.sanity",
    "baadal.host.maintenance",
    "baadal.host.network_graph",
    "baadal.monitor.rrd",
    "baadal.vm.idle_checks",
    "baadal.host.load_balance",
    "baadal.host.power",
    "baadal.mail.sender",
    "baadal.tasks.audit_retention",
)


def handler(
    task_type: str,
    *,
    params: type[TaskParams] | None = None,
    compensate: Compensate | None = None,
    on_retry: AdminHook | None = None,
    on_ignore: AdminHook | None = None,
    periodic: tuple[str, ...] = (),
    reads: Executable | None = None,
) -> Callable[[Run], Run]:
    """Register the decorated function as the handler of ``task_type``.

    ``params`` declares the model of a task type ``C.TaskType`` does not know (the
    built-in types have theirs in ``tasks.params``); ``periodic`` names the periodic jobs
    that queue this task type, each run at the ``[scheduler]`` interval of its name;
    ``reads`` is the query whose row the claim hands to the run (see the module's
    docstring; its bound names: ``vm_id`` and the task's parameters).
    """
    if params is not None:
        task_params.register(task_type, params)
    model = task_params.model_of(task_type)
    if periodic and not issubclass(model, PeriodicParams):
        raise TypeError(f"{model.__name__} cannot take the periodic job's parameters")

    def register(run: Run) -> Run:
        REGISTRY.add(Handler(task_type, run, compensate, on_retry, on_ignore, reads))
        REGISTRY.periodic.update(dict.fromkeys(periodic, task_type))
        return run

    return register


def load_handler_modules(extra: tuple[str, ...] | list[str] = ()) -> Registry:
    for module in (*BUILTIN_HANDLER_MODULES, *extra):
        if module not in sys.modules:  # called per Worker (a command's, a request's)
            importlib.import_module(module)
    return REGISTRY
