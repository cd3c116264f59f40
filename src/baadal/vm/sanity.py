"""The periodic VM sanity check (the seed's vm_sanity): the database synced with what
libvirt runs on the UP hosts; Orphan domains reported, Undefined ones respawned.

Libvirt calls run between short transactions, never inside one: on SQLite a transaction
holds the database's write lock for as long as it is open.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from baadal import address_pools
from baadal import constants as C
from baadal.config import Settings
from baadal.db.models import VM, Host, Task
from baadal.db.session import session_scope
from baadal.drivers import hypervisor_for
from baadal.drivers.base import DomainInfo, Hypervisor
from baadal.errors import BaadalError
from baadal.host.respawn import respawn_vm
from baadal.tasks.registry import TaskContext, TaskResult, handler
from baadal.vm.common import log_vm_event, set_status

ORPHAN = "Orphan"
UNDEFINED = "Undefined"


@dataclass(frozen=True)
class SanityRow:
    vm_name: str
    vm_identity: str
    host: str | None
    #: what libvirt showed: a VMStatus name, "Orphan", "Undefined" or "?"
    state: str
    action: str


@dataclass
class SanityReport:
    rows: list[SanityRow] = field(default_factory=list)
    #: host name -> why its libvirt did not answer
    unreachable: dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        noted = sum(1 for r in self.rows if r.action != "ok")
        orphans = [r.vm_identity for r in self.rows if r.state == ORPHAN]
        text = f"{len(self.rows)} VMs and domains checked, {noted} not simply ok"
        if orphans:
            text += f"; orphans: {', '.join(orphans)}"
        if self.unreachable:
            text += f"; hosts not answering: {', '.join(sorted(self.unreachable))}"
        return text


@dataclass(frozen=True)
class _Seen:
    """A VM row as read before libvirt was asked."""

    id: int
    name: str
    identity: str
    host_id: int | None
    host_name: str | None
    status: int
    busy: bool


def _read_state(engine: Engine) -> tuple[dict[int, tuple[str, Hypervisor]], list[_Seen]]:
    with session_scope(engine) as session:
        hosts = {
            h.id: (h.host_name, hypervisor_for(h.libvirt_uri))
            for h in session.scalars(select(Host).where(Host.status == C.HostStatus.UP))
        }
        busy = set(
            session.scalars(
                select(Task.vm_id).where(
                    Task.vm_id.is_not(None), Task.status.in_(C.TASK_UNFINISHED)
                )
            )
        )
        vms = [
            _Seen(
                vm.id,
                vm.vm_name,
                vm.vm_identity,
                vm.host_id,
                vm.host.host_name if vm.host else None,
                vm.status,
                vm.id in busy,
            )
            for vm in session.scalars(select(VM).order_by(VM.id))
        ]
    return hosts, vms


def _still_as_seen(session: Session, seen: _Seen) -> VM | None:
    """The VM row if nobody changed it (or queued a task for it) since it was read."""
    vm = session.get(VM, seen.id)
    if vm is None or (vm.host_id, vm.status) != (seen.host_id, seen.status):
        return None
    task = session.scalar(
        select(Task.id).where(Task.vm_id == seen.id, Task.status.in_(C.TASK_UNFINISHED)).limit(1)
    )
    return vm if task is None else None


def _sync_row(
    engine: Engine,
    seen: _Seen,
    host_id: int,
    host_name: str,
    old_host: str | None,
    status: C.VMStatus,
) -> str:
    """Write what libvirt showed: the VM's host and power state, with event rows."""
    with session_scope(engine) as session:
        vm = _still_as_seen(session, seen)
        if vm is None:
            return "skipped: changed meanwhile"
        actions = []
        if vm.host_id != host_id:
            log_vm_event(session, vm, "host", old_host, host_name)
            actions.append(f"host {old_host} -> {host_name}")
            port = vm.vnc_port
            if port is not None and address_pools.vnc_port_taken(session, host_id, port, vm.id):
                # ports are per host: another VM there holds it, so this one's console
                # cannot be reached until it is respawned with a port of its own
                vm.vnc_port = None
                actions.append(f"VNC port {port} held by another VM on {host_name}: dropped")
            vm.host_id = host_id
        if status != C.VMStatus.UNKNOWN and vm.status != status:
            actions.append(f"status {C.VMStatus(vm.status).name} -> {status.name}")
            set_status(session, vm, status, None)
        return "; ".join(actions) or "ok"


def _check_vm(
    engine: Engine,
    settings: Settings,
    seen: _Seen,
    hosts: dict[int, tuple[str, Hypervisor]],
    found: dict[str, list[tuple[int, DomainInfo]]],
    unreachable: dict[str, str],
) -> SanityRow:
    own = seen.host_name
    places = found.get(seen.identity, [])
    if seen.busy or seen.status == C.VMStatus.IN_QUEUE:
        state = C.VMStatus(places[0][1].status).name if len(places) == 1 else "?"
        return SanityRow(seen.name, seen.identity, own, state, "skipped: task in progress")
    if len(places) > 1:
        names = ", ".join(hosts[h][0] for h, _ in places)
        return SanityRow(seen.name, seen.identity, own, "?", f"defined on several hosts: {names}")
    if places:
        ((host_id, info),) = places
        name = hosts[host_id][0]
        action = _sync_row(engine, seen, host_id, name, own, info.status)
        return SanityRow(seen.name, seen.identity, name, info.status.name, action)
    if seen.host_id not in hosts:
        return SanityRow(seen.name, seen.identity, own, "?", "not checked: its host is not UP")
    if unreachable:
        return SanityRow(
            seen.name, seen.identity, own, UNDEFINED, "not respawned: some hosts did not answer"
        )
    try:
        result = respawn_vm(engine, settings, seen.id)
    except BaadalError as exc:
        return SanityRow(seen.name, seen.identity, own, UNDEFINED, f"respawn failed: {exc}")
    return SanityRow(seen.name, seen.identity, result.new_host, UNDEFINED, result.message)


def vm_sanity_check(engine: Engine, settings: Settings) -> SanityReport:
    """Sync the DB with libvirt on the UP hosts and report Orphan and Undefined domains.

    VMs being changed by a task are skipped. A VM undefined behind Baadal's back is
    respawned (its disk is intact, no revert), but only when every UP host answered:
    otherwise its domain may live on the silent one. Orphans are reported, never deleted.
    """
    hosts, vms = _read_state(engine)
    report = SanityReport()
    found: dict[str, list[tuple[int, DomainInfo]]] = {}
    for host_id, (name, hv) in hosts.items():
        try:
            domains = hv.list_domains()
        except BaadalError as exc:
            report.unreachable[name] = str(exc)
            continue
        for domain in domains:
            found.setdefault(domain.name, []).append((host_id, domain))
    for seen in vms:
        report.rows.append(_check_vm(engine, settings, seen, hosts, found, report.unreachable))
    known = {seen.identity for seen in vms}
    for domain_name, places in sorted(found.items()):
        if domain_name not in known:
            for host_id, info in places:
                report.rows.append(
                    SanityRow(
                        "",
                        domain_name,
                        hosts[host_id][0],
                        ORPHAN,
                        f"reported ({info.status.name}), not deleted",
                    )
                )
    return report


@handler(C.TaskType.VM_SANITY, periodic=("vm_sanity",))
def vm_sanity(ctx: TaskContext) -> TaskResult:
    """The periodic 'VM Sanity' handler (idempotent: a re-run checks again)."""
    return TaskResult.success(vm_sanity_check(ctx.engine, ctx.settings).summary())
