"""Monitoring for the front doors: a VM's or host's RRD averages and performance graphs by
name (the seed's get_performance_graph and fetch_rrd_data)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.orm import Session

from baadal.config import Settings
from baadal.errors import ValidationError
from baadal.monitor import graphs, rrd
from baadal.services import lookup
from baadal.services.policy import Action, Actor, guarded, require, require_role_wide
from baadal.services.vms import get_vm

#: what can be monitored: a VM or a host by name, the controller, the NAT box
#: the graphs each subject has (cpu, ram, disk, nw), for pages that show them all
GRAPH_KINDS = tuple(graphs.GRAPH_TYPES)
SUBJECT_KINDS = ("vm", "host", rrd.CONTROLLER_IDENTITY, rrd.NAT_IDENTITY)


@dataclass(frozen=True)
class Subject:
    """Whose history: the RRD identity and the name people know it by."""

    identity: str
    title: str


def _subject(session: Session, actor: Actor, kind: str, name_or_id: str = "") -> Subject:
    """Whose history, if the actor may see it: a VM they may read, or (admins) the rest."""
    if kind == "vm":
        if not name_or_id:
            raise ValidationError("name the vm (its name or id)")
        vm = get_vm(session, actor, name_or_id)
        require(session, actor, Action.VM_READ, vm)
        return Subject(vm.vm_identity, f"VM {vm.vm_name}")
    if kind not in SUBJECT_KINDS:
        raise ValidationError(f"unknown kind {kind!r}; choose one of {', '.join(SUBJECT_KINDS)}")
    require_role_wide(actor, Action.MONITOR_CLOUD)
    if kind in rrd.MACHINE_TITLES:
        return Subject(kind, rrd.MACHINE_TITLES[kind])
    if not name_or_id:
        raise ValidationError(f"name the {kind} (its name or id)")
    host = lookup.host(session, name_or_id)
    return Subject(rrd.host_identity(host.address), f"host {host.host_name}")


@guarded(Action.VM_READ, Action.MONITOR_CLOUD, reads=True)
def get_performance_graph(
    session: Session,
    actor: Actor,
    settings: Settings,
    kind: str,
    name_or_id: str,
    graph: str,
    period: str,
) -> Path:
    """Draw the graph afresh from the subject's RRD file and return the PNG's path."""
    subject = _subject(session, actor, kind, name_or_id)
    return graphs.create_graph(settings, subject.identity, graph, period, title=subject.title)


@guarded(Action.VM_READ, Action.MONITOR_CLOUD, reads=True)
def fetch_rrd_data(
    session: Session, actor: Actor, settings: Settings, kind: str, name_or_id: str, period: str
) -> rrd.RrdAverages:
    subject = _subject(session, actor, kind, name_or_id)
    return rrd.fetch_rrd_data(settings, subject.identity, period)
