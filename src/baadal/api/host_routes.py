"""Hosts (admins): the list and one host; registering one; maintenance (enter: its VMs
migrate away; leave: it takes VMs again), evacuation and power, which queue tasks and
answer 202; what the host says it has, its recorded utilization and graphs, and its
events."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from baadal import constants as C
from baadal.api.callers import AfterQuery, CallerDep, accepted, errors
from baadal.api.schemas import (
    PNG_RESPONSE,
    PNG_TYPE,
    Accepted,
    GraphName,
    HostCreate,
    HostEventList,
    HostEventOut,
    HostList,
    HostOut,
    HostResourcesOut,
    LimitQuery,
    Period,
    PeriodQuery,
    QueuedOut,
    SkippedOut,
    UtilizationOut,
    utilization_out,
)
from baadal.services import hosts, inventory, monitoring
from baadal.services.hosts import Queued
from baadal.services.rows import Host

router = APIRouter(tags=["hosts"])

HostIdPath = Annotated[int, Path(ge=1, le=C.ROW_ID_MAX, description="the host's id")]
PowerAction = StrEnum("PowerAction", {name: name for name in C.HOST_POWER_ACTIONS})


def host_out(host: Host) -> HostOut:
    return HostOut(
        id=host.id,
        name=host.host_name,
        address=host.address,
        status=C.HostStatus(host.status).name.lower(),
        type=host.host_type,
        category=host.category,
        cpus=host.CPUs,
        ram_gb=host.RAM,
        disk_gb=host.HDD,
        ram_used_mb=host.ram_used_mb,
        vcpus_used=host.vcpus_used,
    )


def queued_out(queued: Queued) -> QueuedOut:
    """The 202 answer of work queued as one task per VM (no single task to point at)."""
    skipped = [SkippedOut(name=name, reason=why) for name, why in queued.skipped]
    return QueuedOut(task_ids=queued.task_ids, skipped=skipped)


@router.get(
    "/hosts", response_model=HostList, responses=errors(), summary="the hosts, by id (admins)"
)
def list_hosts(
    who: CallerDep, after: AfterQuery = None, limit: LimitQuery = C.API_PAGE_DEFAULT
) -> HostList:
    with who.read_transaction() as session:
        page = inventory.list_hosts(session, who.actor, after=after, limit=limit)
        return HostList(items=[host_out(h) for h in page.items], next=page.next)


@router.get(
    "/hosts/{host_id}", response_model=HostOut, responses=errors(404), summary="one host (admins)"
)
def get_host(who: CallerDep, host_id: HostIdPath) -> HostOut:
    with who.read_transaction() as session:
        return host_out(inventory.get_host(session, who.actor, host_id))


@router.post(
    "/hosts",
    status_code=201,
    response_model=HostOut,
    responses=errors(400, 404, 409),
    summary="register a host; it is DOWN until the host sanity check sees it (admins)",
)
def add_host(who: CallerDep, body: HostCreate, response: Response) -> HostOut:
    with who.transaction() as session:
        host = inventory.add_host(
            session,
            who.actor,
            name=body.name,
            address=body.address,
            cpus=body.cpus,
            ram_gb=body.ram_gb,
            hdd_gb=body.hdd_gb,
            libvirt_uri=body.libvirt_uri,
            ssh_user=body.ssh_user,
            ssh_port=body.ssh_port,
            ssh_key_ref=body.ssh_key_ref,
            mac_addr=body.mac_addr,
            host_type=body.type,
            category=body.category,
        )
        out = host_out(host)
    response.headers["Location"] = f"{C.API_PREFIX}/hosts/{out.id}"
    return out


@router.post(
    "/hosts/{host_id}/maintenance",
    status_code=202,
    response_model=QueuedOut,
    responses=errors(404),
    summary="put the host in maintenance (no new VMs) and migrate its VMs away (admins)",
)
def enter_maintenance(who: CallerDep, host_id: HostIdPath) -> QueuedOut:
    with who.transaction() as session:
        return queued_out(hosts.start_maintenance(session, who.actor, host_id))


@router.delete(
    "/hosts/{host_id}/maintenance",
    response_model=HostOut,
    responses=errors(404),
    summary="take the host out of maintenance: it is UP and takes VMs again (admins)",
)
def leave_maintenance(who: CallerDep, host_id: HostIdPath) -> HostOut:
    with who.transaction() as session:
        return host_out(inventory.set_host_status(session, who.actor, host_id, C.HostStatus.UP))


@router.post(
    "/hosts/{host_id}/evacuate",
    status_code=202,
    response_model=QueuedOut,
    responses=errors(404),
    summary="migrate every VM off the host, live when it runs (admins)",
)
def evacuate(who: CallerDep, host_id: HostIdPath) -> QueuedOut:
    with who.transaction() as session:
        return queued_out(hosts.evacuate(session, who.actor, host_id))


@router.post(
    "/hosts/{host_id}/power/{action}",
    status_code=202,
    response_model=Accepted,
    responses=errors(404, 409),
    summary="power the host on (wake-on-LAN or its BMC), off (SSH, or its BMC) or cycle "
    "(off, then on); refused while its VMs run (admins)",
)
def power(who: CallerDep, host_id: HostIdPath, action: PowerAction, response: Response) -> Accepted:
    with who.transaction() as session:
        task_id = hosts.request_power(session, who.actor, host_id, action.value).id
    return accepted(task_id, response)


@router.get(
    "/hosts/{host_id}/resources",
    response_model=HostResourcesOut,
    responses=errors(404, 502),
    summary="CPUs, RAM, disk, MAC and kind, asked from the host now (admins)",
)
def resources(who: CallerDep, host_id: HostIdPath) -> HostResourcesOut:
    name, found = hosts.hardware(who.engine(), who.actor, who.settings, host_id)
    return HostResourcesOut(
        id=host_id,
        name=name,
        cpus=found.resources.cpus,
        ram_gb=found.resources.ram_gb,
        disk_gb=found.resources.hdd_gb,
        mac=found.mac,
        type=found.host_type.value,
    )


@router.get(
    "/hosts/{host_id}/utilization",
    response_model=UtilizationOut,
    responses=errors(404),
    summary="average CPU, memory, disk and network use over a period (admins)",
)
def utilization(
    who: CallerDep, host_id: HostIdPath, period: PeriodQuery = Period.day
) -> UtilizationOut:
    with who.read_transaction() as session:
        host = inventory.get_host(session, who.actor, host_id)
        data = monitoring.fetch_rrd_data(
            session, who.actor, who.settings, "host", host.host_name, period.value
        )
    return utilization_out(period, data)


@router.get(
    "/hosts/{host_id}/graphs/{graph}",
    response_class=Response,
    responses={**errors(404), **PNG_RESPONSE},
    summary="a graph of the host's cpu, ram, disk or network (nw) use, as PNG (admins)",
)
def graph(
    who: CallerDep, host_id: HostIdPath, graph: GraphName, period: PeriodQuery = Period.day
) -> Response:
    with who.read_transaction() as session:
        host = inventory.get_host(session, who.actor, host_id)
        path = monitoring.get_performance_graph(
            session, who.actor, who.settings, "host", host.host_name, graph.value, period.value
        )
    return Response(path.read_bytes(), media_type=PNG_TYPE)


@router.get(
    "/hosts/{host_id}/events",
    response_model=HostEventList,
    responses=errors(404),
    summary="the newest things the host sanity check saw change on the host, oldest first (admins)",
)
def events(
    who: CallerDep,
    host_id: HostIdPath,
    limit: Annotated[int, Query(ge=1, le=C.API_PAGE_MAX)] = C.API_PAGE_DEFAULT,
) -> HostEventList:
    with who.read_transaction() as session:
        _name, found = hosts.events(session, who.actor, host_id)
        return HostEventList(
            items=[
                HostEventOut(
                    id=e.id,
                    name=e.attribute,
                    old_value=e.old_value,
                    new_value=e.new_value,
                    message=e.message,
                    at=e.timestamp,
                )
                for e in found[-limit:]
            ]
        )
