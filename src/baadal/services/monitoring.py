"""Monitoring for the front doors: a VM's or host's RRD averages and performance graphs by
name (the seed's get_performance_graph and fetch_rrd_data)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.orm import Session

from baadal.config import Settings
from baadal.errors import ValidationError
from baadal.monitor import graphs, rrd
from baadal.services.inventory import get_host
from baadal.services.vms import find_vm

#: what can be monitored: a VM or a host by name, the controller, the NAT box
SUBJECT_KINDS = ("vm", "host", rrd.CONTROLLER_IDENTITY, rrd.NAT_IDENTITY)


@dataclass(frozen=True)
class Subject:
    """Whose history: the RRD identity and the name people know it by."""

    identity: str
    title: str


def find_subject(session: Session, kind: str, name_or_id: str = "") -> Subject:
    if kind in rrd.MACHINE_TITLES:
        return Subject(kind, rrd.MACHINE_TITLES[kind])
    if kind in ("vm", "host") and not name_or_id:
        raise ValidationError(f"name the {kind} (its name or id)")
    if kind == "vm":
        vm = find_vm(session, name_or_id)
        return Subject(vm.vm_identity, f"VM {vm.vm_name}")
    if kind == "host":
        host = get_host(session, name_or_id)
        return Subject(rrd.host_identity(host.address), f"host {host.host_name}")
    raise ValidationError(f"unknown kind {kind!r}; choose one of {', '.join(SUBJECT_KINDS)}")


def get_performance_graph(
    session: Session, settings: Settings, kind: str, name_or_id: str, graph: str, period: str
) -> Path:
    """Draw the graph afresh from the subject's RRD file and return the PNG's path."""
    subject = find_subject(session, kind, name_or_id)
    return graphs.create_graph(settings, subject.identity, graph, period, title=subject.title)


def fetch_rrd_data(
    session: Session, settings: Settings, kind: str, name_or_id: str, period: str
) -> rrd.RrdAverages:
    return rrd.fetch_rrd_data(settings, find_subject(session, kind, name_or_id).identity, period)
