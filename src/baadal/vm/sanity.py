"""The periodic VM sanity check (the seed's vm_sanity): the database synced with what
libvirt runs on the UP hosts; Orphan domains reported, Undefined ones respawned.

Libvirt calls run between short transactions, never inside one: on SQLite a transaction
holds the database's write lock for as long as it is open. The hosts are asked in
parallel, each within a time budget, and the database costs the same few statements for
ten VMs or 25,000: one read of everything, then writes only for the VMs libvirt
contradicts, in batches.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from sqlalchemy import Engine, select

from baadal import address_pools
from baadal import constants as C
from baadal.config import Settings
from baadal.db.models import VM, Host, Task
from baadal.db.session import session_scope
from baadal.drivers import hypervisor_for
from baadal.drivers.base import DomainInfo, Hypervisor
from baadal.errors import BaadalError
from baadal.gcpause import paused_gc
from baadal.host.fanout import fan_out
from baadal.host.respawn import respawn_vm
from baadal.tasks.registry import TaskContext, TaskResult, handler
from baadal.vm.common import log_vm_event, set_status

ORPHAN = "Orphan"
UNDEFINED = "Undefined"
#: VM rows written per transaction when libvirt contradicts many at once
_SYNC_BATCH = 500


class SanityRow(NamedTuple):
    """One line of the report (a tuple: a sweep makes one per VM, 25,000 of them)."""

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


class _Seen(NamedTuple):
    """A VM row as read before libvirt was asked."""

    id: int
    name: str
    identity: str
    host_id: int | None
    host_name: str | None
    status: int
    busy: bool


@dataclass(frozen=True)
class _Change:
    """What libvirt showed for a VM whose row says otherwise."""

    seen: _Seen
    host_id: int
    host_name: str
    status: C.VMStatus


def _read_state(engine: Engine) -> tuple[dict[int, tuple[str, Hypervisor]], list[_Seen]]:
    """The UP hosts, and every VM with its host's name and whether a task is unfinished
    for it: three queries, however many VMs."""
    with session_scope(engine) as session:
        hosts = {
            host_id: (name, hypervisor_for(uri))
            for host_id, name, uri in session.execute(
                select(Host.id, Host.host_name, Host.libvirt_uri).where(
                    Host.status == C.HostStatus.UP
                )
            )
        }
        busy = set(
            session.scalars(
                select(Task.vm_id).where(
                    Task.vm_id.is_not(None), Task.status.in_(C.TASK_UNFINISHED)
                )
            )
        )
        rows = session.execute(
            select(VM.id, VM.vm_name, VM.vm_identity, VM.host_id, Host.host_name, VM.status)
            .outerjoin(Host, Host.id == VM.host_id)
            .order_by(VM.id)
        )
        vms = [_Seen(*row, busy=row[0] in busy) for row in rows]
    return hosts, vms


def _sync_rows(engine: Engine, changes: list[_Change]) -> dict[int, str]:
    """Write what libvirt showed (the VMs' hosts and power states, with event rows), one
    transaction per batch; a VM changed, or given a task, since it was read is left
    alone. The action per VM id."""
    actions: dict[int, str] = {}
    for first in range(0, len(changes), _SYNC_BATCH):
        batch = changes[first : first + _SYNC_BATCH]
        ids = [c.seen.id for c in batch]
        with session_scope(engine) as session:
            rows = {vm.id: vm for vm in session.scalars(select(VM).where(VM.id.in_(ids)))}
            busy = set(
                session.scalars(
                    select(Task.vm_id).where(
                        Task.vm_id.in_(ids), Task.status.in_(C.TASK_UNFINISHED)
                    )
                )
            )
            for change in batch:
                seen = change.seen
                vm = rows.get(seen.id)
                if (
                    vm is None
                    or seen.id in busy
                    or (vm.host_id, vm.status) != (seen.host_id, seen.status)
                ):
                    actions[seen.id] = "skipped: changed meanwhile"
                    continue
                done = []
                if vm.host_id != change.host_id:
                    log_vm_event(session, vm, "host", seen.host_name, change.host_name)
                    done.append(f"host {seen.host_name} -> {change.host_name}")
                    port = vm.vnc_port
                    if port is not None and address_pools.vnc_port_taken(
                        session, change.host_id, port, vm.id
                    ):
                        # ports are per host: another VM there holds it, so this one's
                        # console cannot be reached until it is respawned with its own
                        vm.vnc_port = None
                        done.append(
                            f"VNC port {port} held by another VM on {change.host_name}: dropped"
                        )
                    vm.host_id = change.host_id
                if change.status != C.VMStatus.UNKNOWN and vm.status != change.status:
                    done.append(f"status {C.VMStatus(vm.status).name} -> {change.status.name}")
                    set_status(session, vm, change.status, None)
                actions[seen.id] = "; ".join(done) or "ok"
    return actions


def _check_vm(
    engine: Engine,
    settings: Settings,
    seen: _Seen,
    hosts: dict[int, tuple[str, Hypervisor]],
    found: dict[str, list[tuple[int, DomainInfo]]],
    unreachable: dict[str, str],
) -> SanityRow | _Change:
    """The VM's row of the report, or the change to write when libvirt contradicts the
    database (the caller writes those in batches)."""
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
        in_step = seen.host_id == host_id and info.status in (C.VMStatus.UNKNOWN, seen.status)
        if in_step:
            return SanityRow(seen.name, seen.identity, name, info.status.name, "ok")
        return _Change(seen, host_id, name, info.status)
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


def _list_domains(hv: Hypervisor) -> list[DomainInfo]:
    return hv.list_domains()


def _domains_by_name(
    hosts: dict[int, tuple[str, Hypervisor]], unreachable: dict[str, str]
) -> dict[str, list[tuple[int, DomainInfo]]]:
    """Every UP host's domains, asked in parallel; hosts that fail go in ``unreachable``."""
    found: dict[str, list[tuple[int, DomainInfo]]] = {}
    host_ids = list(hosts)
    outcomes = fan_out(
        _list_domains,
        [hosts[h][1] for h in host_ids],
        threads=C.SWEEP_THREADS,
        budget_s=C.SWEEP_HOST_BUDGET_S,
    )
    for host_id, outcome in zip(host_ids, outcomes, strict=True):
        if outcome.error is not None:
            if not isinstance(outcome.error, BaadalError):
                raise outcome.error
            unreachable[hosts[host_id][0]] = str(outcome.error)
            continue
        for domain in outcome.value or []:
            found.setdefault(domain.name, []).append((host_id, domain))
    return found


def vm_sanity_check(engine: Engine, settings: Settings) -> SanityReport:
    """Sync the DB with libvirt on the UP hosts and report Orphan and Undefined domains.

    VMs being changed by a task are skipped. A VM undefined behind Baadal's back is
    respawned (its disk is intact, no revert), but only when every UP host answered:
    otherwise its domain may live on the silent one. Orphans are reported, never deleted.
    """
    with paused_gc():  # 25,000 rows and domains hold no cycles (see baadal.gcpause)
        return _sweep(engine, settings)


def _sweep(engine: Engine, settings: Settings) -> SanityReport:
    hosts, vms = _read_state(engine)
    report = SanityReport()
    found = _domains_by_name(hosts, report.unreachable)
    checked = [_check_vm(engine, settings, seen, hosts, found, report.unreachable) for seen in vms]
    actions = _sync_rows(engine, [c for c in checked if isinstance(c, _Change)])
    for item in checked:
        if isinstance(item, _Change):
            seen = item.seen
            action = actions[seen.id]
            item = SanityRow(seen.name, seen.identity, item.host_name, item.status.name, action)
        report.rows.append(item)
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
