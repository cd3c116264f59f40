"""Hosts for the doors: health, hardware, usage, domains, events, orphans, respawn,
evacuation, maintenance, power and load balancing (thin, guarded wrappers over
:mod:`baadal.host`).

Functions that talk to a host take the engine, not a session: they read the host row in
a short transaction of their own and talk to the host outside it (on SQLite a transaction
holds the write lock, and a slow SSH call must not stall the workers). Functions that only
queue tasks take the caller's session. Results that name a host carry its name, since
people may have typed its id.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from baadal import constants as C
from baadal.config import Settings
from baadal.db.models import Host, HostEventLog, Task
from baadal.db.session import session_scope
from baadal.drivers.base import DomainInfo
from baadal.errors import ConflictError, ValidationError
from baadal.host import domains as host_domains
from baadal.host import health, load_balance, maintenance, power, resources
from baadal.host import respawn as host_respawn
from baadal.host import usage as host_usage
from baadal.host.health import HostCheck
from baadal.host.load_balance import BalancePlan
from baadal.host.maintenance import Queued
from baadal.host.power import HostPowerResult
from baadal.host.resources import HostResources
from baadal.host.respawn import RespawnResult
from baadal.host.usage import HostUsage
from baadal.services import inventory, lookup
from baadal.services.policy import Action, Actor, guarded
from baadal.tasks.params import HostPowerParams
from baadal.tasks.queue import enqueue
from baadal.vm import sanity
from baadal.vm.sanity import SanityReport


@dataclass(frozen=True)
class HostHardware:
    """What the host itself says it has."""

    resources: HostResources
    mac: str
    host_type: C.HostType


def _detached_host(engine: Engine, name_or_id: str | int) -> Host:
    """The host row, read in a short transaction and detached for the remote work."""
    with session_scope(engine) as session:
        host = lookup.host(session, name_or_id)
        session.expunge(host)
    return host


# --- reading a host --------------------------------------------------------------------


@guarded(Action.HOST_READ)
def hardware(
    engine: Engine, actor: Actor, settings: Settings, host: str | int
) -> tuple[str, HostHardware]:
    """CPU cores, RAM, disk, MAC and kind of the host, asked from the host itself."""
    row = _detached_host(engine, host)
    found = HostHardware(
        resources.host_resource_details(row, settings),
        resources.get_host_mac_address(row, settings),
        resources.get_host_type(row, settings),
    )
    return row.host_name, found


@guarded(Action.HOST_READ)
def usage(
    engine: Engine, actor: Actor, settings: Settings, host: str | int, interval_s: float
) -> tuple[str, HostUsage]:
    """CPU, disk, memory and network use of the host over one short interval."""
    row = _detached_host(engine, host)
    return row.host_name, host_usage.get_host_resources_usage(row, settings, interval_s=interval_s)


@guarded(Action.HOST_READ)
def domains(engine: Engine, actor: Actor, host: str | int) -> tuple[str, list[DomainInfo]]:
    """Every domain libvirt has on the host, running or not."""
    row = _detached_host(engine, host)
    return row.host_name, host_domains.get_host_domains(row)


@guarded(Action.HOST_READ)
def events(session: Session, actor: Actor, host: str | int) -> tuple[str, list[HostEventLog]]:
    """What the sanity check saw change on the host, oldest first."""
    row = lookup.host(session, host)
    query = select(HostEventLog).where(HostEventLog.host_id == row.id).order_by(HostEventLog.id)
    return row.host_name, list(session.scalars(query))


# --- checking and repairing ------------------------------------------------------------


@guarded(Action.HOST_MANAGE)
def check_hosts(engine: Engine, actor: Actor, settings: Settings) -> list[HostCheck]:
    """The host sanity check now: ping, libvirtd, and libvirtd/OVS over SSH."""
    return health.host_status_sanity_check(engine, settings)


@guarded(Action.HOST_MANAGE)
def delete_orphan(engine: Engine, actor: Actor, host: str | int, domain: str) -> str:
    """Destroy and undefine a domain Baadal does not know; returns the host's name."""
    row = _detached_host(engine, host)
    host_domains.delete_orphan_vm(engine, row.id, domain)
    return row.host_name


@guarded(Action.HOST_MANAGE)
def respawn(
    engine: Engine, actor: Actor, settings: Settings, host: str | int
) -> tuple[str, list[RespawnResult]]:
    """Bring the VMs of a DOWN host back on other hosts, from their disks."""
    row = _detached_host(engine, host)
    return row.host_name, host_respawn.respawn_dangling_vms(engine, settings, row.id)


@guarded(Action.VM_SANITY)
def vm_sanity(engine: Engine, actor: Actor, settings: Settings) -> SanityReport:
    """Compare the VM rows with what the UP hosts run; fix drift, respawn lost domains."""
    return sanity.vm_sanity_check(engine, settings)


# --- moving VMs away, maintenance --------------------------------------------------------


@guarded(Action.HOST_MANAGE)
def evacuate(session: Session, actor: Actor, host: str | int) -> Queued:
    """Queue a migration of every VM of the host (live when it runs)."""
    row = lookup.host(session, host)
    return maintenance.migrate_all_vms_from_host(session, row.id, actor.user_id)


@guarded(Action.HOST_MANAGE)
def start_maintenance(session: Session, actor: Actor, host: str | int) -> Queued:
    """Put the host in MAINTENANCE (no new VMs) and queue the migration of its VMs."""
    row = inventory.set_host_status(session, actor, host, C.HostStatus.MAINTENANCE)
    return maintenance.migrate_all_vms_from_host(session, row.id, actor.user_id)


def _host_ids(session: Session, hosts: Sequence[str | int]) -> list[int]:
    return [lookup.host(session, h).id for h in hosts]


@guarded(Action.HOST_MANAGE)
def shutdown_vms(session: Session, actor: Actor, hosts: Sequence[str | int]) -> Queued:
    """Queue snapshot-and-power-off of the VMs of these hosts."""
    return maintenance.shutdown_host(session, _host_ids(session, hosts))


@guarded(Action.HOST_MANAGE)
def bootup_vms(session: Session, actor: Actor, hosts: Sequence[str | int]) -> Queued:
    """Queue the return of the VMs a host shutdown snapshotted."""
    return maintenance.bootup_host(session, _host_ids(session, hosts))


# --- power -----------------------------------------------------------------------------


@guarded(Action.HOST_MANAGE)
def power_up(
    engine: Engine, actor: Actor, settings: Settings, host: str | int, *, wait: bool = True
) -> HostPowerResult:
    """Wake the host (wake-on-LAN or IPMI) and, with ``wait``, until it answers."""
    row = _detached_host(engine, host)
    return power.host_power_up(engine, settings, row.id, wait=wait)


@guarded(Action.HOST_MANAGE)
def power_down(
    engine: Engine, actor: Actor, settings: Settings, host: str | int
) -> HostPowerResult:
    """Power the host off (refused while one of its VMs runs)."""
    row = _detached_host(engine, host)
    return power.host_power_down(engine, settings, row.id)


@guarded(Action.HOST_MANAGE)
def request_power(session: Session, actor: Actor, host: str | int, action: str) -> Task:
    """Queue a power on, off or cycle of the host (the worker waits for it to go down or
    come up, which takes minutes); refused while another one for it is waiting, and an
    off or cycle while a VM on the host is not shut off."""
    if action not in C.HOST_POWER_ACTIONS:
        raise ValidationError(
            f"power action {action!r} is not one of {', '.join(C.HOST_POWER_ACTIONS)}"
        )
    row = lookup.host(session, host)
    waiting = select(Task.id).where(
        Task.task_type == C.TaskType.HOST_POWER,
        Task.status.in_(C.TASK_UNFINISHED),
        Task.parameters["host_id"].as_integer() == row.id,
    )
    if session.scalar(waiting.limit(1)) is not None:
        raise ConflictError(f"a power task for host {row.host_name} is already queued")
    if action != "on":
        power.check_vms_off(session, row)  # the task checks again before the power-off
    params = HostPowerParams(host_id=row.id, action=action)
    return enqueue(session, C.TaskType.HOST_POWER, parameters=params, requester_id=actor.user_id)


@guarded(Action.HOST_MANAGE)
def power_auto(engine: Engine, actor: Actor, settings: Settings) -> list[HostPowerResult]:
    """Idle hosts off beyond power.min_hosts_up; wake one when the UP ones are busy."""
    return power.host_power_operation(engine, settings)


# --- load balancing --------------------------------------------------------------------


@guarded(Action.HOST_MANAGE)
def balance(engine: Engine, actor: Actor, settings: Settings, *, dry_run: bool) -> BalancePlan:
    """Queue migrations off hosts above [balance] memory_threshold_pct (at most
    [balance] max_migrations at once); with ``dry_run`` only the plan."""
    return load_balance.balance(engine, settings, dry_run=dry_run)
