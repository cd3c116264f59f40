"""Task engine benchmark on PostgreSQL.

(a) Tasks that each wait 50 ms (as a libvirt call would): 1 worker process vs 4 worker
    processes, throughput ratio (target >= 3.5x). Throughput is measured from the task
    rows (first start to last finish), so process start-up does not count.
(b) The engine's own cost per task: enqueue + claim + finish with an empty handler, in
    one process, ms per task; the baseline is one trivial INSERT + UPDATE + SELECT round
    trip set on the same database, so the ratio says what the engine adds.

Run from the repository root: ``.venv/bin/python bench/queue.py [--tasks 200]``.
"""

from __future__ import annotations

import sys
from pathlib import Path

# this file is named like the stdlib module: keep its folder off the import path
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import statistics
import tempfile
import time

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import delete, func, select, text
from tests.support import handlers as H
from tests.support import pg
from tests.support.workers import start_worker, wait_ok

from baadal import constants as C
from baadal.db.models import Task, TaskEvent
from baadal.db.schema import upgrade
from baadal.db.session import make_engine, session_scope
from baadal.tasks import queue


def throughput(url: str, engine, workers: int, n: int, home: Path) -> float:
    with session_scope(engine) as s:
        s.execute(delete(TaskEvent))
        s.execute(delete(Task))
        for _ in range(n):
            queue.enqueue(s, H.SLEEP, parameters={"seconds": 0.05})
    procs = [start_worker(url, home, f"bench{i}", concurrency=1) for i in range(workers)]
    for p in procs:
        wait_ok(p, timeout=600)
    with session_scope(engine) as s:
        first, last, done = s.execute(
            select(func.min(Task.started_at), func.max(Task.finished_at), func.count()).where(
                Task.status == C.TaskStatus.SUCCESS
            )
        ).one()
    assert done == n, f"only {done}/{n} tasks succeeded"
    return n / (last - first).total_seconds()


def engine_cost(engine, n: int) -> tuple[float, float]:
    """ms per task for enqueue+claim+finish, and for the raw-SQL baseline."""
    per_task = []
    for _ in range(n):
        t0 = time.perf_counter()
        with session_scope(engine) as s:
            queue.enqueue(s, H.ECHO)  # never run: claimed and finished here
        claimed = queue.claim(engine, "bench", 30)
        queue.finish(engine, claimed, "bench", C.TaskStatus.SUCCESS, "ok")
        per_task.append(time.perf_counter() - t0)
    baseline = []
    with engine.connect() as conn:
        conn.execute(text("CREATE TEMP TABLE b (id serial primary key, s int)"))
        conn.commit()
        for _ in range(n):
            t0 = time.perf_counter()
            new_id = conn.execute(text("INSERT INTO b (s) VALUES (1) RETURNING id")).scalar()
            conn.commit()
            conn.execute(text("SELECT id FROM b WHERE s = 1 AND id = :i"), {"i": new_id})
            conn.execute(text("UPDATE b SET s = 2 WHERE id = :i"), {"i": new_id})
            conn.commit()
            conn.execute(text("UPDATE b SET s = 3 WHERE id = :i"), {"i": new_id})
            conn.commit()
            baseline.append(time.perf_counter() - t0)
    return statistics.median(per_task) * 1000, statistics.median(baseline) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=200)
    args = parser.parse_args()
    pg.ensure_server()
    url = pg.create_database()
    engine = make_engine(url)
    try:
        upgrade(engine)
        with tempfile.TemporaryDirectory() as home:
            one = throughput(url, engine, 1, args.tasks, Path(home))
            four = throughput(url, engine, 4, args.tasks, Path(home))
        ratio = four / one
        print(f"(a) 50 ms tasks: 1 worker {one:.1f} tasks/s, 4 workers {four:.1f} tasks/s")
        print(
            f"    throughput ratio 4/1 = {ratio:.2f}x (target >= 3.5x) "
            f"{'OK' if ratio >= 3.5 else 'MISSED'}"
        )
        cost, base = engine_cost(engine, 300)
        print(f"(b) engine cost per task (enqueue+claim+finish, empty handler): {cost:.2f} ms")
        print(
            f"    raw SQL baseline (3 commits on one connection): {base:.2f} ms; "
            f"ratio {cost / base:.2f}x"
        )
    finally:
        engine.dispose()
        pg.drop_database(url)


if __name__ == "__main__":
    main()
