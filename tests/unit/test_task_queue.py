"""The task queue in one process on SQLite: enqueue, claim order, leases, retry/ignore."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import Engine, func, select, update

from baadal import constants as C
from baadal.config import Settings
from baadal.db.models import PeriodicJob, Task, TaskEvent, VMEventLog
from baadal.db.session import session_scope
from baadal.errors import ConflictError, NotFoundError
from baadal.services import tasks
from baadal.services.policy import SYSTEM
from baadal.tasks import params as task_params
from baadal.tasks import queue
from baadal.tasks.params import NoParams
from baadal.tasks.periodic import _next_slot, fire_due_jobs, sync_periodic_jobs
from baadal.tasks.registry import REGISTRY
from baadal.tasks.worker import Worker
from baadal.timeutil import utcnow
from tests.support import handlers as H
from tests.support.statements import counted

pytestmark = pytest.mark.unit


def _enqueue(engine: Engine, task_type: str = H.ECHO, **kw: object) -> int:
    with session_scope(engine) as s:
        return queue.enqueue(s, task_type, **kw).id


def _status(engine: Engine, task_id: int) -> C.TaskStatus:
    with session_scope(engine) as s:
        return C.TaskStatus(s.get(Task, task_id).status)


def _events(engine: Engine, task_id: int) -> list[tuple[int, str | None]]:
    with session_scope(engine) as s:
        return [(e.status, e.message) for e in queue.task_events(s, task_id)]


def test_enqueue_is_part_of_the_callers_transaction(sqlite_engine: Engine) -> None:
    with pytest.raises(RuntimeError), session_scope(sqlite_engine) as s:
        queue.enqueue(s, H.ECHO)
        raise RuntimeError("the change that caused the task failed")
    with session_scope(sqlite_engine) as s:
        assert s.scalar(select(func.count()).select_from(Task)) == 0
        assert s.scalar(select(func.count()).select_from(TaskEvent)) == 0
    task_id = _enqueue(sqlite_engine, vm_id=7, parameters={"message": "hi"})
    assert _status(sqlite_engine, task_id) == C.TaskStatus.PENDING
    assert _events(sqlite_engine, task_id) == [(C.TaskStatus.PENDING, None)]
    with session_scope(sqlite_engine) as s:
        assert s.get(Task, task_id).parameters == {
            "message": "hi",
            "periodic_job": None,
            "slot": None,
            "vm_id": 7,
        }


def _rows(engine: Engine) -> tuple[int | None, int | None]:
    with session_scope(engine) as s:
        return (
            s.scalar(select(func.count()).select_from(Task)),
            s.scalar(select(func.count()).select_from(TaskEvent)),
        )


def test_same_vm_task_or_queued_delete_is_refused(engine: Engine) -> None:
    """The duplicate check is part of the task's INSERT (on PostgreSQL its values are
    typed casts): a refusal writes no task and no history row."""
    _enqueue(engine, C.TaskType.START_VM, vm_id=1)
    before = _rows(engine)
    with pytest.raises(ConflictError, match="'Start VM' task for this VM is already queued"):
        _enqueue(engine, C.TaskType.START_VM, vm_id=1)
    assert _rows(engine) == before
    _enqueue(engine, C.TaskType.DELETE_VM, vm_id=1)
    with pytest.raises(ConflictError, match="'Delete VM' task for this VM is already queued"):
        _enqueue(engine, C.TaskType.SUSPEND_VM, vm_id=1)
    _enqueue(engine, C.TaskType.START_VM, vm_id=2)  # other VMs are not affected
    _enqueue(engine, C.TaskType.SNAPSHOT_VM, vm_id=1, allow_duplicate=True)
    assert _rows(engine) == (4, 4)


def test_the_task_enqueue_returns_is_loaded_as_written(sqlite_engine: Engine) -> None:
    """Written with plain statements, yet an ordinary loaded row of the session: its
    values need no query, and a change to it is flushed as for any loaded row."""
    with session_scope(sqlite_engine) as s:
        task = queue.enqueue(s, H.ECHO, vm_id=3, parameters={"message": "hi"}, requester_id=2)
        assert task in s and task not in s.new and not s.dirty
        task.priority = int(C.TaskPriority.URGENT)
    values = {c.key: getattr(task, c.key) for c in Task.__table__.columns}  # detached
    with session_scope(sqlite_engine) as s:
        assert {c.key: getattr(s.get(Task, task.id), c.key) for c in Task.__table__.columns} == (
            values
        )
    assert values["status"] == C.TaskStatus.PENDING and values["vm_id"] == 3
    assert values["priority"] == C.TaskPriority.URGENT and values["requester_id"] == 2


def test_claim_order_priority_then_age_and_one_task_per_vm(sqlite_engine: Engine) -> None:
    a1 = _enqueue(sqlite_engine, H.ECHO, vm_id=1)
    a2 = _enqueue(sqlite_engine, H.SLEEP, vm_id=1)
    b1 = _enqueue(sqlite_engine, H.ECHO, vm_id=2)
    urgent = _enqueue(sqlite_engine, H.ECHO, priority=C.TaskPriority.URGENT)
    order = [queue.claim(sqlite_engine, "w", 30) for _ in range(4)]
    # urgent first, then the oldest of each VM; VM 1's second task waits for its first
    assert [c.id if c else None for c in order] == [urgent, a1, b1, None]
    assert queue.finish(sqlite_engine, order[1], "w", C.TaskStatus.SUCCESS, "ok")
    nxt = queue.claim(sqlite_engine, "w", 30)
    assert nxt is not None and nxt.id == a2 and nxt.attempt == 1


def test_failed_task_does_not_block_later_tasks_of_its_vm(sqlite_engine: Engine) -> None:
    first = _enqueue(sqlite_engine, H.ECHO, vm_id=1)
    second = _enqueue(sqlite_engine, H.SLEEP, vm_id=1)
    c = queue.claim(sqlite_engine, "w", 30)
    queue.finish(sqlite_engine, c, "w", C.TaskStatus.FAILED, "boom")
    assert queue.claim(sqlite_engine, "w", 30).id == second
    assert _status(sqlite_engine, first) == C.TaskStatus.FAILED


def test_finish_needs_the_lease(sqlite_engine: Engine) -> None:
    task_id = _enqueue(sqlite_engine)
    claimed = queue.claim(sqlite_engine, "w1", 30)
    assert not queue.finish(sqlite_engine, claimed, "w2", C.TaskStatus.SUCCESS, "not mine")
    assert queue.renew_leases(sqlite_engine, "w2", [task_id], 30) == set()
    assert queue.renew_leases(sqlite_engine, "w1", [task_id], 30) == {task_id}
    assert queue.finish(sqlite_engine, claimed, "w1", C.TaskStatus.SUCCESS, "mine")
    assert not queue.finish(sqlite_engine, claimed, "w1", C.TaskStatus.FAILED, "twice")
    assert _status(sqlite_engine, task_id) == C.TaskStatus.SUCCESS
    assert _events(sqlite_engine, task_id) == [(C.TaskStatus.SUCCESS, "mine")]


def test_expired_lease_is_recovered_and_the_old_worker_cannot_finish(sqlite_engine: Engine) -> None:
    task_id = _enqueue(sqlite_engine)
    lost = queue.claim(sqlite_engine, "dead", 30)
    assert queue.recover_expired(sqlite_engine) == []  # lease still valid
    with session_scope(sqlite_engine) as s:
        s.execute(update(Task).values(lease_expires_at=utcnow() - timedelta(seconds=1)))
    assert queue.recover_expired(sqlite_engine) == [task_id]
    assert _status(sqlite_engine, task_id) == C.TaskStatus.RETRY
    again = queue.claim(sqlite_engine, "alive", 30)
    assert again.id == task_id and again.attempt == 2
    assert not queue.finish(sqlite_engine, lost, "dead", C.TaskStatus.SUCCESS, "zombie")
    assert queue.finish(sqlite_engine, again, "alive", C.TaskStatus.SUCCESS, "ok")
    events = _events(sqlite_engine, task_id)
    assert [e[0] for e in events] == [C.TaskStatus.RETRY, C.TaskStatus.SUCCESS]
    assert "worker dead lost the task" in events[0][1]


def test_retry_and_ignore_rules(sqlite_engine: Engine) -> None:
    task_id = _enqueue(sqlite_engine)
    with pytest.raises(ConflictError, match="only failed tasks"), session_scope(sqlite_engine) as s:
        queue.retry(s, task_id)
    c = queue.claim(sqlite_engine, "w", 30)
    queue.finish(sqlite_engine, c, "w", C.TaskStatus.FAILED, "boom")
    with session_scope(sqlite_engine) as s:
        queue.retry(s, task_id)
    assert _status(sqlite_engine, task_id) == C.TaskStatus.RETRY
    again = queue.claim(sqlite_engine, "w", 30)
    assert again.attempt == 2
    queue.finish(sqlite_engine, again, "w", C.TaskStatus.FAILED, "boom again")
    with session_scope(sqlite_engine) as s:
        queue.ignore(s, task_id)
    assert _status(sqlite_engine, task_id) == C.TaskStatus.IGNORE
    with pytest.raises(ConflictError), session_scope(sqlite_engine) as s:
        queue.ignore(s, task_id)
    with pytest.raises(NotFoundError), session_scope(sqlite_engine) as s:
        queue.retry(s, 999)
    assert [e[0] for e in _events(sqlite_engine, task_id)] == [
        C.TaskStatus.FAILED,
        C.TaskStatus.FAILED,
        C.TaskStatus.IGNORE,
    ]


def test_worker_runs_handlers_and_records_results(
    sqlite_engine: Engine, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(task_params.PARAMS, "No Such Task", NoParams)  # queued, no handler
    ok = _enqueue(sqlite_engine, H.ECHO, parameters={"message": "VM is installed successfully"})
    bad = _enqueue(sqlite_engine, H.FAIL)
    unknown = _enqueue(sqlite_engine, "No Such Task")
    worker = Worker(sqlite_engine, settings, registry=REGISTRY, worker_id="w1", concurrency=2)
    assert worker.run(until_idle=True) == 3
    with session_scope(sqlite_engine) as s:
        got = {t.id: (t.status, t.message) for t in s.scalars(select(Task))}
    assert got[ok] == (C.TaskStatus.SUCCESS, "VM is installed successfully")
    assert got[bad] == (C.TaskStatus.FAILED, "Task Status: FAILED Error: asked to fail")
    assert got[unknown][0] == C.TaskStatus.FAILED
    assert "no handler registered" in got[unknown][1]


def test_unexpected_errors_reach_the_user_without_sql_or_secrets(
    sqlite_engine: Engine, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    task_id = _enqueue(sqlite_engine, H.DB_ERROR, parameters={"secret": "vnc-s3cret"})
    Worker(sqlite_engine, settings, worker_id="w").run(until_idle=True)
    with session_scope(sqlite_engine) as s:
        task = s.get(Task, task_id)
    assert task.status == C.TaskStatus.FAILED
    assert task.message == (
        "Task Status: FAILED Error: database error (IntegrityError); details are in the log"
    )
    assert "IntegrityError" in caplog.text and "Traceback" in caplog.text
    assert "vnc-s3cret" not in caplog.text


def _lose_runs(engine: Engine, count: int) -> None:
    """``count`` runs whose worker died: claimed, lease expired, recovered."""
    for _ in range(count):
        assert queue.claim(engine, "dead", 30) is not None
        with session_scope(engine) as s:
            s.execute(update(Task).values(lease_expires_at=utcnow() - timedelta(seconds=1)))
        queue.recover_expired(engine)


def _handler_runs(engine: Engine) -> int:
    with session_scope(engine) as s:
        return s.scalar(select(func.count()).select_from(VMEventLog))


def test_worker_gives_up_after_max_attempts(sqlite_engine: Engine, settings: Settings) -> None:
    task_id = _enqueue(sqlite_engine, H.ECHO)
    _lose_runs(sqlite_engine, settings.worker.max_attempts)
    Worker(sqlite_engine, settings, worker_id="w").run(until_idle=True)
    with session_scope(sqlite_engine) as s:
        task = s.get(Task, task_id)
    assert task.status == C.TaskStatus.FAILED
    assert "gave up after 3 lost runs" in task.message
    assert "the handler did not fail" in task.message
    assert _handler_runs(sqlite_engine) == 0


def test_admin_retry_starts_a_fresh_count_of_lost_runs(
    sqlite_engine: Engine, settings: Settings
) -> None:
    """Handler failures and admin retries never count towards giving up: after three
    failed runs, a retry runs the handler (it used to fail at once, 'gave up')."""
    task_id = _enqueue(sqlite_engine, H.FAIL)
    for _ in range(settings.worker.max_attempts + 1):
        Worker(sqlite_engine, settings, worker_id="w").run(until_idle=True)
        assert _status(sqlite_engine, task_id) == C.TaskStatus.FAILED
        with session_scope(sqlite_engine) as s:
            assert s.get(Task, task_id).message == "Task Status: FAILED Error: asked to fail"
            queue.retry(s, task_id)
    # lost runs after an admin retry are counted from zero, apart from the failures
    _lose_runs(sqlite_engine, 2)
    claimed = queue.claim(sqlite_engine, "w", 30)
    assert claimed is not None
    assert (claimed.attempt, claimed.lost_attempts) == (settings.worker.max_attempts + 4, 2)
    queue.finish(sqlite_engine, claimed, "w", C.TaskStatus.FAILED, "boom")
    with session_scope(sqlite_engine) as s:
        queue.retry(s, task_id)
        assert s.get(Task, task_id).lost_attempts == 0


def test_periodic_job_fires_once_per_period(sqlite_engine: Engine, settings: Settings) -> None:
    settings.scheduler.extra[H.TICK_JOB] = 60
    jobs = {H.TICK_JOB: REGISTRY.periodic[H.TICK_JOB]}
    assert sync_periodic_jobs(sqlite_engine, jobs, settings) == [H.TICK_JOB]
    now = utcnow() + timedelta(seconds=60)  # first due one interval after scheduling
    assert fire_due_jobs(sqlite_engine, now - timedelta(seconds=2)) == []
    first = fire_due_jobs(sqlite_engine, now)
    assert len(first) == 1
    assert fire_due_jobs(sqlite_engine, now + timedelta(seconds=30)) == []
    assert len(fire_due_jobs(sqlite_engine, now + timedelta(seconds=61))) == 1
    # a long outage fires once, not once per missed period
    assert len(fire_due_jobs(sqlite_engine, now + timedelta(hours=5))) == 1
    with session_scope(sqlite_engine) as s:
        job = s.get(PeriodicJob, H.TICK_JOB)
        assert job.next_run_at > now + timedelta(hours=5)
        keys = list(s.scalars(select(Task.periodic_key)))
    assert len(keys) == len(set(keys)) == 3


def test_a_shortened_interval_takes_effect_at_once(
    sqlite_engine: Engine, settings: Settings
) -> None:
    settings.scheduler.extra[H.TICK_JOB] = 3600
    jobs = {H.TICK_JOB: REGISTRY.periodic[H.TICK_JOB]}
    sync_periodic_jobs(sqlite_engine, jobs, settings)
    settings.scheduler.extra[H.TICK_JOB] = 5
    sync_periodic_jobs(sqlite_engine, jobs, settings)  # a worker restarted with new settings
    assert len(fire_due_jobs(sqlite_engine, utcnow() + timedelta(seconds=6))) == 1
    # a longer interval keeps the slot already planned
    settings.scheduler.extra[H.TICK_JOB] = 7200
    sync_periodic_jobs(sqlite_engine, jobs, settings)
    with session_scope(sqlite_engine) as s:
        job = s.get(PeriodicJob, H.TICK_JOB)
        assert (job.interval_s, job.next_run_at < utcnow() + timedelta(seconds=60)) == (7200, True)


def test_a_job_switched_off_stops_firing(sqlite_engine: Engine, settings: Settings) -> None:
    settings.scheduler.extra[H.TICK_JOB] = 5
    jobs = {H.TICK_JOB: REGISTRY.periodic[H.TICK_JOB]}
    assert sync_periodic_jobs(sqlite_engine, jobs, settings) == [H.TICK_JOB]
    settings.scheduler.extra[H.TICK_JOB] = 0
    assert sync_periodic_jobs(sqlite_engine, jobs, settings) == []
    assert fire_due_jobs(sqlite_engine, utcnow() + timedelta(hours=1)) == []
    with session_scope(sqlite_engine) as s:
        assert s.get(PeriodicJob, H.TICK_JOB) is None


def test_a_starting_worker_fires_the_jobs_due_from_the_rows_it_synced(
    sqlite_engine: Engine, settings: Settings
) -> None:
    """At its start a worker learns the due jobs from the rows its sync read (no second
    query): a job overdue since before the start fires once, a new one waits."""
    settings.scheduler.extra[H.TICK_JOB] = 60
    sync_periodic_jobs(sqlite_engine, {H.TICK_JOB: REGISTRY.periodic[H.TICK_JOB]}, settings)
    overdue = utcnow() - timedelta(seconds=1)
    with session_scope(sqlite_engine) as s:
        s.execute(update(PeriodicJob).values(next_run_at=overdue))
    Worker(sqlite_engine, settings, worker_id="w").run(until_idle=True)
    Worker(sqlite_engine, settings, worker_id="w").run(until_idle=True)
    with session_scope(sqlite_engine) as s:
        fired = s.scalars(select(Task).where(Task.periodic_key.is_not(None))).all()
        assert [t.periodic_key for t in fired] == [f"{H.TICK_JOB}@{overdue.isoformat()}"]
        assert fired[0].status == C.TaskStatus.SUCCESS
        assert s.get(PeriodicJob, H.TICK_JOB).next_run_at > utcnow()


def test_next_slot_is_on_the_grid() -> None:
    due = utcnow()
    assert _next_slot(due, 10, due) == due + timedelta(seconds=10)
    assert _next_slot(due, 10, due + timedelta(seconds=25)) == due + timedelta(seconds=30)


def test_inline_runs_only_its_own_task(sqlite_engine: Engine, settings: Settings) -> None:
    """``--inline`` used to start a whole worker: it ran other people's tasks and due
    periodic jobs (host sanity marked hosts DOWN) and waited for every task anywhere."""
    settings.scheduler.extra[H.TICK_JOB] = 60
    sync_periodic_jobs(sqlite_engine, {H.TICK_JOB: REGISTRY.periodic[H.TICK_JOB]}, settings)
    with session_scope(sqlite_engine) as s:
        s.execute(update(PeriodicJob).values(next_run_at=utcnow() - timedelta(seconds=1)))
    other = _enqueue(sqlite_engine, H.ECHO, parameters={"message": "someone else's"})
    stuck = _enqueue(sqlite_engine, H.SLEEP)
    with session_scope(sqlite_engine) as s:  # a task another worker holds (and lost)
        s.execute(
            update(Task)
            .where(Task.id == stuck)
            .values(status=C.TaskStatus.PROCESSING, lease_owner="elsewhere",
                    lease_expires_at=utcnow() - timedelta(seconds=1))
        )  # fmt: skip
    mine = _enqueue(sqlite_engine, H.ECHO, parameters={"message": "mine"})
    assert tasks.inline_runner(sqlite_engine, SYSTEM, settings, [mine])() == 1
    assert _status(sqlite_engine, mine) == C.TaskStatus.SUCCESS
    assert _status(sqlite_engine, other) == C.TaskStatus.PENDING
    assert _status(sqlite_engine, stuck) == C.TaskStatus.PROCESSING  # not recovered here
    with session_scope(sqlite_engine) as s:
        assert s.scalar(select(func.count()).select_from(Task)) == 3  # no periodic task
        assert s.get(PeriodicJob, H.TICK_JOB).next_run_at < utcnow()


def _claims(statements: list[str]) -> int:
    return sum(1 for s in statements if s.startswith("UPDATE task_queue SET status=?, started_at"))


def test_the_last_task_s_end_tells_a_worker_running_until_idle_that_it_is_done(
    sqlite_engine: Engine, settings: Settings
) -> None:
    """Its finish asks whether any task is unfinished: no claim after it (one claim in
    all); a task queued while it ran is still run (its end found one unfinished)."""
    settings.worker.poll_interval_s = 3600  # no housekeeping round after the first
    first = _enqueue(sqlite_engine, H.ECHO)
    with counted() as seen:
        assert Worker(sqlite_engine, settings, worker_id="w").run(until_idle=True) == 1
    assert _status(sqlite_engine, first) == C.TaskStatus.SUCCESS
    assert _claims(seen) == 1
    _enqueue(sqlite_engine, H.SPAWNS)
    worker = Worker(sqlite_engine, settings, worker_id="w", concurrency=1)  # one at a time
    with counted() as seen:
        assert worker.run(until_idle=True) == 2
    assert _claims(seen) == 2
    with session_scope(sqlite_engine) as s:
        assert {t.status for t in s.scalars(select(Task))} == {C.TaskStatus.SUCCESS}


def test_a_task_s_end_says_whether_tasks_of_its_set_are_unfinished(
    sqlite_engine: Engine,
) -> None:
    mine, other = _enqueue(sqlite_engine), _enqueue(sqlite_engine)
    claimed = queue.claim(sqlite_engine, "w", 30, only=[mine])
    assert claimed is not None
    ended = queue.end_task(
        sqlite_engine, claimed, "w", C.TaskStatus.SUCCESS, "ok", idle_check=True, only=[mine]
    )
    assert ended == queue.Ended(kept=True, queue_done=True)  # the other is not in its set
    claimed = queue.claim(sqlite_engine, "w", 30)
    assert claimed is not None and claimed.id == other
    assert queue.end_task(sqlite_engine, claimed, "w", C.TaskStatus.SUCCESS, "ok") == (True, False)
    _enqueue(sqlite_engine)
    assert queue.end_task(
        sqlite_engine, claimed, "w", C.TaskStatus.SUCCESS, "twice", idle_check=True
    ) == (False, False)  # the lease is gone: nothing written, nothing asked
    third = queue.claim(sqlite_engine, "w", 30)
    assert third is not None
    fourth = _enqueue(sqlite_engine)
    ended = queue.end_task(sqlite_engine, third, "w", C.TaskStatus.SUCCESS, "ok", idle_check=True)
    assert ended == (True, False)  # the fourth waits
    assert _status(sqlite_engine, fourth) == C.TaskStatus.PENDING


def test_a_starting_worker_recovers_an_expired_lease_and_runs_the_task(
    sqlite_engine: Engine, settings: Settings
) -> None:
    """The housekeeping transaction only probes for expired leases; the recovery (in a
    transaction of its own) and a claim follow when one expired."""
    task_id = _enqueue(sqlite_engine, H.ECHO)
    assert queue.claim(sqlite_engine, "dead", 30) is not None
    with session_scope(sqlite_engine) as s:
        s.execute(update(Task).values(lease_expires_at=utcnow() - timedelta(seconds=1)))
    assert Worker(sqlite_engine, settings, worker_id="w").run(until_idle=True) == 1
    with session_scope(sqlite_engine) as s:
        task = s.get(Task, task_id)
        assert (task.status, task.lost_attempts, task.attempts) == (C.TaskStatus.SUCCESS, 1, 2)
    assert [e[0] for e in _events(sqlite_engine, task_id)] == [
        C.TaskStatus.RETRY,
        C.TaskStatus.SUCCESS,
    ]
