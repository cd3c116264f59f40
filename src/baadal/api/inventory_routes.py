"""What the cloud is made of, besides hosts: datastores and templates, security domains,
VLANs and the private and public address pools. Reads are for those the policy lets see
them (templates and domains: each their own share); changes are for admins."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from baadal import constants as C
from baadal.api.callers import AfterQuery, CallerDep, errors
from baadal.api.schemas import (
    IPV4_PATTERN,
    AddressRange,
    Counted,
    DatastoreCreate,
    DatastoreList,
    DatastoreOut,
    LimitQuery,
    PoolUsageOut,
    PrivateRange,
    SecurityDomainCreate,
    SecurityDomainList,
    SecurityDomainOut,
    TemplateCreate,
    TemplateList,
    TemplateOut,
    VlanCreate,
    VlanList,
    VlanOut,
    VlanUsageOut,
)
from baadal.services import inventory, networks, pools
from baadal.services.networks import DomainSummary
from baadal.services.rows import Datastore, Template

router = APIRouter()

IdPath = Annotated[int, Path(ge=1, le=C.ROW_ID_MAX, description="the object's id")]
#: one end of an address range (both included)
IPv4Query = Annotated[str, Query(min_length=7, max_length=15, pattern=IPV4_PATTERN)]


def _created(response: Response, path: str) -> None:
    response.headers["Location"] = f"{C.API_PREFIX}{path}"


# --- datastores ----------------------------------------------------------------------


def datastore_out(store: Datastore) -> DatastoreOut:
    return DatastoreOut(
        id=store.id,
        name=store.ds_name,
        address=store.ds_ip,
        path=store.path,
        mount_point=store.system_mount_point,
        capacity_gb=store.capacity,
        used_gb=store.used,
    )


@router.get(
    "/datastores",
    tags=["datastores"],
    response_model=DatastoreList,
    responses=errors(),
    summary="the datastores, by id (admins)",
)
def list_datastores(
    who: CallerDep, after: AfterQuery = None, limit: LimitQuery = C.API_PAGE_DEFAULT
) -> DatastoreList:
    with who.read_transaction() as session:
        page = inventory.list_datastores(session, who.actor, after=after, limit=limit)
        return DatastoreList(items=[datastore_out(d) for d in page.items], next=page.next)


@router.get(
    "/datastores/{datastore_id}",
    tags=["datastores"],
    response_model=DatastoreOut,
    responses=errors(404),
    summary="one datastore (admins)",
)
def get_datastore(who: CallerDep, datastore_id: IdPath) -> DatastoreOut:
    with who.read_transaction() as session:
        return datastore_out(inventory.get_datastore(session, who.actor, datastore_id))


@router.post(
    "/datastores",
    tags=["datastores"],
    status_code=201,
    response_model=DatastoreOut,
    responses=errors(400, 409),
    summary="register a mounted datastore and lay out its directories (admins)",
)
def add_datastore(who: CallerDep, body: DatastoreCreate, response: Response) -> DatastoreOut:
    with who.transaction() as session:
        store = inventory.add_datastore(
            session,
            who.actor,
            name=body.name,
            mount_point=body.mount_point,
            capacity_gb=body.capacity_gb,
            path=body.path,
            ds_ip=body.ds_ip,
            username=body.username,
            password_ref=body.password_ref,
            settings=who.settings,
        )
        out = datastore_out(store)
    _created(response, f"/datastores/{out.id}")
    return out


# --- templates -----------------------------------------------------------------------


def template_out(template: Template) -> TemplateOut:
    return TemplateOut(
        id=template.id,
        name=template.name,
        os=template.os,
        os_name=template.os_name,
        os_version=template.os_version,
        os_type=template.os_type,
        arch=template.arch,
        hdd_gb=template.hdd,
        image=template.hdfile,
        disk_type=template.type,
        tag=template.tag,
        datastore_id=template.datastore_id,
        active=bool(template.is_active),
    )


@router.get(
    "/templates",
    tags=["templates"],
    response_model=TemplateList,
    responses=errors(),
    summary="the templates the caller may use (admins: all), by id",
)
def list_templates(
    who: CallerDep,
    active_only: bool = False,
    after: AfterQuery = None,
    limit: LimitQuery = C.API_PAGE_DEFAULT,
) -> TemplateList:
    with who.read_transaction() as session:
        page = inventory.list_templates(
            session, who.actor, active_only=active_only, after=after, limit=limit
        )
        return TemplateList(items=[template_out(t) for t in page.items], next=page.next)


@router.get(
    "/templates/{template_id}",
    tags=["templates"],
    response_model=TemplateOut,
    responses=errors(404),
    summary="one template",
)
def get_template(who: CallerDep, template_id: IdPath) -> TemplateOut:
    with who.read_transaction() as session:
        return template_out(inventory.get_template(session, who.actor, template_id))


@router.post(
    "/templates",
    tags=["templates"],
    status_code=201,
    response_model=TemplateOut,
    responses=errors(400, 404, 409),
    summary="register a template image already on a datastore (admins)",
)
def add_template(who: CallerDep, body: TemplateCreate, response: Response) -> TemplateOut:
    with who.transaction() as session:
        template = inventory.add_template(
            session,
            who.actor,
            name=body.name,
            datastore=body.datastore,
            hdfile=body.image,
            os_version=body.os_version,
            hdd_gb=body.hdd_gb,
            os=body.os,
            os_name=body.os_name,
            os_type=body.os_type,
            arch=body.arch,
            disk_type=body.disk_type,
            tag=body.tag,
            settings=who.settings,
        )
        out = template_out(template)
    _created(response, f"/templates/{out.id}")
    return out


@router.post(
    "/templates/{template_id}/deactivate",
    tags=["templates"],
    response_model=TemplateOut,
    responses=errors(404),
    summary="hide a template from new requests; its VMs keep it (admins)",
)
def deactivate_template(who: CallerDep, template_id: IdPath) -> TemplateOut:
    with who.transaction() as session:
        return template_out(inventory.deactivate_template(session, who.actor, template_id))


# --- security domains ------------------------------------------------------------------


def domain_out(domain: DomainSummary) -> SecurityDomainOut:
    return SecurityDomainOut(
        id=domain.id,
        name=domain.name,
        vlan=domain.vlan_name,
        vlan_tag=domain.vlan_tag,
        network=domain.network,
        pool_size=domain.pool_size,
        pool_used=domain.pool_used,
        vms=domain.vms,
        visible_to_all=domain.visible_to_all,
    )


@router.get(
    "/security-domains",
    tags=["security domains"],
    response_model=SecurityDomainList,
    responses=errors(),
    summary="the security domains the caller may put VMs in, with their pool usage, by id",
)
def list_security_domains(
    who: CallerDep, after: AfterQuery = None, limit: LimitQuery = C.API_PAGE_DEFAULT
) -> SecurityDomainList:
    with who.read_transaction() as session:
        page = networks.list_security_domains(session, who.actor, after=after, limit=limit)
        return SecurityDomainList(items=[domain_out(d) for d in page.items], next=page.next)


@router.post(
    "/security-domains",
    tags=["security domains"],
    status_code=201,
    response_model=SecurityDomainOut,
    responses=errors(400, 409),
    summary="a security domain with its own new VLAN and, optionally, a private pool (admins)",
)
def add_security_domain(who: CallerDep, body: SecurityDomainCreate) -> SecurityDomainOut:
    with who.transaction() as session:
        domain = networks.add_security_domain(
            session,
            who.actor,
            body.name,
            vlan_tag=body.vlan_tag,
            cidr=body.cidr,
            ip_from=body.ip_from,
            ip_to=body.ip_to,
            visible_to_all=body.visible_to_all,
        )
        # the page that starts at the new domain
        made = networks.list_security_domains(session, who.actor, after=domain.id - 1, limit=1)
    return domain_out(made.items[0])


@router.delete(
    "/security-domains/{domain_id}",
    tags=["security domains"],
    status_code=204,
    response_class=Response,
    responses=errors(404, 409),
    summary="remove a security domain, its VLAN and its pool; refused while a VM uses it (admins)",
)
def remove_security_domain(who: CallerDep, domain_id: IdPath) -> Response:
    with who.transaction() as session:
        networks.remove_security_domain(session, who.actor, domain_id)
    return Response(status_code=204)


# --- VLANs and address pools -------------------------------------------------------------


@router.get(
    "/pools",
    tags=["pools"],
    response_model=PoolUsageOut,
    responses=errors(),
    summary="public addresses and VNC ports: total, used, free (each VLAN's: GET /vlans) (admins)",
)
def pool_usage(who: CallerDep) -> PoolUsageOut:
    with who.read_transaction() as session:
        usage = pools.usage(session, who.actor)
    first, last = usage.vnc_range
    return PoolUsageOut(
        public_total=usage.public_total,
        public_used=usage.public_used,
        public_free=usage.public_free,
        vnc_first_port=first,
        vnc_last_port=last,
        vnc_used=usage.vnc_used,
    )


@router.get(
    "/vlans",
    tags=["pools"],
    response_model=VlanList,
    responses=errors(),
    summary="the VLANs, by id, with their private addresses: total, used, free (admins)",
)
def list_vlans(
    who: CallerDep, after: AfterQuery = None, limit: LimitQuery = C.API_PAGE_DEFAULT
) -> VlanList:
    with who.read_transaction() as session:
        page = pools.list_vlans(session, who.actor, after=after, limit=limit)
    return VlanList(
        items=[
            VlanUsageOut(
                id=v.id,
                name=v.name,
                tag=v.tag,
                network=v.cidr,
                total=v.total,
                used=v.used,
                free=v.free,
            )
            for v in page.items
        ],
        next=page.next,
    )


@router.post(
    "/vlans",
    tags=["pools"],
    status_code=201,
    response_model=VlanOut,
    responses=errors(400, 409),
    summary="a VLAN whose network overlaps no other VLAN's (admins)",
)
def add_vlan(who: CallerDep, body: VlanCreate) -> VlanOut:
    with who.transaction() as session:
        vlan = pools.add_vlan(session, who.actor, body.name, body.tag, body.cidr)
        return VlanOut(id=vlan.id, name=vlan.name, tag=vlan.vlan_tag, network=vlan.vlan_addr)


@router.post(
    "/pools/private",
    tags=["pools"],
    status_code=201,
    response_model=Counted,
    responses=errors(400, 404, 409),
    summary="add private addresses (each with a new MAC) to a VLAN: all of them or none (admins)",
)
def add_private(who: CallerDep, body: PrivateRange) -> Counted:
    with who.transaction() as session:
        count = pools.add_private_ips(session, who.actor, body.vlan, body.ip_from, body.ip_to)
    return Counted(count=count)


@router.delete(
    "/pools/private",
    tags=["pools"],
    response_model=Counted,
    responses=errors(404, 409),
    summary="remove a range of private addresses; refused if one is in use (admins)",
)
def remove_private(who: CallerDep, ip_from: IPv4Query, ip_to: IPv4Query) -> Counted:
    with who.transaction() as session:
        count = pools.remove_private_ips(session, who.actor, ip_from, ip_to)
    return Counted(count=count)


@router.post(
    "/pools/public",
    tags=["pools"],
    status_code=201,
    response_model=Counted,
    responses=errors(400, 409),
    summary="add public addresses: all of them or none (admins)",
)
def add_public(who: CallerDep, body: AddressRange) -> Counted:
    with who.transaction() as session:
        count = pools.add_public_ips(session, who.actor, body.ip_from, body.ip_to)
    return Counted(count=count)


@router.delete(
    "/pools/public",
    tags=["pools"],
    response_model=Counted,
    responses=errors(404, 409),
    summary="remove a range of public addresses; refused if one is in use (admins)",
)
def remove_public(who: CallerDep, ip_from: IPv4Query, ip_to: IPv4Query) -> Counted:
    with who.transaction() as session:
        count = pools.remove_public_ips(session, who.actor, ip_from, ip_to)
    return Counted(count=count)
