"""A worker process: claims tasks, runs their handlers on task threads.

This is also where the seed's maintenance ``Worker`` / ``ThreadPool`` went: work fans out
as tasks, and ``concurrency`` bounds how many run at once in one worker process (run more
worker processes, on one or many machines, to scale out).

One control thread does everything but running handlers: fire due periodic jobs, recover
tasks of dead workers, claim for the free slots, renew leases of running tasks, and wait
(until a task ends, one is queued, or the poll interval passes). A run that lost its
database gives its task back; recording a task's end rides out a short outage.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Collection
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import replace

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from baadal import constants as C
from baadal.config import Settings
from baadal.db.session import is_postgres, session_scope
from baadal.errors import BaadalError
from baadal.mail import notify
from baadal.tasks import params as task_params
from baadal.tasks import queue, wakeup
from baadal.tasks.periodic import due_jobs, fire_job, sync_periodic_jobs_in
from baadal.tasks.registry import REGISTRY, Registry, TaskContext, TaskResult, database_lost
from baadal.timeutil import utcnow

log = logging.getLogger("baadal")


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


_pools: dict[int, ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()


def _task_pool() -> ThreadPoolExecutor:
    """The process's task threads, shared by its Workers (each bounds its own share by
    its concurrency): a command that runs a Worker per request does not start and stop
    a thread per task. Keyed by pid: a forked child makes its own."""
    with _pools_lock:
        pool = _pools.get(os.getpid())
        if pool is None:
            pool = _pools[os.getpid()] = ThreadPoolExecutor(
                C.WORKER_CONCURRENCY_MAX, thread_name_prefix="task"
            )
        return pool


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
        #: set when there may be something to do: a task ended, one was queued, stop
        self.wake = threading.Event()
        self.completed = 0

    def run(self, *, until_idle: bool = False) -> int:
        """Work until stopped (or, with until_idle, until no task is left anywhere)."""
        return self._work(only=None, until_idle=until_idle)

    def run_tasks(self, task_ids: Collection[int]) -> int:
        """Run just these tasks (a command's ``--inline``) until all of them ended: no
        other task is claimed, no periodic job fired, no other worker's lease recovered.
        A task waits here while an earlier task of its VM is unfinished elsewhere."""
        return self._work(only=frozenset(task_ids), until_idle=True)

    def _work(self, *, only: frozenset[int] | None, until_idle: bool) -> int:
        """The control loop; ``only`` limits it to those tasks and skips housekeeping.

        Each round: one transaction with housekeeping when due and one claim for the
        free slots (with ``until_idle`` and nothing running it also tells whether the
        queue is done), lease renewal when due, then a wait until a task ends, a task is
        queued (this process, or NOTIFY on PostgreSQL) or the poll interval passes. With
        ``until_idle`` each task's end also tells whether the queue is done: after the
        last one no claim is needed to learn it (unless housekeeping is due: a due
        periodic job may queue more).
        """
        log.info("worker %s started, concurrency %d", self.worker_id, self.concurrency)
        wakeup.wake_in_process(self.wake)
        running: dict[Future[bool], int] = {}
        last_renewal, last_housekeeping = time.monotonic(), float("-inf")
        #: with until_idle: the end of the last task found no task unfinished
        drained = False
        listener: wakeup.Listener | None = None
        pool = _task_pool()
        while not self.stop_event.is_set():
            idle = False
            try:
                housekeeping = only is None and time.monotonic() - last_housekeeping >= self.poll_s
                if drained and not running and not housekeeping:
                    break  # what a claim's idle check would find, learnt at no cost
                if housekeeping or len(running) < self.concurrency:
                    claimed, done = self._claim(
                        only,
                        free=self.concurrency - len(running),
                        idle_check=until_idle and not running,
                        housekeeping=housekeeping,
                        sync=last_housekeeping < 0,
                    )
                    drained = False  # the claim's answer is the newer one
                    if housekeeping:
                        last_housekeeping = time.monotonic()
                    if done:
                        break
                    for task in claimed:
                        future = pool.submit(self._execute, task, until_idle, only)
                        future.add_done_callback(lambda _f: self.wake.set())
                        running[future] = task.id
                    idle = not running
                if time.monotonic() - last_renewal >= self.lease_s / 3:
                    self._renew([t for f, t in running.items() if not f.done()])
                    last_renewal = time.monotonic()
            except SQLAlchemyError as exc:
                if not database_lost(exc):
                    raise
                # the database went away for a moment: running tasks go on, retry soon
                log.warning("worker %s: database error, retrying: %s", self.worker_id, exc)
                self.stop_event.wait(self.poll_s)
            if idle and listener is None and only is None and self._listens():
                listener = wakeup.Listener(self.engine, self.wake, self.poll_s)
            self.wake.wait(self.poll_s)
            self.wake.clear()
            for future in [f for f in running if f.done()]:
                running.pop(future)
                drained = future.result()
                self.completed += 1
        if listener is not None:
            listener.stop()
        wait(running)
        log.info("worker %s stopped after %d tasks", self.worker_id, self.completed)
        return self.completed

    def stop(self) -> None:
        self.stop_event.set()
        self.wake.set()

    def _listens(self) -> bool:
        """Whether to LISTEN for queued tasks: PostgreSQL only (SQLite polls)."""
        return self.settings.worker.listen and is_postgres(self.engine)

    def _claim(
        self,
        only: frozenset[int] | None,
        *,
        free: int,
        idle_check: bool,
        housekeeping: bool,
        sync: bool,
    ) -> tuple[list[queue.ClaimedTask], bool]:
        """One transaction on a plain connection: (with ``housekeeping``) the periodic
        jobs' rows (``sync``: at start), the due jobs and a probe for expired leases,
        then the claim for the free slots. Each due job then fires in a transaction of
        its own (rarely any); the queue is not done while one did. Expired leases
        (rare) are recovered in a transaction of their own before the claim."""
        if not housekeeping:  # then there are free slots
            return self._claim_free(only, free, idle_check)
        now = utcnow()
        claimed: list[queue.ClaimedTask] = []
        done = False
        with self.engine.begin() as conn:
            if sync:  # the rows it read tell which jobs are due
                jobs = sync_periodic_jobs_in(conn, self.registry.periodic, self.settings)
                due = [job for job in jobs.values() if job.next_run_at <= now]
            else:
                due = due_jobs(conn, now)
            expired = queue.leases_expired(conn)
            if free and not expired:
                claimed, done = self._claim_in(conn, only, free, idle_check)
        if expired:
            queue.recover_expired(self.engine)
            if free:
                claimed, done = self._claim_free(only, free, idle_check)
        fired = [fire_job(self.engine, job, now) for job in due]
        return claimed, done and not any(fired)

    def _claim_free(
        self, only: frozenset[int] | None, free: int, idle_check: bool
    ) -> tuple[list[queue.ClaimedTask], bool]:
        with self.engine.begin() as conn:
            return self._claim_in(conn, only, free, idle_check)

    def _claim_in(
        self, conn: Connection, only: frozenset[int] | None, free: int, idle_check: bool
    ) -> tuple[list[queue.ClaimedTask], bool]:
        claimed, done = queue.claim_in(
            conn, self.worker_id, self.lease_s, free, only=only, idle_check=idle_check
        )
        return self._read_for(conn, claimed), done

    def _read_for(
        self, conn: Connection, claimed: list[queue.ClaimedTask]
    ) -> list[queue.ClaimedTask]:
        """The claimed tasks with the rows their handlers ``reads`` (in the claim's
        transaction: a run needs no transaction of its own to start)."""
        with_reads = []
        for task in claimed:
            hook = self.registry.handlers.get(task.task_type)
            if hook is not None and hook.reads is not None:
                bound = {**task.parameters, "vm_id": task.vm_id}
                task = replace(task, read=conn.execute(hook.reads, bound).first())
            with_reads.append(task)
        return with_reads

    def _renew(self, task_ids: list[int]) -> None:
        held = queue.renew_leases(self.engine, self.worker_id, task_ids, self.lease_s)
        for lost in set(task_ids) - held:
            log.warning("worker %s lost the lease of task %d", self.worker_id, lost)

    def _execute(
        self, claimed: queue.ClaimedTask, idle_check: bool, only: frozenset[int] | None
    ) -> bool:
        """Run one handler and record its end; never raises. True when, asked to look
        (``idle_check``), its end found no task (of ``only``) unfinished."""
        mail_to = self._vm_users(claimed)
        result = self._run_handler(claimed)
        deadline = time.monotonic() + self.lease_s
        while True:
            try:
                return self._record(claimed, result, mail_to, idle_check, only)
            except Exception as exc:
                # the database is away (a restart): try again while the lease would last;
                # after that (or on any other error) lease recovery runs the task again
                if not database_lost(exc) or time.monotonic() >= deadline:
                    log.exception("task %d: its end was not recorded", claimed.id)
                    return False
                log.warning("task %d: recording its end: %s; retrying", claimed.id, exc)
                time.sleep(self.poll_s)

    def _record(
        self,
        claimed: queue.ClaimedTask,
        result: TaskResult,
        mail_to: list[int] | None,
        idle_check: bool,
        only: frozenset[int] | None,
    ) -> bool:
        """Finish the task, or give it back to the queue when its run was lost; whether
        the queue is done (see :meth:`_execute`)."""
        done = False
        if result.status == C.TaskStatus.RETRY:
            kept = queue.release(self.engine, claimed, self.worker_id, result.message)
        else:
            kept, done = queue.end_task(
                self.engine,
                claimed,
                self.worker_id,
                result.status,
                result.message,
                mail_to=mail_to,
                record=result.record,
                idle_check=idle_check,
                only=only,
            )
        if not kept:
            log.warning(
                "task %d ended on %s after its lease was lost; result discarded: %s",
                claimed.id,
                self.worker_id,
                result.message,
            )
        return done

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
                read=claimed.read,
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
        except Exception as exc:  # a lost database gives the task back (TaskResult.lost)
            return TaskResult.error(exc)
        if not isinstance(result, TaskResult) or result.status not in C.TASK_ENDS_OF_RUN:
            return TaskResult.failed(f"handler for {claimed.task_type!r} returned {result!r}")
        return result
