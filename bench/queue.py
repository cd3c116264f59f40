"""Task engine benchmark on PostgreSQL.

(a) Tasks that each wait 50 ms (as a libvirt call would): 1 worker process vs 4 worker
    processes, throughput ratio (target >= 3.5x). Throughput is measured from the task
    rows (first start to last finish), so process start-up does not count.
(b) The engine's own cost per task: enqueue + claim + finish with an empty handler, in
    one process, ms per task; the baseline is one trivial INSERT + UPDATE + SELECT round
    trip set in three commits on the same database, so the ratio says what the engine
    adds: once on a temporary table (commits that never wait for the disk) and once on
    an ordinary table (commits that wait for the WAL flush, like the engine's; the fair
    one: the engine's enqueue and finish must be durable). Wall time and this process's
    CPU time (the client's Python), medians; the three alternate task by task.
(c) Enqueue-to-start latency of an idle worker process (poll interval 0.5 s, the
    default): tasks queued one at a time at random moments, started_at - created_at,
    with the worker polling only (``[worker] listen = false``) and with LISTEN/NOTIFY.

Run from the repository root: ``.venv/bin/python bench/queue.py [--tasks 200] [--parts abc]``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench import use_own_tree

use_own_tree()

import argparse
import random
import statistics
import tempfile
import time

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


def _raw_three_commits(conn, table: str) -> None:
    """One INSERT, SELECT + UPDATE, UPDATE, in three commits."""
    new_id = conn.execute(text(f"INSERT INTO {table} (s) VALUES (1) RETURNING id")).scalar()
    conn.commit()
    conn.execute(text(f"SELECT id FROM {table} WHERE s = 1 AND id = :i"), {"i": new_id})
    conn.execute(text(f"UPDATE {table} SET s = 2 WHERE id = :i"), {"i": new_id})
    conn.commit()
    conn.execute(text(f"UPDATE {table} SET s = 3 WHERE id = :i"), {"i": new_id})
    conn.commit()


def _engine_task(engine) -> None:
    with session_scope(engine) as s:
        queue.enqueue(s, H.ECHO)  # never run: claimed and finished here
    claimed = queue.claim(engine, "bench", 30)
    queue.finish(engine, claimed, "bench", C.TaskStatus.SUCCESS, "ok")


def engine_cost(engine, n: int) -> dict[str, tuple[float, float]]:
    """(wall ms, CPU ms) per task for enqueue+claim+finish and for the raw-SQL
    baselines: a temporary table (its commits write no WAL, so they never wait for the
    disk) and an ordinary one (each commit waits for the WAL flush, as the task tables'
    do). The three alternate, so a busy moment of the machine hits all of them; CPU is
    this process's (the client's Python and driver), not the server's."""
    samples: dict[str, list[tuple[float, float]]] = {"engine": [], "temp": [], "durable": []}
    with engine.connect() as conn:
        conn.execute(text("CREATE TEMP TABLE b (id serial primary key, s int)"))
        conn.execute(text("CREATE TABLE bench_durable (id serial primary key, s int)"))
        conn.commit()
        runs = {
            "engine": lambda: _engine_task(engine),
            "temp": lambda: _raw_three_commits(conn, "b"),
            "durable": lambda: _raw_three_commits(conn, "bench_durable"),
        }
        for _ in range(n):
            for name, run in runs.items():
                t0, c0 = time.perf_counter(), time.process_time()
                run()
                samples[name].append((time.perf_counter() - t0, time.process_time() - c0))
        conn.execute(text("DROP TABLE bench_durable"))
        conn.commit()
    return {
        name: (
            statistics.median(w for w, _ in values) * 1000,
            statistics.median(c for _, c in values) * 1000,
        )
        for name, values in samples.items()
    }


def wake_latency(url: str, engine, home: Path, listen: bool, n: int) -> list[float]:
    """Seconds from enqueue to start for ``n`` tasks queued one at a time at random
    moments while one worker process waits for work."""
    with session_scope(engine) as s:
        s.execute(delete(TaskEvent))
        s.execute(delete(Task))
    proc = start_worker(
        url,
        home,
        "idle",
        until_idle=False,
        worker__poll_interval_s="0.5",
        worker__listen=str(listen).lower(),
    )
    latencies = []
    try:
        for _ in range(n + 1):
            time.sleep(random.uniform(0.2, 0.7))  # the worker is waiting by now
            with session_scope(engine) as s:
                task_id = queue.enqueue(s, H.ECHO).id
            deadline = time.monotonic() + 60
            while True:
                with session_scope(engine) as s:
                    task = s.get(Task, task_id)
                    if task.status == C.TaskStatus.SUCCESS:
                        latencies.append((task.started_at - task.created_at).total_seconds())
                        break
                assert time.monotonic() < deadline, "the worker did not run the task"
                time.sleep(0.01)
    finally:
        proc.terminate()
        proc.wait()
    return latencies[1:]  # the first task also waits for the worker's start-up


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--wakes", type=int, default=20, help="tasks of (c) per mode")
    parser.add_argument("--parts", default="abc", help="which of (a), (b), (c) to run")
    args = parser.parse_args()
    pg.ensure_server()
    url = pg.create_database()
    engine = make_engine(url)
    try:
        upgrade(engine)
        if "a" in args.parts:
            throughputs(url, engine, args.tasks)
        if "b" in args.parts:
            per_task_cost(engine)
        if "c" in args.parts:
            wake_latencies(url, engine, args.wakes)
    finally:
        engine.dispose()
        pg.drop_database(url)


def throughputs(url: str, engine, n: int) -> None:
    with tempfile.TemporaryDirectory() as home:
        one = throughput(url, engine, 1, n, Path(home))
        four = throughput(url, engine, 4, n, Path(home))
    ratio = four / one
    print(f"(a) 50 ms tasks: 1 worker {one:.1f} tasks/s, 4 workers {four:.1f} tasks/s")
    print(
        f"    throughput ratio 4/1 = {ratio:.2f}x (target >= 3.5x) "
        f"{'OK' if ratio >= 3.5 else 'MISSED'}"
    )


def per_task_cost(engine) -> None:
    got = engine_cost(engine, 300)
    (cost, cost_cpu), (base, base_cpu), (durable, durable_cpu) = got.values()
    print("(b) per task, medians: wall ms / CPU ms of this process (client side)")
    print(f"    engine (enqueue+claim+finish, empty handler): {cost:.2f} / {cost_cpu:.2f}")
    print(
        f"    raw SQL, 3 commits, temporary table (no WAL): {base:.2f} / {base_cpu:.2f};"
        f" ratio {cost / base:.2f}x wall, {cost_cpu / base_cpu:.2f}x CPU"
    )
    print(
        f"    raw SQL, 3 commits, ordinary table (WAL flushed): {durable:.2f} /"
        f" {durable_cpu:.2f}; ratio {cost / durable:.2f}x wall, {cost_cpu / durable_cpu:.2f}x CPU"
    )


def wake_latencies(url: str, engine, n: int) -> None:
    print("(c) enqueue-to-start latency, idle worker process, poll interval 0.5 s")
    with tempfile.TemporaryDirectory() as home:
        for listen in (False, True):
            lat = sorted(wake_latency(url, engine, Path(home), listen, n))
            label = "LISTEN/NOTIFY" if listen else "polling only "
            print(
                f"    {label}: median {statistics.median(lat) * 1000:.1f} ms,"
                f" max {lat[-1] * 1000:.1f} ms ({len(lat)} tasks)"
            )


if __name__ == "__main__":
    main()
