"""The REST API's reads at scale: 25,000 VMs on 2,500 test-driver hosts, in SQLite and
in PostgreSQL, served by a real uvicorn server with two worker processes (one per core
here: ``baadal serve`` with ``[web] workers = 2``; ``--workers`` changes it).

Two reads, each a fixed number of requests from 50 concurrent keep-alive clients with an
admin's token (who sees every VM): ``GET /api/v1/vms?limit=100`` (a page from a random
``after``) and ``GET /api/v1/vms/{id}`` (a random VM). Printed: p50/p99 latency,
requests/s, SQL statements per request (counted in every worker process) and the
server's CPU per request.

Baseline, in the same run from the same server: a static JSON body of the same size,
served by FastAPI's usual kind of route (a plain ``def`` run in its thread pool, through
the same app), without a token or a database: the floor that uvicorn, FastAPI and this
client cost. Targets: p99 of a page < 100 ms, >= 1,000
reads/s, and within 3x of the floor (requests/s).

Run from the repository root (PostgreSQL needs root, as tests/support/pg.py):
``.venv/bin/python bench/api.py [--requests 5000] [--clients 50] [--only sqlite]``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench import ROOT, use_own_tree

use_own_tree()

import argparse
import asyncio
import json
import os
import random
import socket
import statistics
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass

from fastapi import FastAPI, Response
from sqlalchemy import Engine, insert, select, text
from tests.support import pg
from tests.support.statements import watch

from baadal import constants as C
from baadal.api.app import app_from_settings
from baadal.auth.roles import add_membership_db
from baadal.db.models import VM, Host, Organisation, PrivateIpPool, User, Vlan
from baadal.db.schema import upgrade
from baadal.db.session import make_engine, session_scope
from baadal.services import tokens
from baadal.services.policy import SYSTEM

HOSTS, VMS, USERS = 2500, 25000, 250
PAGE = 100
BENCH = "/bench"


# --- the server (uvicorn imports this module's factory) -------------------------------


def server_app() -> FastAPI:
    """``baadal serve``'s application, plus the floor and the process's statement count."""
    app = app_from_settings()
    counted = [0]
    floors = Path(os.environ["BAADAL_HOME"])
    cache: dict[str, bytes] = {}

    def count(_statement: str) -> None:
        counted[0] += 1

    watch(Engine, count)

    @app.get(f"{BENCH}/statements", include_in_schema=False)
    def statements() -> dict[str, int]:
        """This worker process's count (each process counts its own)."""
        return {"pid": os.getpid(), "count": counted[0]}

    @app.get(f"{BENCH}/floor/{{name}}", include_in_schema=False)
    def floor(name: str) -> Response:
        if name not in cache:
            cache[name] = (floors / f"floor-{name}.json").read_bytes()
        return Response(cache[name], media_type="application/json")

    # first in the route table, as the VM routes nearly are: a route's request is
    # matched against those before it (175 of them cost the floor 0.3 ms at the end)
    floor_route = app.router.routes.pop()
    app.router.routes.insert(0, floor_route)
    return app


# --- the data -------------------------------------------------------------------------


def populate(engine: Engine) -> str:
    """Hosts, people, addresses and VMs in bulk; returns an admin's token."""
    rng = random.Random(7)
    with session_scope(engine) as s:
        org = Organisation(name="BENCH")
        s.add(org)
        s.flush()
        s.execute(
            insert(User),
            [{"username": f"u{i}", "organisation_id": org.id} for i in range(USERS)],
        )
        admin = User(username="benchadmin", organisation_id=org.id)
        s.add(admin)
        s.flush()
        add_membership_db(s, admin.id, (C.Role.ADMIN, C.Role.USER))
        token = tokens.create_token(s, SYSTEM, username="benchadmin").token
        user_ids = list(s.scalars(select(User.id)))
        vlan = Vlan(name="bench", vlan_tag=100, vlan_addr="10.128.0.0/9")
        s.add(vlan)
        s.flush()
        s.execute(
            insert(Host),
            [
                {
                    "host_name": f"h{i}",
                    "address": f"10.1.{i // 250}.{i % 250 + 1}",
                    "CPUs": 64,
                    "RAM": 256,
                    "libvirt_uri": "test:///default",
                    "status": C.HostStatus.UP,
                }
                for i in range(HOSTS)
            ],
        )
        s.execute(
            insert(PrivateIpPool),
            [
                {
                    "private_ip": f"10.{128 + i // 65536}.{i // 256 % 256}.{i % 256}",
                    "mac_addr": f"52:54:00:{i // 65536:02x}:{i // 256 % 256:02x}:{i % 256:02x}",
                    "vlan_id": vlan.id,
                }
                for i in range(VMS)
            ],
        )
        s.execute(
            insert(VM),
            [
                {
                    "vm_name": f"vm{i}",
                    "vm_identity": f"BENCH_u_vm{i}",
                    "RAM": rng.choice([256, 512, 1024, 2048]),
                    "vCPU": rng.choice([1, 2, 4]),
                    "HDD": 10,
                    "host_id": rng.randrange(1, HOSTS + 1),
                    "owner_id": rng.choice(user_ids),
                    "private_ip_id": i + 1,
                    "status": rng.choice([C.VMStatus.RUNNING, C.VMStatus.SHUTDOWN]),
                }
                for i in range(VMS)
            ],
        )
    if engine.dialect.name == "postgresql":
        # as after any bulk load: statistics for the planner now, and nothing left for
        # autovacuum to do in the middle of a measurement
        with engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("VACUUM ANALYZE")
    return token


# --- the client -----------------------------------------------------------------------


@dataclass
class Run:
    latencies: list[float]
    seconds: float
    body_bytes: int
    #: the clients' CPU seconds (this process's, while they ran)
    client_cpu_s: float

    def pct(self, p: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000

    @property
    def per_s(self) -> float:
        return len(self.latencies) / self.seconds


Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def _client(
    connection: Connection,
    paths: list[str],
    headers: bytes,
    latencies: list[float],
    sizes: list[int],
) -> None:
    """One keep-alive connection that sends its share of the requests one after another."""
    reader, writer = connection
    for path in paths:
        t0 = time.perf_counter()
        writer.write(f"GET {path} HTTP/1.1\r\n".encode() + headers)
        head = await reader.readuntil(b"\r\n\r\n")
        status = head.split(b" ", 2)[1]
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        body = await reader.readexactly(length)
        latencies.append(time.perf_counter() - t0)
        if status != b"200":
            raise RuntimeError(f"GET {path}: {status.decode()} {body[:200]!r}")
        sizes.append(length)


def load(port: int, paths: list[str], token: str | None, clients: int) -> Run:
    """The requests from ``clients`` connections, opened before the clock starts (a
    burst of new connections would measure the kernel's SYN backlog, not the server)."""
    headers = b"Host: bench\r\n"
    if token:
        headers += f"Authorization: Bearer {token}\r\n".encode()
    headers += b"\r\n"
    latencies: list[float] = []
    sizes: list[int] = []

    async def main() -> None:
        connections = []
        for _ in range(clients):
            connections.append(await asyncio.open_connection("127.0.0.1", port))
        shares = [paths[k::clients] for k in range(clients)]
        t0, cpu0 = time.perf_counter(), time.process_time()
        await asyncio.gather(
            *(
                _client(connection, share, headers, latencies, sizes)
                for connection, share in zip(connections, shares, strict=True)
            )
        )
        took[:] = time.perf_counter() - t0, time.process_time() - cpu0
        for _reader, writer in connections:
            writer.close()

    took = [0.0, 0.0]
    asyncio.run(main())
    return Run(latencies, took[0], int(statistics.mean(sizes)), took[1])


# --- one database ---------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(port: int, path: str, token: str | None = None) -> bytes:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=30) as response:
        return bytes(response.read())


def _cpu_s(pid: int) -> float:
    """CPU seconds the server process and its children (uvicorn's workers) have used: what
    a request costs the server, whatever else the machine runs meanwhile."""
    pids = [pid]
    for task in Path(f"/proc/{pid}/task").iterdir():
        pids += [int(child) for child in (task / "children").read_text().split()]
    return sum(_ticks(each) for each in pids) / os.sysconf("SC_CLK_TCK")


def _ticks(pid: int) -> int:
    """A process's user and system CPU so far (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0
    return int(fields[11]) + int(fields[12])  # utime, stime


class DatabaseCPU:
    """The CPU PostgreSQL's backends spend serving the benchmark's database (the cluster
    is shared with other work: only the backends connected to this database count);
    SQLite runs inside the server's processes."""

    def __init__(self, url: str) -> None:
        self.engine = make_engine(url) if url.startswith("postgresql") else None
        self.start: dict[int, int] = {}

    def _backends(self) -> dict[int, int]:
        if self.engine is None:
            return {}
        with self.engine.connect() as conn:
            pids = conn.scalars(
                text(
                    "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                    " AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
                )
            ).all()
        return {pid: _ticks(pid) for pid in pids}

    def begin(self) -> None:
        self.start = self._backends()

    def seconds(self) -> float:
        """Since :meth:`begin` (a backend that connected meanwhile counts from 0)."""
        now = self._backends()
        ticks = sum(now[pid] - self.start.get(pid, 0) for pid in now)
        return ticks / os.sysconf("SC_CLK_TCK")

    def dispose(self) -> None:
        if self.engine is not None:
            self.engine.dispose()


def _statements(port: int, workers: int) -> int:
    """SQL statements the server's worker processes have run so far: each answers for
    itself, and a new connection goes to any of them, so ask until all have answered."""
    counts: dict[int, int] = {}
    for _ in range(200 * workers):
        answer = json.loads(_get(port, f"{BENCH}/statements"))
        counts[answer["pid"]] = answer["count"]
        if len(counts) == workers:
            return sum(counts.values())
    raise RuntimeError(f"only {len(counts)} of {workers} worker processes answered")


def _start_server(url: str, home: Path, port: int, workers: int) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env.update(
        {
            "BAADAL_HOME": str(home),
            "BAADAL_DATABASE__URL": url,
            "PYTHONPATH": os.pathsep.join((str(ROOT / "src"), str(ROOT))),
        }
    )
    argv = [
        sys.executable, "-m", "uvicorn", "bench.api:server_app", "--factory",
        "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", "--no-access-log",
        "--workers", str(workers),
    ]  # fmt: skip
    server = subprocess.Popen(argv, cwd=ROOT, env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            _get(port, f"{BENCH}/statements")
            return server
        except OSError:
            time.sleep(0.2)
    server.kill()
    raise RuntimeError("the server did not start")


def measure(label: str, url: str, args: argparse.Namespace) -> tuple[list[str], list[str]]:
    engine = make_engine(url)
    upgrade(engine)
    t0 = time.perf_counter()
    token = populate(engine)
    engine.dispose()
    print(f"{label}: {VMS:,} VMs on {HOSTS:,} hosts loaded in {time.perf_counter() - t0:.1f} s")
    requests, clients = args.requests, args.clients
    rng = random.Random(11)
    reads = {
        "page": [f"{C.API_PREFIX}/vms?limit={PAGE}&after={rng.randrange(VMS - PAGE)}" for _ in range(requests)],
        "show": [f"{C.API_PREFIX}/vms/{rng.randrange(1, VMS + 1)}" for _ in range(requests)],
    }  # fmt: skip
    lines: list[str] = []
    budgets: list[str] = []
    database = DatabaseCPU(url)
    with tempfile.TemporaryDirectory(prefix="bench-api-") as home:
        port = _free_port()
        server = _start_server(url, Path(home), port, args.workers)
        try:
            for name, paths in reads.items():
                (Path(home) / f"floor-{name}.json").write_bytes(_get(port, paths[0], token))
                load(port, paths[: requests // 10], token, clients)  # warm up
                before = _statements(port, args.workers)
                cpu = _cpu_s(server.pid)
                database.begin()
                api = load(port, paths, token, clients)
                api_cpu = (_cpu_s(server.pid) - cpu) / requests * 1000
                db_cpu = database.seconds() / requests * 1000
                after = _statements(port, args.workers)
                cpu = _cpu_s(server.pid)
                floor = load(port, [f"{BENCH}/floor/{name}"] * requests, None, clients)
                floor_cpu = (_cpu_s(server.pid) - cpu) / requests * 1000
                ratio = floor.per_s / api.per_s
                sql = f"{(after - before) / requests:6.1f}"
                lines.append(
                    f"{label:10} {name:5} {api.body_bytes:>7,} {api.pct(0.5):7.1f} {api.pct(0.99):7.1f}"
                    f" {api.per_s:8,.0f} {sql} {api_cpu:6.2f}"
                    f" {floor.pct(0.5):7.1f} {floor.pct(0.99):7.1f} {floor.per_s:8,.0f}"
                    f" {floor_cpu:6.2f} {ratio:6.2f}x {api_cpu / floor_cpu:6.2f}x"
                )  # fmt: skip
                print(lines[-1])
                budgets.append(_budget(label, name, api, api_cpu, db_cpu, floor, floor_cpu))
        finally:
            server.terminate()
            server.wait(timeout=30)
            database.dispose()
    return lines, budgets


def _budget(
    label: str, name: str, api: Run, api_cpu: float, db_cpu: float, floor: Run, floor_cpu: float
) -> str:
    """Where the machine's CPU went per request: the server, the database's backends and
    the clients (all on the same cores), and the rate that total allows on every core."""
    cores = os.cpu_count() or 1
    api_total = api_cpu + db_cpu + api.client_cpu_s / len(api.latencies) * 1000
    floor_total = floor_cpu + floor.client_cpu_s / len(floor.latencies) * 1000
    return (
        f"{label:10} {name:5} {api_cpu:7.2f} {db_cpu:7.2f}"
        f" {api.client_cpu_s / len(api.latencies) * 1000:7.2f} {api_total:7.2f}"
        f" {cores * 1000 / api_total:9,.0f} {floor_total:7.2f} {cores * 1000 / floor_total:9,.0f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5000, help="per read and database")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--only", choices=("sqlite", "postgresql"))
    parser.add_argument(
        "--workers", type=int, default=2, help="uvicorn worker processes (2: one per core here)"
    )
    args = parser.parse_args()
    header = (
        f"{'database':10} {'read':5} {'bytes':>7} {'p50 ms':>7} {'p99 ms':>7} {'req/s':>8}"
        f" {'SQL/rq':>6} {'cpu ms':>6} {'floor50':>7} {'floor99':>7} {'floor/s':>8}"
        f" {'cpu ms':>6} {'ratio':>7} {'cpu':>7}"
    )
    print(
        f"{args.requests:,} requests per read, {args.clients} clients, {args.workers} server"
        " process(es); ratio = floor req/s / API req/s; cpu ms = the server's CPU per"
        " request (PostgreSQL's own processes not included), API / floor"
    )
    print(header)
    lines: list[str] = []
    budgets: list[str] = []
    if args.only != "postgresql":
        with tempfile.TemporaryDirectory(prefix="bench-api-db-") as folder:
            measured = measure("sqlite", f"sqlite:///{folder}/baadal.db", args)
            lines += measured[0]
            budgets += measured[1]
    if args.only != "sqlite":
        pg.ensure_server()
        url = pg.create_database()
        try:
            measured = measure("postgresql", url, args)
            lines += measured[0]
            budgets += measured[1]
        finally:
            pg.drop_database(url)
    print("\n" + header)
    print("\n".join(lines))
    print(
        "\nCPU ms per request: the server, the database's own processes and the clients"
        f" (all on these {os.cpu_count()} cores); the rate their sum allows on every core"
    )
    print(
        f"{'database':10} {'read':5} {'server':>7} {'db':>7} {'client':>7} {'total':>7}"
        f" {'ceiling/s':>9} {'floor':>7} {'ceiling/s':>9}"
    )
    print("\n".join(budgets))
    print(
        "targets: p99 of a page < 100 ms; >= 1,000 reads/s; ratio <= 3x"
        " (SQL/rq: statements the server ran per request, the token's check included)"
    )


if __name__ == "__main__":
    main()
