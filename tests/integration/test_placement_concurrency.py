"""Placement under real concurrency: however many placements run at once, no host is
filled beyond its overcommit limit (on PostgreSQL the chosen host row is locked and the
fit checked again; on SQLite writers are serialised)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import Engine, func, select

from baadal import constants as C
from baadal import placement
from baadal.config import Settings
from baadal.db.models import VM, Host
from baadal.db.session import make_engine, session_scope
from baadal.errors import ResourceExhausted

pytestmark = pytest.mark.integration

PLACERS = 12
VM_RAM_MB = 1024
#: 2 GB hosts at 200 % RAM overcommit: room for 4 VMs of 1 GB each
HOST_RAM_GB = 2
ROOM = 4


def _place_one(engine: Engine, settings: Settings, i: int, start: threading.Barrier) -> bool:
    start.wait()
    try:
        with session_scope(engine) as s:
            vm = VM(vm_name=f"p{i}", vm_identity=f"ADMIN_race_p{i}", RAM=VM_RAM_MB, vCPU=1)
            s.add(vm)
            s.flush()
            host = placement.find_new_host(s, VM_RAM_MB, 1, vm_id=vm.id, settings=settings)
            vm.host_id = host.id
        return True
    except ResourceExhausted:
        return False


def test_concurrent_placements_never_overfill_a_host(db_url: str, settings: Settings) -> None:
    engine = make_engine(db_url)
    try:
        with session_scope(engine) as s:
            s.add(Host(host_name="only", address="127.0.0.1", CPUs=8, RAM=HOST_RAM_GB, HDD=10,
                       libvirt_uri="test:///default", status=C.HostStatus.UP))  # fmt: skip
        start = threading.Barrier(PLACERS)
        with ThreadPoolExecutor(PLACERS) as pool:
            placed = list(
                pool.map(lambda i: _place_one(engine, settings, i, start), range(PLACERS))
            )
        assert placed.count(True) == ROOM
        with session_scope(engine) as s:
            on_host = s.scalar(select(func.count()).select_from(VM).where(VM.host_id.is_not(None)))
            used = s.scalar(select(Host.ram_used_mb))
        assert (on_host, used) == (ROOM, ROOM * VM_RAM_MB)
    finally:
        engine.dispose()
