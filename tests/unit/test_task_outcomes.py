"""How a run ends: claims for all free slots at once, outcome rows committed with the
task's end, a run that lost its database given back to the queue, workers woken when a
task is queued (SQLite, one process)."""

from __future__ import annotations

import sqlite3
import threading

import pytest
from sqlalchemy import Engine, event, select
from sqlalchemy.exc import OperationalError

from baadal import constants as C
from baadal.config import Settings
from baadal.db.models import Task, TaskEvent, VMEventLog
from baadal.db.session import session_scope
from baadal.tasks import params as task_params
from baadal.tasks import queue, wakeup
from baadal.tasks.registry import TaskContext, TaskResult, database_lost
from baadal.tasks.worker import Worker
from tests.support import handlers as H

pytestmark = pytest.mark.unit


def _enqueue(engine: Engine, task_type: str = H.ECHO, **kw: object) -> int:
    with session_scope(engine) as s:
        return queue.enqueue(s, task_type, **kw).id


def _task(engine: Engine, task_id: int) -> Task:
    with session_scope(engine) as s:
        return s.get(Task, task_id)


def _log(engine: Engine) -> list[str]:
    with session_scope(engine) as s:
        return list(s.scalars(select(VMEventLog.attribute).order_by(VMEventLog.id)))


def test_one_claim_takes_the_free_slots_best_first_and_one_task_per_vm(engine: Engine) -> None:
    """On SQLite and on PostgreSQL (where the chosen ids are computed once)."""
    first = _enqueue(engine, H.ECHO, vm_id=1)
    _enqueue(engine, H.SLEEP, vm_id=1)  # waits for the VM's first task
    plain = _enqueue(engine, H.ECHO)
    urgent = _enqueue(engine, H.ECHO, priority=C.TaskPriority.URGENT)
    claimed, done = queue.claim_batch(engine, "w", 30, 10, idle_check=True)
    assert [c.id for c in claimed] == [urgent, first, plain]
    assert not done
    with session_scope(engine) as s:
        processing = s.execute(
            select(TaskEvent.id, TaskEvent.task_id, TaskEvent.worker).where(
                TaskEvent.status == C.TaskStatus.PROCESSING
            )
        ).all()
    assert sorted(processing) == sorted((c.event_id, c.id, "w") for c in claimed)
    # nothing runnable now, but tasks are unfinished: not done
    assert queue.claim_batch(engine, "w", 30, 10, idle_check=True) == ([], False)
    for c in claimed:
        assert queue.finish(engine, c, "w", C.TaskStatus.SUCCESS, "ok")
    (second,), _ = queue.claim_batch(engine, "w", 30, 10, idle_check=True)
    with session_scope(engine) as s:  # one task claimed: its own prebuilt statement
        event = s.get(TaskEvent, second.event_id)
        assert (event.task_id, event.status, event.worker) == (
            second.id,
            C.TaskStatus.PROCESSING,
            "w",
        )
    assert queue.finish(engine, second, "w", C.TaskStatus.SUCCESS, "ok")
    assert queue.claim_batch(engine, "w", 30, 10, idle_check=True) == ([], True)
    assert queue.claim_batch(engine, "w", 30, 10) == ([], False)  # not asked


def test_outcome_rows_commit_with_the_tasks_end_and_only_with_it(
    sqlite_engine: Engine, settings: Settings
) -> None:
    ok = _enqueue(sqlite_engine, H.RECORDS)
    refused = _enqueue(sqlite_engine, H.RECORDS, parameters={"refuse": "the VM went away"})
    Worker(sqlite_engine, settings, worker_id="w").run(until_idle=True)
    assert _task(sqlite_engine, ok).status == C.TaskStatus.SUCCESS
    failed = _task(sqlite_engine, refused)
    assert (failed.status, failed.message) == (
        C.TaskStatus.FAILED,
        "Task Status: FAILED Error: the VM went away",
    )
    assert _log(sqlite_engine) == [f"outcome:{ok}"]  # the refused one wrote nothing
    # a worker that lost its lease writes no outcome: the task's next run records its own
    lost = _enqueue(sqlite_engine, H.RECORDS)
    claimed = queue.claim(sqlite_engine, "w1", 30)
    assert claimed is not None and claimed.id == lost
    outcome = H.records(_context(sqlite_engine, settings, claimed))
    assert not queue.finish(
        sqlite_engine, claimed, "w2", outcome.status, outcome.message, record=outcome.record
    )
    assert _log(sqlite_engine) == [f"outcome:{ok}"]


def _context(engine: Engine, settings: Settings, claimed: queue.ClaimedTask) -> TaskContext:
    return TaskContext(
        task_id=claimed.id,
        task_type=claimed.task_type,
        vm_id=claimed.vm_id,
        requester_id=claimed.requester_id,
        params=task_params.parse(claimed.task_type, claimed.parameters),
        attempt=claimed.attempt,
        worker_id="w1",
        engine=engine,
        settings=settings,
    )


def test_a_run_that_lost_its_database_is_given_back_and_runs_again(
    sqlite_engine: Engine, settings: Settings
) -> None:
    """Not FAILED: the task goes back to the queue at once (as lease recovery would put
    it), is compensated and runs again, and ends SUCCESS exactly once."""
    task_id = _enqueue(sqlite_engine, H.LOSES_DB)
    Worker(sqlite_engine, settings, worker_id="w").run(until_idle=True)
    task = _task(sqlite_engine, task_id)
    assert (task.status, task.attempts, task.lost_attempts) == (C.TaskStatus.SUCCESS, 2, 1)
    with session_scope(sqlite_engine) as s:
        events = [(e.status, e.message) for e in queue.task_events(s, task_id)]
    assert [status for status, _ in events] == [C.TaskStatus.RETRY, C.TaskStatus.SUCCESS]
    assert "database connection was lost" in events[0][1]
    assert _log(sqlite_engine) == [
        f"partial:{task_id}",
        f"compensate:{task_id}",
        f"run:{task_id}",
    ]


def test_only_a_broken_connection_counts_as_a_lost_database() -> None:
    assert database_lost(H.lost_connection())
    try:
        try:
            raise H.lost_connection()
        except Exception as exc:
            raise RuntimeError("wrapped") from exc
    except RuntimeError as wrapped:
        assert database_lost(wrapped)
    assert not database_lost(RuntimeError("libvirt said no"))
    locked = sqlite3.OperationalError("database is locked")
    assert database_lost(OperationalError("UPDATE vm_data", {}, locked))
    mistake = sqlite3.OperationalError("no such table: vm_dta")
    assert not database_lost(OperationalError("SELECT * FROM vm_dta", {}, mistake))
    assert TaskResult.error(H.lost_connection()).status == C.TaskStatus.RETRY
    assert TaskResult.error(RuntimeError("no")).status == C.TaskStatus.FAILED


def test_a_commit_that_queues_a_task_wakes_this_process_workers(sqlite_engine: Engine) -> None:
    wake = threading.Event()
    wakeup.wake_in_process(wake)
    with pytest.raises(RuntimeError), session_scope(sqlite_engine) as s:
        queue.enqueue(s, H.ECHO)
        raise RuntimeError("rolled back")
    assert not wake.is_set()
    with session_scope(sqlite_engine) as s:
        queue.enqueue(s, H.ECHO)
        assert not wake.is_set()  # not before the commit: the task is not visible yet
    assert wake.is_set()


def test_an_idle_worker_runs_a_task_queued_meanwhile_without_waiting_its_poll(
    sqlite_engine: Engine, settings: Settings
) -> None:
    """The worker polls once an hour here: only the wake-up can make it run the task
    before the test stops it (which it does once the task has ended)."""
    settings.worker.poll_interval_s = 3600
    settings.worker.lease_s = 3 * 3600
    worker = Worker(sqlite_engine, settings, worker_id="w", concurrency=1)
    waiting = threading.Event()

    @event.listens_for(sqlite_engine, "commit")
    def _claimed(_conn: object) -> None:
        waiting.set()  # the worker's first round (housekeeping + claim) found nothing

    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        assert waiting.wait(60)
        task_id = _enqueue(sqlite_engine, H.ECHO)
        for _ in range(600):
            if _task(sqlite_engine, task_id).status == C.TaskStatus.SUCCESS:
                break
            threading.Event().wait(0.1)
        assert _task(sqlite_engine, task_id).status == C.TaskStatus.SUCCESS
    finally:
        worker.stop()
        thread.join()
        event.remove(sqlite_engine, "commit", _claimed)


def test_a_finish_that_meets_a_broken_connection_is_tried_again(
    sqlite_engine: Engine, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The handler ran; the database was away when its end was to be written: the worker
    writes it once the database answers again (the task ends once, not FAILED)."""
    task_id = _enqueue(sqlite_engine, H.ECHO)
    real_finish, calls = queue.end_task, []

    def finish_after_an_outage(*args: object, **kw: object) -> queue.Ended:
        calls.append(1)
        if len(calls) == 1:
            raise H.lost_connection()
        return real_finish(*args, **kw)

    monkeypatch.setattr(queue, "end_task", finish_after_an_outage)
    settings.worker.poll_interval_s = 0.01
    Worker(sqlite_engine, settings, worker_id="w").run(until_idle=True)
    assert len(calls) == 2
    task = _task(sqlite_engine, task_id)
    assert (task.status, task.attempts) == (C.TaskStatus.SUCCESS, 1)
    assert _log(sqlite_engine) == [f"run:{task_id}"]
