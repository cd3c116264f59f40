"""Placement rules: UP hosts only, overcommit limits, affinity, most free RAM first,
datastore choice, and the per-host reserved counters kept by every VM change."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, insert, select, update
from sqlalchemy.orm import Session

from baadal import constants as C
from baadal.config import Settings
from baadal.db.models import VM, Datastore, Host, HostAffinity
from baadal.db.session import session_scope
from baadal.errors import ResourceExhausted, ValidationError
from baadal.placement import (
    choose_datastore,
    find_new_host,
    get_active_hosts,
    host_resources_used,
    recompute_host_usage,
)

pytestmark = pytest.mark.unit


def add_host(s: Session, name: str, cpus: int = 4, ram_gb: int = 4, up: bool = True) -> int:
    host = Host(
        host_name=name,
        address="127.0.0.1",
        CPUs=cpus,
        RAM=ram_gb,
        libvirt_uri=f"test:///{name}",
        status=C.HostStatus.UP if up else C.HostStatus.DOWN,
    )
    s.add(host)
    s.flush()
    return host.id


_n = iter(range(10**6))


def add_vm(s: Session, host_id: int | None, ram_mb: int, vcpu: int = 1, **kw: object) -> VM:
    i = next(_n)
    vm = VM(vm_name=f"v{i}", vm_identity=f"O_u_v{i}", RAM=ram_mb, vCPU=vcpu, host_id=host_id, **kw)
    s.add(vm)
    s.flush()
    return vm


def test_only_up_hosts_and_clear_errors(engine: Engine, settings: Settings) -> None:
    with session_scope(engine) as s:
        with pytest.raises(ResourceExhausted, match="no host is UP"):
            find_new_host(s, 256, 1, settings=settings)
        down = add_host(s, "down", up=False)
        up = add_host(s, "up")
        assert [h.id for h in get_active_hosts(s)] == [up]
        assert find_new_host(s, 256, 1, settings=settings).id == up
        assert down != up
        with pytest.raises(ResourceExhausted, match="no host is UP"):
            find_new_host(s, 256, 1, exclude_host_ids=[up], settings=settings)
        for bad in (0, -1, True):
            with pytest.raises(ValidationError):
                find_new_host(s, bad, 1, settings=settings)  # type: ignore[arg-type]
            with pytest.raises(ValidationError):
                find_new_host(s, 256, bad, settings=settings)  # type: ignore[arg-type]


def test_ram_overcommit_boundary_is_200_percent(engine: Engine, settings: Settings) -> None:
    with session_scope(engine) as s:
        h = add_host(s, "h", cpus=8, ram_gb=1)  # 2048 MB placeable
        add_vm(s, h, 1024)
        assert find_new_host(s, 1024, 1, settings=settings).id == h  # exactly 200 %
        with pytest.raises(ResourceExhausted, match="1025 MB RAM"):
            find_new_host(s, 1025, 1, settings=settings)
        settings.placement.ram_overcommit = 1.0
        with pytest.raises(ResourceExhausted):
            find_new_host(s, 1024, 1, settings=settings)


def test_cpu_overcommit_and_vcpus_above_host_cpus(engine: Engine, settings: Settings) -> None:
    with session_scope(engine) as s:
        h = add_host(s, "h", cpus=2, ram_gb=64)
        add_vm(s, h, 256, vcpu=2)
        assert find_new_host(s, 256, 2, settings=settings).id == h  # 4 of 2x2
        add_vm(s, h, 256, vcpu=1)
        with pytest.raises(ResourceExhausted):
            find_new_host(s, 256, 2, settings=settings)  # 5 > 4
        big = add_host(s, "big", cpus=2, ram_gb=64)
        with pytest.raises(ResourceExhausted):
            find_new_host(s, 256, 3, settings=settings)  # more vCPUs than any host has
        assert find_new_host(s, 256, 2, settings=settings).id == big


def test_counters_follow_every_vm_change(engine: Engine, settings: Settings) -> None:
    """Every placed VM reserves its RAM/vCPUs whatever its power state."""
    with session_scope(engine) as s:
        a, b = add_host(s, "a"), add_host(s, "b")
        vm = add_vm(s, a, 512, 2, status=C.VMStatus.SHUTDOWN)
        other = add_vm(s, a, 256, 1)
    with session_scope(engine) as s:
        assert host_resources_used(s, a) == host_resources_used(s, a).__class__(0.75, 3)
        vm = s.get(VM, vm.id)
        vm.host_id = b  # moved
        vm.RAM = 1024  # and resized
    with session_scope(engine) as s:
        assert host_resources_used(s, a).ram_gb == 0.25
        assert host_resources_used(s, b).ram_gb == 1.0
        s.delete(s.get(VM, other.id))
        s.get(VM, vm.id).host_id = None
    with session_scope(engine) as s:
        assert host_resources_used(s, a).cpus == 0 and host_resources_used(s, b).cpus == 0
        # bulk loads bypass the ORM: recompute rebuilds the counters
        s.execute(insert(VM), [{"vm_name": "x", "vm_identity": "O_u_x", "RAM": 300,
                                "vCPU": 1, "host_id": a}])  # fmt: skip
        recompute_host_usage(s)
        assert host_resources_used(s, a).ram_gb == pytest.approx(300 / 1024)


def test_most_free_ram_wins_then_cpu_then_id(engine: Engine, settings: Settings) -> None:
    with session_scope(engine) as s:
        small = add_host(s, "small", ram_gb=4)
        large = add_host(s, "large", ram_gb=8)
        assert find_new_host(s, 256, 1, settings=settings).id == large
        add_vm(s, large, 8192)
        assert find_new_host(s, 256, 1, settings=settings).id == small
        twin = add_host(s, "twin", ram_gb=4)
        assert find_new_host(s, 256, 1, settings=settings).id == small  # tie: lowest id
        add_vm(s, small, 0, vcpu=1)
        assert find_new_host(s, 256, 1, settings=settings).id == twin  # tie: more vCPUs left


def test_affinity_is_respected(engine: Engine, settings: Settings) -> None:
    with session_scope(engine) as s:
        roomy = add_host(s, "roomy", ram_gb=64)
        pinned = add_host(s, "pinned", ram_gb=1)
        vm = add_vm(s, None, 512)
        s.add(HostAffinity(vm_id=vm.id, affinity_host=pinned))
        s.flush()
        assert find_new_host(s, 512, 1, vm_id=vm.id, settings=settings).id == pinned
        assert find_new_host(s, 512, 1, settings=settings).id == roomy  # others unaffected
        with pytest.raises(ResourceExhausted, match=r"affinity hosts \(pinned\) have no room"):
            find_new_host(s, 4096, 1, vm_id=vm.id, settings=settings)
        s.execute(update(Host).where(Host.id == pinned).values(status=C.HostStatus.DOWN))
        with pytest.raises(ResourceExhausted, match=r"affinity hosts \(pinned\) are not UP"):
            find_new_host(s, 512, 1, vm_id=vm.id, settings=settings)


def test_choose_datastore_most_free_that_fits(engine: Engine) -> None:
    with session_scope(engine) as s:
        with pytest.raises(ResourceExhausted, match="no datastore is configured"):
            choose_datastore(s)
        for name, cap, used in [("a", 100, 90), ("b", 50, 10), ("c", 200, 170)]:
            s.add(Datastore(ds_name=name, capacity=cap, used=used, path="/x",
                            system_mount_point=f"/mnt/{name}"))  # fmt: skip
        s.flush()
        assert choose_datastore(s).ds_name == "b"
        assert choose_datastore(s, 40).ds_name == "b"
        with pytest.raises(ResourceExhausted, match="largest free is 40 GB on b"):
            choose_datastore(s, 41)
        assert [d for d in s.scalars(select(Datastore.used))] == [90, 10, 170]
