"""A worker process: claims tasks, runs their handlers on a bounded thread pool.

This is also where the seed's maintenance ``Worker`` / ``ThreadPool`` went: work fans out
as tasks, and ``concurrency`` bounds how many run at once in one worker process (run more
worker processes, on one or many machines, to scale out).

One control thread does everything but running handlers: fire due periodic jobs, recover
tasks of dead workers, claim while there is a free slot, renew leases of running tasks.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Collection
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

from sqlalchemy import Engine, func, select
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from baadal import constants as C
from baadal.config import Settings
from baadal.db.models import Task
from baadal.db.session import session_scope
from baadal.errors import BaadalError
from baadal.mail import notify
from baadal.tasks import params as task_params
from baadal.tasks import queue
from baadal.tasks.periodic import fire_due_jobs, sync_periodic_jobs
from baadal.tasks.registry import REGISTRY, Registry, TaskContext, TaskResult

log = logging.getLogger("baadal")


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def unfinished_task_count(engine: Engine, only: Collection[int] | None = None) -> int:
    """Tasks not ended yet (with ``only``: among those ids)."""
    query = select(func.count()).select_from(Task).where(Task.status.in_(C.TASK_UNFINISHED))
    if only is not None:
        query = query.where(Task.id.in_(only))
    with session_scope(engine) as session:
        return session.scalar(query)


class Worker:
    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        *,
        registry: Registry = REGISTRY,
        worker_id: str | None = None,
        concurrency: int | None = None,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.registry = registry
        self.worker_id = worker_id or new_worker_id()
        self.concurrency = max(1, concurrency or settings.worker.concurrency)
        self.lease_s = settings.worker.lease_s
        self.poll_s = settings.worker.poll_interval_s
        self.stop_event = threading.Event()
        self.completed = 0

    def run(self, *, until_idle: bool = False) -> int:
        """Work until stopped (or, with until_idle, until no task is left anywhere)."""
        sync_periodic_jobs(self.engine, self.registry.periodic, self.settings)
        return self._work(only=None, until_idle=until_idle)

    def run_tasks(self, task_ids: Collection[int]) -> int:
        """Run just these tasks (a command's ``--inline``) until all of them ended: no
        other task is claimed, no periodic job fired, no other worker's lease recovered.
        A task waits here while an earlier task of its VM is unfinished elsewhere."""
        return self._work(only=frozenset(task_ids), until_idle=True)

    def _work(self, *, only: frozenset[int] | None, until_idle: bool) -> int:
        """The control loop; ``only`` limits it to those tasks and skips housekeeping."""
        log.info("worker %s started, concurrency %d", self.worker_id, self.concurrency)
        running: dict[Future[None], int] = {}
        last_renewal, last_housekeeping = time.monotonic(), float("-inf")
        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="task") as pool:
            while not self.stop_event.is_set():
                try:
                    if only is None and time.monotonic() - last_housekeeping >= self.poll_s:
                        fire_due_jobs(self.engine)
                        queue.recover_expired(self.engine)
                        last_housekeeping = time.monotonic()
                    while len(running) < self.concurrency:
                        claimed = queue.claim(self.engine, self.worker_id, self.lease_s, only=only)
                        if claimed is None:
                            break
                        running[pool.submit(self._execute, claimed)] = claimed.id
                    if time.monotonic() - last_renewal >= self.lease_s / 3:
                        self._renew([t for f, t in running.items() if not f.done()])
                        last_renewal = time.monotonic()
                    if until_idle and not running and unfinished_task_count(self.engine, only) == 0:
                        break
                except OperationalError:
                    # the database went away for a moment: running tasks go on, retry soon
                    log.exception("worker %s: database error, retrying", self.worker_id)
                    self.stop_event.wait(self.poll_s)
                if running:
                    done, _ = wait(running, timeout=self.poll_s, return_when=FIRST_COMPLETED)
                    for future in done:
                        running.pop(future)
                        future.result()
                        self.completed += 1
                else:
                    self.stop_event.wait(self.poll_s)
            wait(running)
        log.info("worker %s stopped after %d tasks", self.worker_id, self.completed)
        return self.completed

    def stop(self) -> None:
        self.stop_event.set()

    def _renew(self, task_ids: list[int]) -> None:
        held = queue.renew_leases(self.engine, self.worker_id, task_ids, self.lease_s)
        for lost in set(task_ids) - held:
            log.warning("worker %s lost the lease of task %d", self.worker_id, lost)

    def _execute(self, claimed: queue.ClaimedTask) -> None:
        """Run one handler; never raises (the result is always recorded)."""
        mail_to = self._vm_users(claimed)
        result = self._run_handler(claimed)
        if not queue.finish(
            self.engine, claimed, self.worker_id, result.status, result.message, mail_to=mail_to
        ):
            log.warning(
                "task %d finished on %s after its lease was lost; result discarded: %s",
                claimed.id,
                self.worker_id,
                result.message,
            )

    def _vm_users(self, claimed: queue.ClaimedTask) -> list[int] | None:
        """The users of the task's VM before it runs (a delete leaves none to tell), read
        only when its end will be mailed."""
        if claimed.vm_id is None or claimed.task_type not in C.TASK_TYPES_MAILED:
            return None
        if not notify.mail_on():
            return None
        try:
            with session_scope(self.engine) as session:
                return notify.vm_user_ids(session, claimed.vm_id)
        except SQLAlchemyError:  # the mail then goes to whoever is left at the end
            log.exception("task %d: cannot read its VM's users", claimed.id)
            return None

    def _run_handler(self, claimed: queue.ClaimedTask) -> TaskResult:
        try:
            handler = self.registry.get(claimed.task_type)
            ctx = TaskContext(
                task_id=claimed.id,
                task_type=claimed.task_type,
                vm_id=claimed.vm_id,
                requester_id=claimed.requester_id,
                params=task_params.parse(claimed.task_type, claimed.parameters),
                attempt=claimed.attempt,
                worker_id=self.worker_id,
                engine=self.engine,
                settings=self.settings,
            )
            if ctx.attempt > 1 and handler.compensate is not None:
                handler.compensate(ctx)
            if claimed.lost_attempts >= self.settings.worker.max_attempts:
                return TaskResult.failed(
                    f"{C.TASK_FAILED_PREFIX}gave up after {claimed.lost_attempts} lost runs"
                    " (their workers died or lost the lease; the handler did not fail)"
                )
            result = handler.run(ctx)
        except BaadalError as exc:
            return TaskResult.failed(str(exc))
        except Exception as exc:
            return TaskResult.error(exc)
        if not isinstance(result, TaskResult) or result.status not in C.TASK_FINAL:
            return TaskResult.failed(f"handler for {claimed.task_type!r} returned {result!r}")
        return result
