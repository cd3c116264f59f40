"""Hosts (admins): the list and one host, with what the VMs placed on it reserve."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from baadal import constants as C
from baadal.api.callers import CallerDep, errors
from baadal.api.schemas import HostList, HostOut
from baadal.services import inventory
from baadal.services.rows import Host

router = APIRouter(tags=["hosts"])


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


@router.get("/hosts", response_model=HostList, responses=errors(), summary="every host (admins)")
def list_hosts(who: CallerDep) -> HostList:
    with who.read_transaction() as session:
        return HostList(items=[host_out(h) for h in inventory.list_hosts(session, who.actor)])


@router.get(
    "/hosts/{host_id}", response_model=HostOut, responses=errors(404), summary="one host (admins)"
)
def get_host(
    who: CallerDep,
    host_id: Annotated[int, Path(ge=1, le=C.ROW_ID_MAX, description="the host's id")],
) -> HostOut:
    with who.read_transaction() as session:
        return host_out(inventory.get_host(session, who.actor, host_id))
