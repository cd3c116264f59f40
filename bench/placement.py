"""find_new_host at scale: 1,000 hosts and 20,000 VMs on SQLite (target p50 < 1 ms).

Baseline, measured in the same run on the same database: the straightforward placement
that aggregates every VM's RAM and vCPUs per host (one GROUP BY over vm_data) and picks
in Python. The ratio says what the per-host reserved counters buy.

Run from the repository root: ``.venv/bin/python bench/placement.py``.
"""

from __future__ import annotations

import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench import use_own_tree

use_own_tree()

from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from baadal import constants as C
from baadal.config import load_settings
from baadal.db.models import VM, Host
from baadal.db.schema import upgrade
from baadal.db.session import make_engine, session_scope
from baadal.placement import find_new_host, recompute_host_usage

HOSTS, VMS, CALLS = 1000, 20000, 2000


def populate(session: Session) -> None:
    rng = random.Random(7)
    session.execute(
        insert(Host),
        [
            {
                "host_name": f"h{i}",
                "address": f"10.1.{i // 250}.{i % 250 + 1}",
                "CPUs": rng.choice([16, 32, 64]),
                "RAM": rng.choice([64, 128, 256]),
                "libvirt_uri": f"test:///h{i}",
                "status": C.HostStatus.UP if i % 10 else C.HostStatus.DOWN,
            }
            for i in range(HOSTS)
        ],
    )
    session.execute(
        insert(VM),
        [
            {
                "vm_name": f"vm{i}",
                "vm_identity": f"ORG_u_vm{i}",
                "RAM": rng.choice([256, 512, 1024, 2048, 4096]),
                "vCPU": rng.choice([1, 1, 2, 4]),
                "host_id": rng.randrange(1, HOSTS + 1),
                "status": rng.choice([C.VMStatus.RUNNING, C.VMStatus.SHUTDOWN]),
            }
            for i in range(VMS)
        ],
    )
    recompute_host_usage(session)


def naive_find_new_host(session: Session, ram_mb: int, vcpu: int) -> int:
    used = {
        h: (r, c)
        for h, r, c in session.execute(
            select(VM.host_id, func.sum(VM.RAM), func.sum(VM.vCPU)).group_by(VM.host_id)
        )
    }
    best: tuple[float, float, int] | None = None
    for host_id, ram_gb, cpus in session.execute(
        select(Host.id, Host.RAM, Host.CPUs).where(Host.status == C.HostStatus.UP)
    ):
        r, c = used.get(host_id, (0, 0))
        ram_left, cpu_left = ram_gb * 1024 * 2 - r - ram_mb, cpus * 2 - c - vcpu
        key = (ram_left, cpu_left, -host_id)
        if cpus >= vcpu and ram_left >= 0 and cpu_left >= 0 and (best is None or key > best):
            best = key
    assert best is not None
    return -best[2]


def timed(session: Session, fn: Callable[[Session, int, int], object], n: int) -> list[float]:
    rng = random.Random(1)
    samples = []
    for _ in range(n):
        ram, vcpu = rng.choice([256, 1024, 4096]), rng.choice([1, 2, 4])
        t0 = time.perf_counter()
        fn(session, ram, vcpu)
        samples.append((time.perf_counter() - t0) * 1000)
    return samples


def pct(samples: list[float], p: float) -> float:
    return statistics.quantiles(samples, n=100)[int(p) - 1]


def main() -> None:
    settings = load_settings()
    with tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(f"sqlite:///{tmp}/bench.db")
        upgrade(engine)
        with session_scope(engine) as s:
            populate(s)
        with session_scope(engine) as s:
            fast = timed(s, lambda s, r, c: find_new_host(s, r, c, settings=settings), CALLS)
            naive = timed(s, naive_find_new_host, CALLS // 10)
            # both must agree on the answer
            for ram, vcpu in [(256, 1), (4096, 4)]:
                assert find_new_host(s, ram, vcpu, settings=settings).id == naive_find_new_host(
                    s, ram, vcpu
                )
        engine.dispose()
    p50, p99 = pct(fast, 50), pct(fast, 99)
    n50 = pct(naive, 50)
    print(f"find_new_host, {HOSTS} hosts / {VMS} VMs, SQLite, {CALLS} calls")
    print(
        f"  p50 {p50:.3f} ms   p99 {pct(fast, 99):.3f} ms   target p50 < 1 ms: "
        f"{'OK' if p50 < 1 else 'MISSED'}"
    )
    print(f"  baseline (aggregate over all VMs per call): p50 {n50:.3f} ms")
    print(f"  ratio baseline/find_new_host p50 = {n50 / p50:.1f}x  (p99 {p99:.3f} ms)")


if __name__ == "__main__":
    main()
