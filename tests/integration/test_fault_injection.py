"""The task engine's promise under faults, at scale: mixed tasks (VMs placed and unplaced
with real reservations, plain tasks, failing tasks) run by 4 worker processes on
PostgreSQL while workers are SIGKILLed at random moments (and started again) and the
PostgreSQL server is restarted once mid-run. Afterwards every task ended exactly once,
nothing is left in PROCESSING, and no IP, MAC, VNC port, datastore space or domain is
held by a VM that is not placed, nor missing from one that is.

The default run has 300 tasks; ``BAADAL_FAULT_TASKS=1000`` runs the full-size one.
"""

from __future__ import annotations

import os
import random
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.exc import OperationalError

from baadal import constants as C
from baadal.config import Settings
from baadal.db.models import VM, Datastore, PrivateIpPool, SecurityDomain, Task, TaskEvent
from baadal.db.schema import upgrade
from baadal.db.session import make_engine, session_scope
from baadal.tasks import queue
from tests.support import handlers as H
from tests.support.cloud import fake_host_uri, make_cloud
from tests.support.pg import PrivateServer
from tests.support.workers import start_worker

pytestmark = [pytest.mark.integration, pytest.mark.postgres, pytest.mark.slow]

TASKS = int(os.environ.get("BAADAL_FAULT_TASKS", "300"))
WORKERS = 4
#: VMs taking turns being placed (the test cloud has 41 private addresses)
VMS = 30
#: the whole run's bound; it takes well under a minute per 300 tasks
RUN_LIMIT_S = 900


@pytest.fixture
def server() -> Iterator[PrivateServer]:
    """A server of this test's own: restarting the shared one would hit other tests."""
    srv = PrivateServer()
    srv.start()
    yield srv
    srv.stop()


def _queue_tasks(engine: Engine, template_id: int, domains: Path, rng: random.Random) -> None:
    """TASKS tasks in a random mix; each VM alternates place and unplace, in order."""
    with session_scope(engine) as s:
        research = s.scalar(select(SecurityDomain.id).where(SecurityDomain.name == "research"))
        vms = [
            VM(
                vm_name=f"f{i}",
                vm_identity=f"ADMIN~fault~f{i}",
                RAM=256,
                vCPU=1,
                template_id=template_id,
                security_domain_id=research,
                status=C.VMStatus.SHUTDOWN,
            )
            for i in range(VMS)
        ]
        s.add_all(vms)
        s.flush()
        placed = dict.fromkeys((vm.id for vm in vms), False)
        for _ in range(TASKS):
            roll = rng.random()
            if roll < 0.6:
                vm_id = rng.choice(list(placed))
                kind = H.UNPLACE if placed[vm_id] else H.PLACE
                placed[vm_id] = not placed[vm_id]
                queue.enqueue(
                    s, kind, vm_id=vm_id, parameters={"domains": str(domains)}, allow_duplicate=True
                )
            elif roll < 0.8:
                queue.enqueue(s, H.ECHO)
            elif roll < 0.95:
                queue.enqueue(s, H.SLEEP, parameters={"seconds": 0.02})
            else:
                queue.enqueue(s, H.FAIL)


def _unfinished(engine: Engine) -> int | None:
    """Tasks not ended yet; None while the database is away."""
    try:
        with session_scope(engine) as s:
            return s.scalar(
                select(func.count()).select_from(Task).where(Task.status.in_(C.TASK_UNFINISHED))
            )
    except OperationalError:
        return None


def _run_with_faults(
    engine: Engine, server: PrivateServer, home: Path, rng: random.Random
) -> tuple[int, bool]:
    """Keep 4 workers running, SIGKILL one at random moments, restart PostgreSQL once
    when half the tasks ended. Returns (workers killed, server restarted)."""

    def start(i: int) -> subprocess.Popen[bytes]:
        return start_worker(
            server.url,
            home,
            f"w{i}",
            worker__lease_s="2",
            worker__max_attempts="100",
        )

    workers = {i: start(i) for i in range(WORKERS)}
    kills, restarted = 0, False
    next_kill = time.monotonic() + rng.uniform(2, 5)
    deadline = time.monotonic() + RUN_LIMIT_S
    try:
        while (left := _unfinished(engine)) != 0:
            assert time.monotonic() < deadline, f"{left} tasks still unfinished"
            if left is not None and not restarted and left <= TASKS // 2:
                server.restart()
                restarted = True
            for i, proc in workers.items():
                if proc.poll() is not None:  # crashed when the server went, or idle
                    workers[i] = start(i)
            if time.monotonic() >= next_kill:
                victim = rng.choice(list(workers))
                workers[victim].kill()  # SIGKILL: wherever it is
                workers[victim].wait()
                workers[victim] = start(victim)
                kills += 1
                next_kill = time.monotonic() + rng.uniform(2, 5)
            time.sleep(0.1)
    finally:
        for proc in workers.values():
            proc.kill()
            proc.wait()
    return kills, restarted


def test_killed_workers_and_a_restarted_server_lose_and_leak_nothing(
    settings: Settings, tmp_path: Path, server: PrivateServer
) -> None:
    seed = int(os.environ.get("BAADAL_FAULT_SEED", str(random.randrange(1 << 30))))
    print(f"\nfault injection: {TASKS} tasks, seed {seed}")
    rng = random.Random(seed)
    engine = make_engine(server.url)
    upgrade(engine)
    uris = [fake_host_uri(tmp_path, f"h{i}") for i in range(1, 5)]
    cloud = make_cloud(engine, settings, tmp_path, uris)
    domains = tmp_path / "domains"
    domains.mkdir()
    _queue_tasks(engine, cloud.template_id, domains, rng)
    started = time.monotonic()
    kills, restarted = _run_with_faults(engine, server, tmp_path / "home", rng)
    print(f"ran in {time.monotonic() - started:.1f} s, {kills} workers killed")
    assert kills >= 1 and restarted

    with session_scope(engine) as s:
        every_id = set(s.scalars(select(Task.id)))  # with periodic jobs' tasks of a long run
        tasks = s.execute(
            select(Task.id, Task.task_type, Task.vm_id, Task.status, Task.finished_at).where(
                Task.periodic_key.is_(None)
            )
        ).all()
        final = Counter(
            s.scalars(select(TaskEvent.task_id).where(TaskEvent.status.in_(C.TASK_FINAL)))
        )
        vms = {vm.id: vm for vm in s.scalars(select(VM))}
        ds_used = s.scalar(select(func.sum(Datastore.used)))
        ips_held = s.scalar(
            select(func.count()).select_from(VM).where(VM.private_ip_id.is_not(None))
        )
        macs = s.scalar(
            select(func.count(PrivateIpPool.mac_addr.distinct())).where(
                PrivateIpPool.id.in_(select(VM.private_ip_id))
            )
        )
    # every task ended, exactly once, as its handler says: a handler whose database went
    # away in the restart gave its task back (it ran again), it did not fail it
    assert len(tasks) == TASKS
    expected = {H.ECHO: C.TaskStatus.SUCCESS, H.SLEEP: C.TaskStatus.SUCCESS}
    expected |= {H.FAIL: C.TaskStatus.FAILED}
    expected |= {H.PLACE: C.TaskStatus.SUCCESS, H.UNPLACE: C.TaskStatus.SUCCESS}
    wrong = [(t.id, t.task_type, t.status) for t in tasks if t.status != expected[t.task_type]]
    assert not wrong
    assert every_id == set(final)
    assert all(ends == 1 for ends in final.values())
    # what each VM holds is what its last task to end left
    last: dict[int, str] = {}
    for t in sorted(tasks, key=lambda t: (t.finished_at, t.id)):
        if t.vm_id is not None:
            last[t.vm_id] = t.task_type
    placed = {vm_id for vm_id, kind in last.items() if kind == H.PLACE}
    for vm in vms.values():
        held = (vm.host_id, vm.datastore_id, vm.private_ip_id, vm.vnc_port)
        if vm.id in placed:
            assert None not in held and vm.status == C.VMStatus.RUNNING, vm.vm_name
        else:
            assert held == (None, None, None, None), vm.vm_name
    assert {int(p.stem) for p in domains.glob("*.domain")} == placed
    assert ips_held == macs == len(placed)
    assert ds_used == len(placed)  # the template's 1 GB each
