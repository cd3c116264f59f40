"""The task engine with real worker processes, on SQLite and PostgreSQL.

What users rely on: a task whose worker is killed still ends (once); several workers never
run one task twice; a VM's tasks run one at a time in order; periodic jobs fire once per
period whatever the number of workers.
"""

from __future__ import annotations

import itertools
import signal
import time
from collections import defaultdict
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from baadal import constants as C
from baadal.db.models import PeriodicJob, Task, TaskEvent, VMEventLog
from baadal.db.session import session_scope
from baadal.tasks import queue
from tests.support import handlers as H
from tests.support.workers import start_worker, wait_ok

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _runs(engine: Engine, kind: str = "run") -> list[VMEventLog]:
    with session_scope(engine) as s:
        return list(s.scalars(select(VMEventLog).where(VMEventLog.attribute.like(f"{kind}:%"))))


def _task_of(row: VMEventLog) -> int:
    return int(row.attribute.split(":")[1])


def test_sigkilled_worker_task_is_recovered_and_ends_once(
    engine: Engine, db_url: str, tmp_path: Path
) -> None:
    marker = tmp_path / "crashy.pid"
    with session_scope(engine) as s:
        task_id = queue.enqueue(s, H.CRASHY, vm_id=5, parameters={"marker": str(marker)}).id
        later_id = queue.enqueue(s, H.ECHO, vm_id=5).id  # must wait for the crashed one
    victim = start_worker(db_url, tmp_path, "victim", until_idle=False, worker__lease_s="2")
    deadline = time.monotonic() + 60
    while not marker.exists():
        assert victim.poll() is None, victim.stdout.read().decode()
        assert time.monotonic() < deadline, "handler never started"
        time.sleep(0.05)
    assert int(marker.read_text()) == victim.pid
    victim.send_signal(signal.SIGKILL)
    victim.wait(10)
    killed_at = time.monotonic()

    rescuer = start_worker(db_url, tmp_path, "rescuer", worker__lease_s="2")
    wait_ok(rescuer)
    assert time.monotonic() - killed_at < 30

    with session_scope(engine) as s:
        task = s.get(Task, task_id)
        events = list(s.scalars(select(TaskEvent).where(TaskEvent.task_id == task_id)))
        later = s.get(Task, later_id)
    assert (task.status, task.message, task.attempts) == (
        C.TaskStatus.SUCCESS,
        "done after recovery",
        2,
    )
    assert [(e.status, e.worker) for e in events] == [
        (C.TaskStatus.RETRY, "victim"),
        (C.TaskStatus.SUCCESS, "rescuer"),
    ]
    assert "lease expired" in events[0].message
    finals = [e for e in events if e.status in C.TASK_FINAL]
    assert len(finals) == 1
    runs = [r for r in _runs(engine) if _task_of(r) == task_id]
    assert len(runs) == 1 and runs[0].vm_identity == "rescuer"
    assert len(_runs(engine, "compensate")) == 1
    assert later.status == C.TaskStatus.SUCCESS
    assert later.started_at >= task.finished_at


@pytest.mark.postgres
def test_four_workers_on_postgres_never_run_a_task_twice(
    pg_engine: Engine, pg_url: str, tmp_path: Path
) -> None:
    n = 120
    with session_scope(pg_engine) as s:
        ids = [queue.enqueue(s, H.SLEEP, parameters={"seconds": 0.02}).id for _ in range(n)]
    workers = [start_worker(pg_url, tmp_path, f"w{i}", concurrency=3) for i in range(4)]
    for w in workers:
        wait_ok(w)
    runs = _runs(pg_engine)
    per_task = defaultdict(list)
    for r in runs:
        per_task[_task_of(r)].append(r.vm_identity)
    assert sorted(per_task) == ids
    assert all(len(v) == 1 for v in per_task.values()), "a task ran twice"
    assert len({w for v in per_task.values() for w in v}) >= 2, "only one worker did work"
    with session_scope(pg_engine) as s:
        statuses = set(s.scalars(select(Task.status)))
        finals = s.scalars(
            select(TaskEvent.task_id).where(TaskEvent.status.in_(C.TASK_FINAL))
        ).all()
    assert statuses == {C.TaskStatus.SUCCESS}
    assert sorted(finals) == ids


def test_tasks_of_one_vm_run_one_at_a_time_in_order(
    engine: Engine, db_url: str, tmp_path: Path
) -> None:
    with session_scope(engine) as s:
        for _ in range(8):
            for vm in (1, 2, 3):
                queue.enqueue(
                    s, H.SLEEP, vm_id=vm, parameters={"seconds": 0.03}, allow_duplicate=True
                )
    workers = [start_worker(db_url, tmp_path, f"w{i}", concurrency=3) for i in range(3)]
    for w in workers:
        wait_ok(w)
    by_vm: dict[int, list[tuple[int, datetime, datetime]]] = defaultdict(list)
    for r in _runs(engine):
        by_vm[r.vm_id].append(
            (_task_of(r), datetime.fromisoformat(r.old_value), datetime.fromisoformat(r.new_value))
        )
    assert sorted(by_vm) == [1, 2, 3]
    overlapping_vms = 0
    for runs in by_vm.values():
        assert len(runs) == 8
        by_start = sorted(runs, key=lambda r: r[1])
        assert [r[0] for r in by_start] == sorted(r[0] for r in runs), "out of order"
        for prev, nxt in itertools.pairwise(by_start):
            assert prev[2] <= nxt[1], "two tasks of one VM overlapped"
    # different VMs did run in parallel (the ordering is per VM, not global)
    all_runs = sorted((r for runs in by_vm.values() for r in runs), key=lambda r: r[1])
    for prev, nxt in itertools.pairwise(all_runs):
        overlapping_vms += prev[2] > nxt[1]
    assert overlapping_vms > 0


def _ticks(engine: Engine) -> int:
    with session_scope(engine) as s:
        return (
            s.scalar(
                select(func.count())
                .select_from(Task)
                .where(Task.periodic_key.like(f"{H.TICK_JOB}@%"))
            )
            or 0
        )


def test_periodic_job_fires_once_per_period_with_three_workers(
    engine: Engine, db_url: str, tmp_path: Path
) -> None:
    interval = 1
    extra = f'{{"{H.TICK_JOB}": {interval}}}'
    workers = [
        start_worker(db_url, tmp_path, f"w{i}", until_idle=False, scheduler__extra=extra)
        for i in range(3)
    ]
    started = time.monotonic()
    # workers take a while to start on a loaded machine: count from the first tick
    deadline = started + 60
    while _ticks(engine) == 0:
        assert time.monotonic() < deadline, "no periodic tick within 60 s"
        time.sleep(0.1)
    time.sleep(5)
    for w in workers:
        w.send_signal(signal.SIGTERM)
    for w in workers:
        wait_ok(w, timeout=30)
    elapsed = time.monotonic() - started
    with session_scope(engine) as s:
        ticks = list(
            s.scalars(
                select(Task).where(Task.periodic_key.like(f"{H.TICK_JOB}@%")).order_by(Task.id)
            )
        )
    slots = [datetime.fromisoformat(t.parameters["slot"]) for t in ticks]
    assert len(slots) == len(set(slots))
    # every period from the first fired slot up to the job's next slot fired exactly once:
    # consecutive slots one interval apart, the last one right before next_run_at
    assert 3 <= len(slots) <= elapsed + 1
    with session_scope(engine) as s:
        next_run = s.get(PeriodicJob, H.TICK_JOB).next_run_at
    assert (next_run - slots[-1]).total_seconds() == interval
    gaps = {(b - a).total_seconds() for a, b in itertools.pairwise(slots)}
    assert gaps == {float(interval)}, gaps
    runs = _runs(engine)
    assert sorted(_task_of(r) for r in runs) == sorted(
        t.id for t in ticks if t.status == C.TaskStatus.SUCCESS
    )
