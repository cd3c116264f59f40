"""Periodic jobs that fire exactly once per period, however many workers run.

Each job has a row in ``periodic_job``. A worker that sees the job due moves
``next_run_at`` forward with a compare-and-set (``WHERE next_run_at = <what I read>``) and,
in the same transaction, enqueues the job's task with ``periodic_key = <job>@<slot>``
(unique). Only one worker's update can match, and the unique key guards the task row too.
Missed periods (all workers down) are not replayed: the job fires once and skips ahead.
A new job first fires one interval after it is scheduled (a daily snapshot job must not
snapshot everything the moment a worker starts); a job whose interval is shortened fires
at most one new interval later.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from sqlalchemy import Engine, select, update
from sqlalchemy.exc import IntegrityError

from baadal.config import Settings
from baadal.db.models import PeriodicJob
from baadal.db.session import session_scope
from baadal.tasks.queue import enqueue
from baadal.timeutil import utcnow


def sync_periodic_jobs(engine: Engine, jobs: dict[str, str], settings: Settings) -> list[str]:
    """Create or update rows for the registered jobs that have an interval configured."""
    scheduled = []
    with session_scope(engine) as session:
        # one query for all rows (every worker start, and every command that runs a Worker)
        rows = {row.name: row for row in session.scalars(select(PeriodicJob))}
        for name, task_type in sorted(jobs.items()):
            interval = settings.job_interval(name)
            row = rows.get(name)
            if not interval or interval <= 0:
                if row is not None:  # switched off: it must stop firing
                    session.delete(row)
                continue
            if row is None:
                # several workers start at once: the first insert wins, the others skip
                try:
                    with session.begin_nested():
                        session.add(
                            PeriodicJob(
                                name=name,
                                task_type=task_type,
                                interval_s=interval,
                                next_run_at=utcnow() + timedelta(seconds=interval),
                            )
                        )
                except IntegrityError:
                    pass
            elif row.interval_s != interval or row.task_type != task_type:
                row.interval_s = interval
                row.task_type = task_type
                # a shortened interval must not wait out the old, longer one
                row.next_run_at = min(row.next_run_at, utcnow() + timedelta(seconds=interval))
            scheduled.append(name)
    return scheduled


def _next_slot(due: datetime, interval_s: float, now: datetime) -> datetime:
    """The first slot strictly after ``now`` on the job's grid."""
    periods = math.floor((now - due).total_seconds() / interval_s) + 1
    return due + timedelta(seconds=periods * interval_s)


def fire_due_jobs(engine: Engine, now: datetime | None = None) -> list[int]:
    """Enqueue one task per due job; returns the ids of the tasks this caller created."""
    now = now or utcnow()
    created: list[int] = []
    with session_scope(engine) as session:
        due = list(session.scalars(select(PeriodicJob).where(PeriodicJob.next_run_at <= now)))
        session.expunge_all()
    for job in due:
        with session_scope(engine) as session:
            won = session.execute(
                update(PeriodicJob)
                .where(PeriodicJob.name == job.name, PeriodicJob.next_run_at == job.next_run_at)
                .values(
                    next_run_at=_next_slot(job.next_run_at, job.interval_s, now), last_run_at=now
                )
            ).rowcount
            if won != 1:
                continue
            try:
                with session.begin_nested():
                    task = enqueue(
                        session,
                        job.task_type,
                        parameters={"periodic_job": job.name, "slot": job.next_run_at},
                        periodic_key=f"{job.name}@{job.next_run_at.isoformat()}",
                    )
            except IntegrityError:
                continue
            created.append(task.id)
    return created
