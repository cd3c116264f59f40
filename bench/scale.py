"""Baadal at scale: N hosts and 10 N VMs, every everyday operation timed at each N.

The cloud is made the way Baadal makes it: hosts on in-memory ``fake:///`` nodes, VLAN
and address pools through the pools code, three VMs requested through the VM service and
installed by a Worker (one running, one paused, one shut off). The other VMs are copies
of those three, bulk-inserted: every row a VM install writes (the VM, its users, its
'Create VM' task and the task's event, its VM events, its audit row) is copied with a
new name, host, private IP, MAC and VNC port, and its domain is defined on its fake node,
so the database and the hypervisors agree as if every VM had been installed one by one.
1 % of the hosts (at least one) have an address nothing answers and are DOWN.

For each operation the benchmark prints the median time at each N (of 3 runs; of 1 when
a run takes over 5 s), the growth factor from the middle N to the largest (10 means
linear) and the SQL statements it ran (counted with an engine event; '-' for whole CLI
processes, whose statements run in another process). ``--check`` runs N = 250 and 2,500
and checks the targets of issue 16; it exits 1 when one is missed and prints
``targets met: K/M`` last.

Run from the repository root (root, for ping): ``.venv/bin/python bench/scale.py``
(it measures this tree's ``src``, also for the CLI processes it starts)
(``--n 25,250`` for a quick run, ``--db postgres`` for PostgreSQL, ``--check``).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench import ROOT, use_own_tree

use_own_tree()

import argparse
import contextlib
import ipaddress
import logging
import os
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import Engine, func, insert, select, update
from sqlalchemy.orm import Session
from tests.support import pg
from tests.support.cloud import make_cloud
from tests.support.people import add_people
from tests.support.statements import watch

from baadal import address_pools
from baadal import constants as C
from baadal.config import Settings, load_settings
from baadal.db.constants_table import update_constant
from baadal.db.models import (
    VM,
    AuditLog,
    Host,
    PeriodicJob,
    SecurityDomain,
    Task,
    TaskEvent,
    UserVMMap,
    VMEventLog,
)
from baadal.db.schema import upgrade
from baadal.db.session import make_engine, session_scope
from baadal.drivers import fake, libvirt_driver
from baadal.placement import find_new_host, recompute_host_usage
from baadal.services import cloud, inventory, networks, tasks, tokens, vms
from baadal.services.policy import SYSTEM
from baadal.tasks import queue
from baadal.tasks.registry import load_handler_modules
from baadal.tasks.worker import Worker
from baadal.timeutil import utcnow

VMS_PER_HOST = 10
UNREACHABLE_SHARE = 0.01
REPEATS = 3
SLOW_S = 5.0
API_PAGE = 100
PLACEMENT_CALLS = 50
TEMPLATE_VMS = (("r", None), ("p", "suspend"), ("o", "stop"))
BAADAL = [sys.executable, "-m", "baadal"]


# --------------------------------------------------------------------------- filling


def new_settings(home: Path) -> Settings:
    os.environ["BAADAL_HOME"] = str(home)
    os.environ.pop("BAADAL_CONFIG", None)
    os.environ["BAADAL_GENERAL__ALLOW_TEST_HYPERVISORS"] = "true"
    settings = load_settings()
    settings.general.host_check_services = False  # fake nodes have no SSH
    settings.general.snapshot_requires_ping = False
    settings.worker.poll_interval_s = 0.01
    settings.dhcp.backend = C.DhcpBackend.ISC
    settings.dhcp.isc_conf_file = str(home / "dhcp-hosts.conf")
    settings.dhcp.isc_reload_command = ["true"]
    return settings


def run_tasks(engine: Engine, settings: Settings) -> None:
    Worker(engine, settings, registry=load_handler_modules(), worker_id="bench").run(
        until_idle=True
    )


def host_address(i: int, unreachable: bool) -> str:
    """Loopback addresses answer ping; TEST-NET-2 (RFC 5737) is routed nowhere."""
    if unreachable:
        return f"198.51.{100 + i // 250}.{i % 250 + 1}"
    return f"127.1.{i // 250}.{i % 250 + 1}"


def fill(engine: Engine, settings: Settings, root: Path, n: int) -> None:
    """N hosts, 10 N VMs (see the module's docstring)."""
    fake.reset()
    make_cloud(engine, settings, root, ["fake:///h1"], host_cpus=64, host_ram_gb=256,
               capacity_gb=10**6, address=host_address(0, False))  # fmt: skip
    add_people(engine)
    vm_count = n * VMS_PER_HOST
    with session_scope(engine) as s:
        vlan = address_pools.create_vlan(s, "bench", 20, "10.128.0.0/12")
        last = ipaddress.IPv4Address("10.128.0.2") + vm_count + 50
        address_pools.add_private_ips(s, vlan.id, "10.128.0.2", str(last))
        s.execute(update(SecurityDomain).values(vlan_id=vlan.id))
        host = s.get(Host, 1)
        host_row = {c.key: getattr(host, c.key) for c in Host.__table__.columns if c.key != "id"}
    # the template VMs, made by the VM service and installed by a worker
    owners = ["stu", "fac", "col"]
    with session_scope(engine) as s:
        ids = [
            vms.request_vm(s, SYSTEM, settings, vm_name=f"t{name}", template="tiny", ram_mb=256,
                           vcpus=1, owner=owners[i], security_domain="research").vm_id
            for i, (name, _op) in enumerate(TEMPLATE_VMS)
        ]  # fmt: skip
    run_tasks(engine, settings)
    for vm_id, (_name, op) in zip(ids, TEMPLATE_VMS, strict=True):
        if op:
            with session_scope(engine) as s:
                vms.operate(s, SYSTEM, vm_id, op)
            run_tasks(engine, settings)
    unreachable = max(1, int(n * UNREACHABLE_SHARE))
    with session_scope(engine) as s:
        s.execute(
            insert(Host),
            [
                {**host_row, "host_name": f"host{i + 1}", "libvirt_uri": f"fake:///h{i + 1}",
                 "address": host_address(i, i >= n - unreachable),
                 "status": C.HostStatus.DOWN if i >= n - unreachable else C.HostStatus.UP}
                for i in range(1, n)
            ],
        )  # fmt: skip
        copy_vms(s, ids, vm_count - len(ids), n)
        recompute_host_usage(s)
    with session_scope(engine) as s:  # the periodic jobs must not run inside a timing
        s.execute(update(PeriodicJob).values(next_run_at=utcnow() + timedelta(days=1)))
    for _ in range(3):  # the periodic jobs' tasks the first worker queued: not part of it
        with session_scope(engine) as s:
            s.execute(
                update(Task)
                .where(Task.status.in_(C.TASK_UNFINISHED))
                .values(status=C.TaskStatus.SUCCESS)
            )


def _rows(session: Session, model: Any, column: Any, ids: list[int]) -> dict[int, list[dict]]:
    out: dict[int, list[dict]] = {i: [] for i in ids}
    for row in session.execute(select(model.__table__).where(column.in_(ids))).mappings():
        out[row[column.key]].append(dict(row))
    return out


def _no_id(row: dict) -> dict:
    return {k: v for k, v in row.items() if k != "id"}


def _insert_ids(session: Session, model: Any, rows: list[dict]) -> list[int]:
    """Insert ``rows``; their new ids in order (the database's sequences stay right)."""
    stmt = insert(model).returning(model.id, sort_by_parameter_order=True)
    return list(session.scalars(stmt, rows))


def copy_vms(session: Session, template_ids: list[int], count: int, hosts: int) -> None:
    """``count`` copies of the template VMs' rows, spread over the hosts, with their
    domains defined on the fake nodes."""
    tpl = {r["id"]: dict(r) for r in session.execute(select(VM.__table__)).mappings()}
    maps = _rows(session, UserVMMap, UserVMMap.vm_id, template_ids)
    vm_tasks = _rows(session, Task, Task.vm_id, template_ids)
    events = _rows(session, VMEventLog, VMEventLog.vm_id, template_ids)
    audits = _rows(session, AuditLog, AuditLog.vm_id, template_ids)
    task_events = _rows(session, TaskEvent, TaskEvent.vm_id, template_ids)
    pool = address_pools.PrivateIpPool
    free_ips = session.scalars(
        select(pool.id)
        .where(pool.vlan_id != 1, ~select(VM.id).where(VM.private_ip_id == pool.id).exists())
        .order_by(pool.id)
        .limit(count)
    ).all()
    start, end = address_pools.vnc_port_range(session)
    used_ports = {r["vnc_port"] for r in tpl.values()}
    ports = [p for p in range(start, end + 1) if p not in used_ports]
    doms = {
        r["vm_identity"]: fake._nodes[f"fake:///h{r['host_id']}"].domains[r["vm_identity"]]
        for r in tpl.values()
    }
    for first in range(0, count, 2000):
        made = []  # (source VM id, new name, identity, host id)
        vm_rows = []
        for k in range(first, min(count, first + 2000)):
            src = tpl[template_ids[k % len(template_ids)]]
            name = f"v{k}"
            identity = f"{src['vm_identity'].rsplit('~', 1)[0]}~{name}"
            host_id = k % hosts + 1
            made.append((src["id"], name, identity, host_id))
            vm_rows.append({**_no_id(src), "vm_name": name, "vm_identity": identity,
                            "host_id": host_id, "private_ip_id": free_ips[k],
                            "vnc_port": ports[k]})  # fmt: skip
        vm_ids = _insert_ids(session, VM, vm_rows)
        task_rows, task_src = [], []
        for vm_id, (src_id, name, identity, host_id) in zip(vm_ids, made, strict=True):
            for t in vm_tasks[src_id]:
                task_rows.append({**_no_id(t), "vm_id": vm_id,
                                  "parameters": {**t["parameters"], "vm_id": vm_id}})  # fmt: skip
                task_src.append((t["id"], vm_id, name))
            original = doms[tpl[src_id]["vm_identity"]]
            dom = fake._Domain(name=identity, uuid=f"{vm_id:032x}",
                               xml=original.xml.replace(tpl[src_id]["vm_identity"], identity))  # fmt: skip
            dom.set_status(original.status)
            uri = f"fake:///h{host_id}"
            fake._nodes.setdefault(uri, fake._new_node(uri)).domains[identity] = dom
        task_ids = _insert_ids(session, Task, task_rows) if task_rows else []
        rows: dict[Any, list[dict]] = {UserVMMap: [], TaskEvent: [], VMEventLog: [], AuditLog: []}
        by_task = {}
        for e_list in task_events.values():
            for e in e_list:
                by_task.setdefault(e["task_id"], []).append(e)
        for task_id, (src_task, vm_id, name) in zip(task_ids, task_src, strict=True):
            rows[TaskEvent] += [
                {**_no_id(e), "task_id": task_id, "vm_id": vm_id, "vm_name": name,
                 "parameters": {**e["parameters"], "vm_id": vm_id}}
                for e in by_task.get(src_task, [])
            ]  # fmt: skip
        for vm_id, (src_id, name, identity, _host) in zip(vm_ids, made, strict=True):
            rows[UserVMMap] += [{**m, "vm_id": vm_id} for m in maps[src_id]]
            rows[VMEventLog] += [{**_no_id(e), "vm_id": vm_id, "vm_identity": identity}
                                 for e in events[src_id]]  # fmt: skip
            rows[AuditLog] += [{**_no_id(a), "vm_id": vm_id, "target_id": vm_id,
                                "target_name": name} for a in audits[src_id]]  # fmt: skip
        for model, batch in rows.items():
            if batch:
                session.execute(insert(model), batch)


# --------------------------------------------------------------------------- timing


@dataclass
class Result:
    seconds: float
    statements: int | None


@dataclass
class Bench:
    engine: Engine
    settings: Settings
    url: str
    root: Path
    n: int
    statements: int = 0
    token: str = ""
    env: dict[str, str] = field(default_factory=dict)
    client: Any = None
    #: the VM the bookkeeping row suspends and resumes (looked up once)
    traced_vm: int = 0

    def count(self, _statement: str) -> None:
        self.statements += 1


def measure(bench: Bench, op: Callable[[Bench], object], cli: bool) -> Result:
    times, counts = [], []
    for _ in range(REPEATS):
        bench.statements = 0
        t0 = time.perf_counter()
        op(bench)
        times.append(time.perf_counter() - t0)
        counts.append(bench.statements)
        if times[-1] > SLOW_S:
            break
    return Result(statistics.median(times), None if cli else max(counts))


@contextlib.contextmanager
def rolled_back(engine: Engine) -> Iterator[Session]:
    """A session whose changes are thrown away (an operation measured more than once)."""
    with Session(engine) as session:
        try:
            yield session
        finally:
            session.rollback()


def op_vm_list(b: Bench) -> None:
    """What ``baadal vm list`` loads and renders (every VM)."""
    with session_scope(b.engine) as s:
        rows = [
            (vm.id, vm.name, vm.identity, vm.status.name, vm.host or "",
             vm.private_ip or "", vm.public_ip or "", vm.ram_mb, vm.vcpus)
            for vm in vms.list_vms(s, SYSTEM)
        ]  # fmt: skip
    assert len(rows) == b.n * VMS_PER_HOST


def op_api_list(b: Bench) -> None:
    response = b.client.get(
        f"{C.API_PREFIX}/vms", params={"limit": API_PAGE},
        headers={"Authorization": f"Bearer {b.token}"},
    )  # fmt: skip
    assert response.status_code == 200, response.text


def op_vm_sanity(b: Bench) -> None:
    from baadal.vm.sanity import vm_sanity_check

    report = vm_sanity_check(b.engine, b.settings)
    bad = [r for r in report.rows if r.action not in ("ok", "not checked: its host is not UP")]
    assert not bad, bad[:3]


def op_host_sanity(b: Bench) -> None:
    from baadal.host.health import host_status_sanity_check

    checks = host_status_sanity_check(b.engine, b.settings)
    assert not [c for c in checks if c.changed], [c for c in checks if c.changed][:3]


def op_dhcp_rebuild(b: Bench) -> None:
    assert networks.rebuild_dhcp(b.engine, SYSTEM, b.settings) > 0


def op_network_job(b: Bench) -> None:
    """The periodic network job's DHCP part with no DHCP backend (the default)."""
    from baadal.vm.network import restore_network

    backend = b.settings.dhcp.backend
    b.settings.dhcp.backend = C.DhcpBackend.NONE
    try:
        restore_network(b.engine, b.settings)
    finally:
        b.settings.dhcp.backend = backend


def op_shutdown(b: Bench) -> None:
    with rolled_back(b.engine) as s:
        queued = cloud.shutdown(s, SYSTEM)
        assert len(queued.task_ids) > b.n * VMS_PER_HOST // 2


def op_write_during_list(b: Bench) -> float:
    """How long one small write takes while ``vm list`` runs in another thread."""
    started = threading.Event()

    def reader() -> None:  # as `baadal vm list` and GET /vms read: a read session
        with session_scope(b.engine, read=True) as s:
            s.execute(select(func.count()).select_from(VM))
            started.set()
            list(vms.list_vms(s, SYSTEM))

    thread = threading.Thread(target=reader)
    thread.start()
    started.wait()
    t0 = time.perf_counter()
    with session_scope(b.engine) as s:
        update_constant(s, "bench_write", str(time.time()))
    waited = time.perf_counter() - t0
    thread.join()
    return waited


def op_metrics(b: Bench) -> None:
    from baadal.monitor.prometheus import render_metrics

    assert "baadal_cpu_seconds" in render_metrics(b.engine, b.settings)


def op_rrd_pass(b: Bench) -> float:
    """One collection pass over existing files (the first pass, which creates them, is
    not timed; a pass in the second of the last one records nothing)."""
    from baadal.monitor.rrd import rrd_dir, update_all_rrds

    if not rrd_dir(b.settings).is_dir():
        update_all_rrds(b.engine, b.settings)
    time.sleep(1.0)
    t0 = time.perf_counter()
    report = update_all_rrds(b.engine, b.settings)
    seconds = time.perf_counter() - t0
    assert report.vms >= b.n * VMS_PER_HOST * 0.8, report.summary()  # hosts: no SSH
    return seconds


def _new_vm(s: Session, settings: Settings) -> int:
    return vms.request_vm(s, SYSTEM, settings, vm_name="benchnew", template="tiny", ram_mb=256,
                          vcpus=1, owner="stu", security_domain="research").vm_id  # fmt: skip


def op_request(b: Bench) -> None:
    with rolled_back(b.engine) as s:
        _new_vm(s, b.settings)


def op_allocate(b: Bench) -> float:
    """Only the allocation (private IP, MAC, VNC port, host) of a just requested VM."""
    from baadal.vm.install import allocate_vm_properties

    with rolled_back(b.engine) as s:
        vm = s.get(VM, _new_vm(s, b.settings))
        t0 = time.perf_counter()
        allocate_vm_properties(s, vm)
        return time.perf_counter() - t0


def op_placement(b: Bench) -> None:
    with session_scope(b.engine) as s:
        for _ in range(PLACEMENT_CALLS):
            find_new_host(s, 256, 1, settings=b.settings)


def op_queue(b: Bench) -> None:
    with session_scope(b.engine) as s:
        task_id = queue.enqueue(s, C.TaskType.HOST_SANITY).id
    claimed = queue.claim(b.engine, "bench", 60.0, only=[task_id])
    assert claimed is not None
    assert queue.finish(b.engine, claimed, "bench", C.TaskStatus.SUCCESS, "done")


def op_bookkeeping(b: Bench) -> None:
    """suspend and resume of one VM through Baadal (service, task, worker) on a fake
    host, where the hypervisor call itself costs microseconds: per operation. The VM
    is called by its id, as the API and bench/ops.py call it (the bench's own lookup
    of it by name, a session of its own, was a sixth of the time)."""
    if not b.traced_vm:
        with session_scope(b.engine) as s:
            b.traced_vm = s.scalar(select(VM.id).where(VM.vm_name == "tr")) or 0
    for op in ("suspend", "resume"):
        with session_scope(b.engine) as s:
            vms.operate(s, SYSTEM, b.traced_vm, op)
        run_tasks(b.engine, b.settings)


def op_host_list(b: Bench) -> None:
    with session_scope(b.engine) as s:
        rows = [(h.id, h.host_name, h.address, h.status, h.CPUs, h.RAM, h.host_type)
                for h in inventory.list_hosts(s, SYSTEM).items]  # fmt: skip
    assert len(rows) == b.n


def op_task_list(b: Bench) -> None:
    with session_scope(b.engine) as s:
        rows = [(t.id, t.task_type, t.vm_id, t.status, t.attempts, t.created_at, t.message)
                for t in tasks.list_tasks(s, SYSTEM, limit=C.ITEMS_PER_PAGE).items]  # fmt: skip
    assert rows


def op_pool_usage(b: Bench) -> None:
    with session_scope(b.engine) as s:
        address_pools.pool_usage(s)


def op_status(b: Bench) -> None:
    with session_scope(b.engine) as s:
        cloud.summary(s, SYSTEM)


def cli(*argv: str) -> Callable[[Bench], None]:
    def run(b: Bench) -> None:
        done = subprocess.run([*BAADAL, *argv], env=b.env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-500:]

    return run


#: name -> (operation, a CLI process?, returns its own time?)
OPS: dict[str, tuple[Callable[[Bench], Any], bool, bool]] = {
    "vm list (all rows)": (op_vm_list, False, False),
    "API GET /vms?limit=100": (op_api_list, False, False),
    "vm sanity sweep": (op_vm_sanity, False, False),
    "host sanity sweep (1% down)": (op_host_sanity, False, False),
    "DHCP rebuild": (op_dhcp_rebuild, False, False),
    "network job, no DHCP backend": (op_network_job, False, False),
    "cloud shutdown queueing": (op_shutdown, False, False),
    "write while vm list runs": (op_write_during_list, False, True),
    "RRD collection pass": (op_rrd_pass, False, True),
    "metrics with RRD values": (op_metrics, False, False),
    "allocate new VM's properties": (op_allocate, False, True),
    "request a VM": (op_request, False, False),
    f"placement x{PLACEMENT_CALLS}": (op_placement, False, False),
    "enqueue+claim+finish": (op_queue, False, False),
    "bookkeeping (2 VM ops)": (op_bookkeeping, False, False),
    "host list": (op_host_list, False, False),
    "task list": (op_task_list, False, False),
    "pool usage": (op_pool_usage, False, False),
    "status": (op_status, False, False),
    "CLI: baadal --help": (cli("--help"), True, False),
    "CLI: baadal status": (cli("status"), True, False),
    "CLI: baadal host list": (cli("host", "list"), True, False),
    "CLI: baadal vm list --limit 100": (cli("vm", "list", "--limit", str(API_PAGE)), True, False),
    "CLI: baadal vm list (all rows)": (cli("vm", "list"), True, False),
}


def run_n(n: int, db: str, only: set[str] | None) -> dict[str, Result]:
    with tempfile.TemporaryDirectory(prefix="baadal-scale-") as tmp_name:
        root = Path(tmp_name)
        settings = new_settings(root / "home")
        url = f"sqlite:///{root}/bench.db"
        if db == "postgres":
            pg.ensure_server()
            url = pg.create_database()
        engine = make_engine(url)
        try:
            upgrade(engine)
            t0 = time.perf_counter()
            fill(engine, settings, root, n)
            print(f"  N={n}: filled in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
            return run_ops(Bench(engine, settings, url, root, n), only)
        finally:
            engine.dispose()
            libvirt_driver.close_all()
            fake.reset()
            if db == "postgres":
                pg.drop_database(url)


def cli_bytecode(bench: Bench) -> None:
    """The CLI processes load Baadal's modules compiled, as an installed Baadal does
    (pip writes the bytecode): with PYTHONDONTWRITEBYTECODE in the environment (this
    shared machine sets it) and no ``__pycache__`` in the tree, each process compiled
    every Baadal module it imported, 0.1 s of its start. The bytecode goes to the run's
    own folder (PYTHONPYCACHEPREFIX), not into the tree."""
    bench.env.pop("PYTHONDONTWRITEBYTECODE", None)
    bench.env["PYTHONPYCACHEPREFIX"] = str(bench.root / "pycache")
    compileall = [sys.executable, "-m", "compileall", "-q", str(ROOT / "src")]
    subprocess.run(compileall, env=bench.env, check=True, stdout=subprocess.DEVNULL)


def run_ops(bench: Bench, only: set[str] | None) -> dict[str, Result]:
    from fastapi.testclient import TestClient

    from baadal.api.app import create_app

    settings = bench.settings
    bench.env = {**os.environ, "BAADAL_DATABASE__URL": bench.url,
                 "PYTHONPATH": str(ROOT / "src")}  # fmt: skip
    cli_bytecode(bench)
    with session_scope(bench.engine) as s:
        bench.token = tokens.create_token(s, SYSTEM, username="admin").token
    settings.database.url = bench.url
    bench.client = TestClient(create_app(settings))
    stop_counting = watch(Engine, bench.count)
    results: dict[str, Result] = {}
    for name, (op, is_cli, own_time) in OPS.items():
        if only is not None and name not in only:
            continue
        if own_time:
            samples = []
            for _ in range(REPEATS):
                bench.statements = 0
                samples.append(op(bench))
            results[name] = Result(statistics.median(samples), bench.statements)
        else:
            results[name] = measure(bench, op, is_cli)
        r = results[name]
        print(f"  N={bench.n}: {name}: {r.seconds:.3f} s, {r.statements} statements",
              file=sys.stderr)  # fmt: skip
    stop_counting()
    return results


# --------------------------------------------------------------------------- report


def show(value: float) -> str:
    return f"{value * 1000:.1f} ms" if value < 1 else f"{value:.2f} s"


def report(all_results: dict[int, dict[str, Result]]) -> None:
    ns = sorted(all_results)
    head = "".join(f"{f'N={n}':>12}" for n in ns)
    print(f"{'operation':34}{head}{'growth':>8}   statements")
    for name in all_results[ns[0]]:
        cells = "".join(f"{show(all_results[n][name].seconds):>12}" for n in ns)
        growth = "-"
        if len(ns) >= 2:
            a, b = all_results[ns[-2]][name].seconds, all_results[ns[-1]][name].seconds
            growth = f"{b / a:.1f}" if a > 0 else "-"
        counts = " / ".join(
            "-" if all_results[n][name].statements is None else str(all_results[n][name].statements)
            for n in ns
        )
        print(f"{name:34}{cells}{growth:>8}   {counts}")


#: statement counts that must not grow with N
FLAT = ("API GET /vms?limit=100", "vm list (all rows)", "vm sanity sweep",
        "host sanity sweep (1% down)", "host list", "task list", "DHCP rebuild",
        "cloud shutdown queueing", "metrics with RRD values")  # fmt: skip
#: name -> the most it may take at the largest N (seconds)
LIMITS = {
    "CLI: baadal vm list --limit 100": 1.0,
    "CLI: baadal status": 1.0,
    "CLI: baadal host list": 1.0,
    "API GET /vms?limit=100": 1.0,
    "vm sanity sweep": 10.0,
    "host sanity sweep (1% down)": 10.0,
    "DHCP rebuild": 1.0,
    "cloud shutdown queueing": 5.0,
    "metrics with RRD values": 1.0,
    "write while vm list runs": 0.2,
    "CLI: baadal --help": 0.3,
    "bookkeeping (2 VM ops)": 0.004,
}


def check(all_results: dict[int, dict[str, Result]]) -> int:
    small, large = sorted(all_results)[-2:]
    before, after = all_results[small], all_results[large]
    missed, total = [], 0
    for name, r in after.items():
        total += 1
        growth = r.seconds / before[name].seconds if before[name].seconds > 0 else 0
        if growth > 12 and r.seconds > 0.05:  # below 50 ms the noise decides
            missed.append(f"{name}: grows {growth:.1f}x from N={small} to N={large} (> 12)")
    for name in FLAT:
        total += 1
        if after[name].statements != before[name].statements:
            missed.append(f"{name}: {before[name].statements} statements at N={small}, "
                          f"{after[name].statements} at N={large}")  # fmt: skip
    for name, limit in LIMITS.items():
        total += 1
        if after[name].seconds > limit:
            missed.append(f"{name}: {show(after[name].seconds)} at N={large} (target "
                          f"< {show(limit)})")  # fmt: skip
    for line in missed:
        print(f"MISSED {line}")
    print(f"targets met: {total - len(missed)}/{total}")
    return 1 if missed else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", help="host counts, comma-separated (default 25,250,2500)")
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument(
        "--check",
        action="store_true",
        help="check the targets at the two largest N (default N: 250,2500)",
    )
    parser.add_argument("--only", help="operation names, comma-separated")
    args = parser.parse_args()
    logging.getLogger("baadal").setLevel(logging.CRITICAL)
    ns = [int(x) for x in args.n.split(",")] if args.n else [25, 250, 2500]
    if args.check and not args.n:
        ns = [250, 2500]
    only = set(args.only.split(",")) if args.only else None
    results = {n: run_n(n, args.db, only) for n in ns}
    print(f"Baadal at scale, {args.db}: N hosts, {VMS_PER_HOST} N VMs; median of up to "
          f"{REPEATS} runs")  # fmt: skip
    report(results)
    if args.check:
        sys.exit(check(results))


if __name__ == "__main__":
    main()
