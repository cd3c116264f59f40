"""Tasks for the doors: the list (what the actor may see), one task with its history,
retry and ignore (admins), and task workers (thin, guarded wrappers over :mod:`baadal.tasks`)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from baadal import constants as C
from baadal.config import Settings
from baadal.db.models import Task, TaskEvent
from baadal.net.validators import check_int, check_row_id
from baadal.services import policy
from baadal.services.policy import Action, Actor, guarded
from baadal.services.rows import Page
from baadal.tasks import queue
from baadal.tasks.registry import load_handler_modules
from baadal.tasks.worker import Worker
from baadal.vm import network


@dataclass(frozen=True)
class TaskState:
    """Where one task stands, as plain values (for progress displays between sessions)."""

    id: int
    vm_id: int | None
    status: C.TaskStatus
    message: str | None

    @property
    def ended(self) -> bool:
        return self.status in C.TASK_FINAL


@guarded(Action.TASK_LIST)
def list_tasks(
    session: Session,
    actor: Actor,
    *,
    status: C.TaskStatus | None = None,
    vm_id: int | None = None,
    limit: int = C.ITEMS_PER_PAGE,
    before: int | None = None,
) -> Page[Task]:
    """The newest tasks the actor may see first (admins: all), below id ``before``: one
    query a page."""
    policy.require(session, actor, Action.TASK_LIST)
    check_int(limit, "task list length", 1, C.TASK_LIST_MAX)
    if vm_id is not None:
        check_row_id(vm_id, "VM")
    if before is not None:
        check_int(before, "before", 1, C.ROW_ID_MAX)
    found = queue.list_tasks(
        session,
        status=status,
        vm_id=vm_id,
        limit=limit + 1,
        visible=policy.task_filter(actor),
        before=before,
    )
    return Page.of(found, limit, lambda task: task.id)


@guarded(Action.TASK_LIST)
def task_states(session: Session, actor: Actor, task_ids: Collection[int]) -> list[TaskState]:
    """The states of these tasks, by id; those the actor may not see are left out."""
    policy.require(session, actor, Action.TASK_LIST)
    query = select(Task).where(Task.id.in_(task_ids), policy.task_filter(actor)).order_by(Task.id)
    return [
        TaskState(t.id, t.vm_id, C.TaskStatus(t.status), t.message) for t in session.scalars(query)
    ]


@guarded(Action.TASK_READ)
def get_task(session: Session, actor: Actor, task_id: int) -> Task:
    task = queue.get_task(session, task_id)
    policy.require(session, actor, Action.TASK_READ, task, f"task {task_id}")
    return task


@guarded(Action.TASK_READ)
def task_history(session: Session, actor: Actor, task_id: int) -> list[TaskEvent]:
    """The task's events, one per attempt."""
    task = queue.get_task(session, task_id)
    policy.require(session, actor, Action.TASK_READ, task, f"task {task_id}")
    return queue.task_events(session, task_id)


@guarded(Action.TASK_ADMIN)
def retry(session: Session, actor: Actor, task_id: int) -> Task:
    """Run a failed task again from the start."""
    return queue.retry(session, task_id)


@guarded(Action.TASK_ADMIN)
def ignore(session: Session, actor: Actor, task_id: int) -> Task:
    """Give up on a failed or waiting task (its handler may clean up)."""
    return queue.ignore(session, task_id)


@guarded(Action.WORKER_RUN)
def new_worker(
    engine: Engine,
    actor: Actor,
    settings: Settings,
    *,
    handlers: Sequence[str] = (),
    worker_id: str | None = None,
    concurrency: int | None = None,
) -> Worker:
    """A worker with the built-in handlers (and ``handlers``, extra modules); the door
    runs it (``run``) and stops it (``stop``, e.g. on SIGTERM)."""
    registry = load_handler_modules(list(handlers))
    return Worker(engine, settings, registry=registry, worker_id=worker_id, concurrency=concurrency)


@guarded(Action.WORKER_RUN)
def inline_runner(
    engine: Engine, actor: Actor, settings: Settings, task_ids: Collection[int]
) -> Callable[[], int]:
    """What runs these tasks in the caller's process (``--inline``) and nothing else: no
    other task, no periodic job. The door calls it (here or on a thread of its own: the
    policy was checked already); it returns how many it ran (fewer if workers took some)."""
    concurrency = min(len(task_ids), settings.worker.concurrency)
    worker = Worker(engine, settings, registry=load_handler_modules(), concurrency=concurrency)
    return functools.partial(worker.run_tasks, frozenset(task_ids))


@guarded(Action.WORKER_RUN)
def restore_network(engine: Engine, actor: Actor, settings: Settings) -> str:
    """What a worker does first after a controller restart: DHCP reservations and NAT
    mappings as the database says; returns what it did."""
    return network.restore_network(engine, settings)
