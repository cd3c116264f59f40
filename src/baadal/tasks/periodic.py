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
from typing import NamedTuple

from sqlalchemy import Connection, Engine, bindparam, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from baadal.config import Settings
from baadal.db.models import PeriodicJob
from baadal.db.session import session_scope
from baadal.tasks.queue import enqueue
from baadal.timeutil import utcnow


class JobRow(NamedTuple):
    """A ``periodic_job`` row as plain values."""

    name: str
    task_type: str
    interval_s: float
    next_run_at: datetime
    last_run_at: datetime | None


_JOBS = select(*(PeriodicJob.__table__.c[name] for name in JobRow._fields))


def sync_periodic_jobs(engine: Engine, jobs: dict[str, str], settings: Settings) -> list[str]:
    """Create or update rows for the registered jobs that have an interval configured;
    their names."""
    with engine.begin() as conn:
        rows = sync_periodic_jobs_in(conn, jobs, settings)
    return [name for name in sorted(jobs) if name in rows]


def sync_periodic_jobs_in(
    conn: Connection, jobs: dict[str, str], settings: Settings
) -> dict[str, JobRow]:
    """:func:`sync_periodic_jobs` in the caller's transaction; reads plain rows and
    writes only what differs (every worker start, and every command that runs a Worker,
    pays for it). Every row of the table as it stands now, by name (a job another
    worker created meanwhile left out), so the caller knows the due jobs without
    asking again."""
    table = PeriodicJob.__table__
    rows = {row.name: JobRow(*row) for row in conn.execute(_JOBS)}
    for name, task_type in sorted(jobs.items()):
        interval = settings.job_interval(name)
        row = rows.get(name)
        if not interval or interval <= 0:
            if row is not None:  # switched off: it must stop firing
                conn.execute(delete(table).where(table.c.name == name))
                del rows[name]
            continue
        if row is None:
            # several workers start at once: the first insert wins, the others skip
            new = JobRow(name, task_type, interval, utcnow() + timedelta(seconds=interval), None)
            try:
                with conn.begin_nested():
                    conn.execute(insert(table).values(new._asdict()))
                rows[name] = new
            except IntegrityError:
                pass
        elif row.interval_s != interval or row.task_type != task_type:
            # a shortened interval must not wait out the old, longer one
            next_run_at = min(row.next_run_at, utcnow() + timedelta(seconds=interval))
            conn.execute(
                update(table)
                .where(table.c.name == name)
                .values(interval_s=interval, task_type=task_type, next_run_at=next_run_at)
            )
            rows[name] = row._replace(
                interval_s=interval, task_type=task_type, next_run_at=next_run_at
            )
    return rows


def _next_slot(due: datetime, interval_s: float, now: datetime) -> datetime:
    """The first slot strictly after ``now`` on the job's grid."""
    periods = math.floor((now - due).total_seconds() / interval_s) + 1
    return due + timedelta(seconds=periods * interval_s)


_DUE = _JOBS.where(PeriodicJob.__table__.c.next_run_at <= bindparam("now"))


def due_jobs(conn: Connection, now: datetime) -> list[JobRow]:
    """The jobs due at ``now``, as plain rows (:func:`fire_job` takes each in its own
    transaction); a prebuilt statement: every worker round with housekeeping runs it."""
    return [JobRow(*row) for row in conn.execute(_DUE, {"now": now})]


def fire_job(engine: Engine, job: JobRow, now: datetime) -> int | None:
    """Enqueue the due ``job``'s task unless another worker fired it first; the id of
    the task this caller created, or None."""
    with session_scope(engine) as session:
        won = session.execute(
            update(PeriodicJob)
            .where(PeriodicJob.name == job.name, PeriodicJob.next_run_at == job.next_run_at)
            .values(next_run_at=_next_slot(job.next_run_at, job.interval_s, now), last_run_at=now)
        ).rowcount
        if won != 1:
            return None
        try:
            with session.begin_nested():
                task = enqueue(
                    session,
                    job.task_type,
                    parameters={"periodic_job": job.name, "slot": job.next_run_at},
                    periodic_key=f"{job.name}@{job.next_run_at.isoformat()}",
                )
        except IntegrityError:
            return None
        return task.id


def fire_due_jobs(engine: Engine, now: datetime | None = None) -> list[int]:
    """Enqueue one task per due job; returns the ids of the tasks this caller created."""
    now = now or utcnow()
    with engine.begin() as conn:
        due = due_jobs(conn, now)
    created = (fire_job(engine, job, now) for job in due)
    return [task_id for task_id in created if task_id is not None]
