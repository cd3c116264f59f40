"""Picking a new VM's VNC port in a full cloud: 25,000 VMs on 2,500 hosts (SQLite).

Ports are unique per host; a pick checks random ports with one index lookup each (and
finds the lowest free port in one query when those keep missing), so its cost does not
grow with the number of VMs. Prints the median ms per pick and the statements it ran.

Run from the repository root: ``.venv/bin/python bench/vnc_ports.py``.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench import use_own_tree

use_own_tree()

from sqlalchemy import insert, select
from tests.support.statements import watch

from baadal import address_pools
from baadal.db.models import VM, Host
from baadal.db.schema import upgrade
from baadal.db.session import make_engine, session_scope

HOSTS, VMS, PICKS = 2500, 25000, 30


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(f"sqlite:///{tmp}/vnc.db")
        upgrade(engine)
        with session_scope(engine) as s:
            s.execute(
                insert(Host),
                [
                    {"host_name": f"h{i}", "address": "10.0.0.1", "CPUs": 8,
                     "libvirt_uri": f"test:///h{i}"}
                    for i in range(HOSTS)
                ],
            )  # fmt: skip
            hosts = list(s.scalars(select(Host.id)))
            s.execute(
                insert(VM),
                [
                    {"vm_name": f"v{i}", "vm_identity": f"o~u~v{i}", "RAM": 256, "vCPU": 1,
                     "host_id": hosts[i % HOSTS], "vnc_port": 5900 + i}
                    for i in range(VMS)
                ],
            )  # fmt: skip
            new = [
                VM(vm_name=f"n{i}", vm_identity=f"o~u~n{i}", RAM=256, vCPU=1, host_id=hosts[0])
                for i in range(PICKS)
            ]
            s.add_all(new)
            s.flush()
            new_ids = [vm.id for vm in new]
        statements = [0]

        def _count(_statement: str) -> None:
            statements[0] += 1

        watch(engine, _count)

        times = []
        for vm_id in new_ids:
            statements[0] = 0
            with session_scope(engine) as s:
                t0 = time.perf_counter()
                address_pools.allocate_vnc_port(s, vm_id)
                times.append(time.perf_counter() - t0)
        engine.dispose()
    print(
        f"VNC port pick at {VMS} VMs on {HOSTS} hosts: median {statistics.median(times) * 1000:.2f}"
        f" ms, {statements[0]} statements per pick (transaction control included)"
    )


if __name__ == "__main__":
    main()
