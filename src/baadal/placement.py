"""Where a VM goes: the seed's find_new_host, host_resources_used, get_active_hosts and
VM_helper.choose_datastore.

Rules: the host is UP, not excluded, one of the VM's affinity hosts if it has any, and
after placement its reserved RAM and vCPUs stay within the overcommit limit (upstream
allowed 200 % of RAM and CPUs) with the VM's vCPUs no more than the host's CPUs.

Among the hosts that fit, the one with the most RAM left after placement wins (then the
most vCPUs left, then the lowest id). Upstream took a random sample of three hosts and
chose the smallest total RAM, which piles VMs onto small hosts and is not repeatable;
most-free-first spreads load and always gives the same answer for the same state.

Speed: each host row carries the RAM and vCPUs its VMs reserve (kept by a flush listener
in ``db.models``), so choosing a host is one query over the hosts, not an aggregate over
every VM. The caller records the VM's host in its own transaction. On SQLite writers
are serialised by BEGIN IMMEDIATE. On PostgreSQL the chosen host row is locked FOR UPDATE
and the fit checked again on its newest version, so two concurrent placements cannot
both take the last room on a host: the second waits, sees the first's VM and moves on.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from sqlalchemy import Float, cast, func, select, update
from sqlalchemy.orm import Session

from baadal import constants as C
from baadal.config import Settings, get_settings
from baadal.db.models import VM, Datastore, Host, HostAffinity
from baadal.errors import ResourceExhausted, ValidationError

#: hosts a placement may find taken by concurrent placements before it gives up
MAX_PLACEMENT_TRIES = 16


@dataclass(frozen=True)
class ResourceUsage:
    ram_gb: float
    cpus: int


def get_active_hosts(session: Session) -> list[Host]:
    return list(
        session.scalars(select(Host).where(Host.status == C.HostStatus.UP).order_by(Host.id))
    )


def host_resources_used(session: Session, host_id: int) -> ResourceUsage:
    """RAM (GB) and vCPUs reserved by the VMs placed on the host (any power state)."""
    row = session.execute(
        select(Host.ram_used_mb, Host.vcpus_used).where(Host.id == host_id)
    ).one_or_none()
    if row is None:
        raise ValidationError(f"no host with id {host_id}")
    return ResourceUsage(ram_gb=row[0] / 1024, cpus=row[1])


def find_new_host(
    session: Session,
    ram_mb: int,
    vcpu: int,
    *,
    vm_id: int | None = None,
    exclude_host_ids: Collection[int] = (),
    settings: Settings | None = None,
) -> Host:
    """The best UP host for a VM of ``ram_mb`` and ``vcpu``; a clear error if none fits."""
    if isinstance(ram_mb, bool) or not isinstance(ram_mb, int) or ram_mb <= 0:
        raise ValidationError(f"RAM must be a positive number of MB, not {ram_mb!r}")
    if isinstance(vcpu, bool) or not isinstance(vcpu, int) or vcpu <= 0:
        raise ValidationError(f"vCPUs must be a positive number, not {vcpu!r}")
    conf = (settings or get_settings()).placement
    ram_room = cast(Host.RAM, Float) * (1024 * conf.ram_overcommit) - Host.ram_used_mb
    cpu_room = cast(Host.CPUs, Float) * conf.cpu_overcommit - Host.vcpus_used
    candidates = select(Host).where(Host.status == C.HostStatus.UP)
    if exclude_host_ids:
        candidates = candidates.where(Host.id.not_in(list(exclude_host_ids)))
    affinity: list[int] = []
    if vm_id is not None:
        affinity = list(
            session.scalars(select(HostAffinity.affinity_host).where(HostAffinity.vm_id == vm_id))
        )
        if affinity:
            candidates = candidates.where(Host.id.in_(affinity))
    fits = (Host.CPUs >= vcpu, ram_room >= ram_mb, cpu_room >= vcpu)
    order = ((ram_room - ram_mb).desc(), (cpu_room - vcpu).desc(), Host.id)
    lost: list[int] = []
    for _ in range(MAX_PLACEMENT_TRIES):
        query = candidates.where(*fits, Host.id.not_in(lost)) if lost else candidates.where(*fits)
        best = session.scalar(query.order_by(*order).limit(1))
        if best is None:
            break
        if session.get_bind().dialect.name != "postgresql":
            return best
        # lock, and re-evaluate the fit on the row's newest committed version
        locked = session.scalar(
            select(Host)
            .where(Host.id == best.id, *fits)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        if locked is not None:
            return locked
        lost.append(best.id)
    raise ResourceExhausted(_why_nothing_fits(session, candidates, affinity, ram_mb, vcpu))


def _why_nothing_fits(
    session: Session, candidates: object, affinity: list[int], ram_mb: int, vcpu: int
) -> str:
    if affinity:
        names = ", ".join(
            session.scalars(select(Host.host_name).where(Host.id.in_(affinity)).order_by(Host.id))
        )
        if session.scalar(candidates.limit(1)) is None:  # type: ignore[attr-defined]
            return f"the VM's affinity hosts ({names}) are not UP"
        return (
            f"the VM's affinity hosts ({names}) have no room for {ram_mb} MB RAM and {vcpu} vCPUs"
        )
    if session.scalar(candidates.limit(1)) is None:  # type: ignore[attr-defined]
        return "no host is UP"
    return f"no UP host has {ram_mb} MB RAM and {vcpu} vCPUs free within the overcommit limit"


def choose_datastore(session: Session, needed_gb: int = 0) -> Datastore:
    """The datastore with the most free space that fits ``needed_gb``."""
    free = Datastore.capacity - Datastore.used
    best = session.scalar(
        select(Datastore).where(free >= needed_gb).order_by(free.desc(), Datastore.id).limit(1)
    )
    if best is not None:
        return best
    largest = session.execute(
        select(Datastore.ds_name, free).order_by(free.desc()).limit(1)
    ).one_or_none()
    if largest is None:
        raise ResourceExhausted("no datastore is configured")
    raise ResourceExhausted(
        f"no datastore has {needed_gb} GB free; the largest free is {largest[1]} GB on {largest[0]}"
    )


def recompute_host_usage(session: Session) -> None:
    """Rebuild every host's reserved RAM/vCPUs from its VMs (after bulk loads or repair)."""
    totals = {
        host_id: (ram, vcpu)
        for host_id, ram, vcpu in session.execute(
            select(VM.host_id, func.sum(VM.RAM), func.sum(VM.vCPU))
            .where(VM.host_id.is_not(None))
            .group_by(VM.host_id)
        )
    }
    for host_id in session.scalars(select(Host.id)):
        ram, vcpu = totals.get(host_id, (0, 0))
        session.execute(
            update(Host).where(Host.id == host_id).values(ram_used_mb=ram, vcpus_used=vcpu)
        )
