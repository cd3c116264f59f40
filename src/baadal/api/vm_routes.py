"""VMs: the list (filtered, one query per page), one VM, a new one (a request), the
direct operations, snapshot reverts and deletions and migrations, which queue a task and
answer 202 with where to poll it; changes (edit, a disk, clones, a public IP), which are
requests queued at once for admins; a VNC console grant, the VM's users, disks, usage
averages and graphs."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from fastapi import APIRouter, Path, Query, Response
from pydantic_core import to_json
from sqlalchemy.orm import Session

from baadal import constants as C
from baadal.api.callers import AfterQuery, CallerDep, accepted, errors
from baadal.api.request_routes import request_out
from baadal.api.schemas import (
    PNG_RESPONSE,
    PNG_TYPE,
    VM_OUT_FIELDS,
    Accepted,
    ChangeNote,
    CloneCreate,
    DiskAttach,
    DiskList,
    DiskOut,
    GraphName,
    Migrate,
    Period,
    PeriodQuery,
    RequestOut,
    SnapshotList,
    SnapshotOut,
    UtilizationOut,
    VMCreate,
    VMEdit,
    VMList,
    VMOut,
    VMUserAdd,
    VMUserList,
    VMUserOut,
    VncCreate,
    VncOut,
    utilization_out,
    vm_out,
)
from baadal.services import monitoring, vm_requests, vms

router = APIRouter(tags=["vms"])

#: the direct operations of ``POST /vms/{id}/actions/{action}`` (snapshot: a user snapshot)
VMAction = StrEnum("VMAction", {name: name for name in (*vms.DIRECT_OPERATIONS, "snapshot")})
VMStatusName = StrEnum("VMStatusName", {name: name for name in vms.STATUS_NAMES.values()})
VMIdPath = Annotated[int, Path(ge=1, le=C.ROW_ID_MAX, description="the VM's id")]
SnapshotIdPath = Annotated[int, Path(ge=1, le=C.ROW_ID_MAX, description="the snapshot's id")]
UsernamePath = Annotated[str, Path(min_length=1, max_length=128)]


def json_response(body: object) -> Response:
    """A body already in its response model's shape, serialized once in pydantic's core:
    FastAPI would validate it again, in one more thread pool hop (the busiest reads
    skip both)."""
    return Response(to_json(body), media_type="application/json")


@router.get("/vms", response_model=VMList, responses=errors(), summary="list VMs")
async def list_vms(
    who: CallerDep,
    after: AfterQuery = None,
    limit: Annotated[int, Query(ge=1, le=C.API_PAGE_MAX)] = C.API_PAGE_DEFAULT,
    status: VMStatusName | None = None,
    owner: Annotated[str | None, Query(min_length=1, max_length=128)] = None,
    host: Annotated[str | None, Query(min_length=1, max_length=30)] = None,
) -> Response:
    page = await who.read(
        lambda session: vms.list_vm_page_json(
            session,
            who.actor,
            VM_OUT_FIELDS,
            after=after,
            limit=limit,
            status=C.VMStatus[status.upper()] if status else None,
            owner=owner,
            host=host,
        )
    )
    body = b'{"items":' + page.items.encode() + b',"next":' + to_json(page.next) + b"}"
    return Response(body, media_type="application/json")


def change_accepted(
    session: Session, who: CallerDep, request_id: int, response: Response
) -> RequestOut:
    """A change is a request: its task's Location once queued (at once for admins), else
    the request's, to follow its approval."""
    out = request_out(vm_requests.get_request(session, who.actor, request_id))
    where = f"tasks/{out.task_id}" if out.task_id is not None else f"requests/{out.id}"
    response.headers["Location"] = f"{C.API_PREFIX}/{where}"
    return out


@router.get("/vms/{vm_id}", response_model=VMOut, responses=errors(404), summary="one VM")
async def get_vm(who: CallerDep, vm_id: VMIdPath) -> Response:
    return json_response(vm_out(await who.read(lambda s: vms.vm_summary(s, who.actor, vm_id))))


@router.post(
    "/vms",
    status_code=201,
    response_model=RequestOut,
    responses=errors(400, 404, 409),
    summary="ask for a new VM (a request; queued at once for admins)",
)
@router.post(
    "/requests",
    status_code=201,
    response_model=RequestOut,
    responses=errors(400, 404, 409),
    summary="ask for a new VM (the same as POST /vms)",
)
def create_vm(who: CallerDep, body: VMCreate, response: Response) -> RequestOut:
    with who.transaction() as session:
        request_id = vm_requests.request_create(
            session,
            who.actor,
            who.settings,
            vm_name=body.name,
            template=body.template,
            approver=body.approver,
            ram_mb=body.ram_mb,
            vcpus=body.vcpus,
            security_domain=body.security_domain,
            public_ip=body.public_ip,
            extra_disk_gb=body.extra_disk_gb,
            collaborators=body.collaborators,
            purpose=body.purpose,
        )
        out = request_out(vm_requests.get_request(session, who.actor, request_id))
    response.headers["Location"] = f"{C.API_PREFIX}/requests/{request_id}"
    return out


@router.post(
    "/vms/{vm_id}/actions/{action}",
    status_code=202,
    response_model=Accepted,
    responses=errors(404, 409),
    summary="start, stop, suspend, resume, destroy, delete, snapshot or save a VM as a template",
)
def act(who: CallerDep, vm_id: VMIdPath, action: VMAction, response: Response) -> Accepted:
    with who.transaction() as session:
        if action == "snapshot":
            task = vms.request_snapshot(session, who.actor, vm_id)
        else:
            task = vms.operate(session, who.actor, vm_id, action.value)
        task_id = task.id
    return accepted(task_id, response)


@router.get(
    "/vms/{vm_id}/snapshots",
    response_model=SnapshotList,
    responses=errors(404),
    summary="a VM's snapshots, oldest first",
)
def list_snapshots(who: CallerDep, vm_id: VMIdPath) -> SnapshotList:
    with who.read_transaction() as session:
        found = vms.list_snapshots(session, who.actor, vm_id)
        return SnapshotList(
            items=[
                SnapshotOut(
                    id=s.id,
                    name=s.snapshot_name,
                    type=C.SnapshotType(s.type).name.lower(),
                    taken_at=s.timestamp,
                )
                for s in found
            ]
        )


@router.post(
    "/vms/{vm_id}/snapshots/{snapshot_id}/revert",
    status_code=202,
    response_model=Accepted,
    responses=errors(404, 409),
    summary="revert a VM to one of its snapshots",
)
def revert_snapshot(
    who: CallerDep, vm_id: VMIdPath, snapshot_id: SnapshotIdPath, response: Response
) -> Accepted:
    with who.transaction() as session:
        task_id = vms.request_revert(session, who.actor, vm_id, snapshot_id).id
    return accepted(task_id, response)


@router.delete(
    "/vms/{vm_id}/snapshots/{snapshot_id}",
    status_code=202,
    response_model=Accepted,
    responses=errors(404, 409),
    summary="delete one of a VM's snapshots",
)
def delete_snapshot(
    who: CallerDep, vm_id: VMIdPath, snapshot_id: SnapshotIdPath, response: Response
) -> Accepted:
    with who.transaction() as session:
        task_id = vms.request_delete_snapshot(session, who.actor, vm_id, snapshot_id).id
    return accepted(task_id, response)


@router.post(
    "/vms/{vm_id}/vnc",
    status_code=201,
    response_model=VncOut,
    responses=errors(400, 404, 409, 502),
    summary="open a running VM's console for a while (a fresh password, shown once)",
)
def grant_vnc(who: CallerDep, vm_id: VMIdPath, body: VncCreate | None = None) -> VncOut:
    duration_s = (body or VncCreate()).duration_s
    grant = vms.grant_vnc_access(who.engine(), who.actor, who.settings, vm_id, duration_s)
    return VncOut(
        vm_id=grant.vm_id,
        vnc_ip=grant.vnc_ip,
        port=grant.port,
        token=grant.token,
        password=grant.password,
        expires=grant.expiry_time,
    )


@router.get(
    "/vms/{vm_id}/users",
    response_model=VMUserList,
    responses=errors(404),
    summary="a VM's owner and those it is shared with",
)
def list_vm_users(who: CallerDep, vm_id: VMIdPath) -> VMUserList:
    with who.read_transaction() as session:
        people = vms.list_vm_users(session, who.actor, vm_id)
    return VMUserList(
        items=[
            VMUserOut(username=u.username, name=u.name, organisation=u.organisation, owner=u.owner)
            for u in people
        ]
    )


@router.post(
    "/vms/{vm_id}/users",
    status_code=204,
    response_class=Response,
    responses=errors(400, 404, 409),
    summary="share a VM with someone",
)
def add_vm_user(who: CallerDep, vm_id: VMIdPath, body: VMUserAdd) -> Response:
    with who.transaction() as session:
        vms.add_vm_user(session, who.actor, vm_id, body.username)
    return Response(status_code=204)


@router.delete(
    "/vms/{vm_id}/users/{username}",
    status_code=204,
    response_class=Response,
    responses=errors(404, 409),
    summary="stop sharing a VM with someone (not its owner)",
)
def remove_vm_user(who: CallerDep, vm_id: VMIdPath, username: UsernamePath) -> Response:
    with who.transaction() as session:
        vms.remove_vm_user(session, who.actor, vm_id, username)
    return Response(status_code=204)


CHANGE = {
    "status_code": 202,
    "response_model": RequestOut,
    "responses": errors(400, 404, 409),
}


@router.patch(
    "/vms/{vm_id}",
    **CHANGE,
    summary="change a VM's RAM, vCPUs, public IP or security domain (a request)",
)
def edit_vm(who: CallerDep, vm_id: VMIdPath, body: VMEdit, response: Response) -> RequestOut:
    with who.transaction() as session:
        request_id = vm_requests.request_edit(
            session,
            who.actor,
            who.settings,
            vm_id,
            ram_mb=body.ram_mb,
            vcpus=body.vcpus,
            public_ip=body.public_ip,
            security_domain=body.security_domain,
            approver=body.approver,
            purpose=body.purpose,
        )
        return change_accepted(session, who, request_id, response)


def _public_ip(
    who: CallerDep, vm_id: int, attach: bool, note: ChangeNote | None, response: Response
) -> RequestOut:
    note = note or ChangeNote()
    with who.transaction() as session:
        request_id = vm_requests.request_edit(
            session,
            who.actor,
            who.settings,
            vm_id,
            public_ip=attach,
            approver=note.approver,
            purpose=note.purpose,
        )
        return change_accepted(session, who, request_id, response)


@router.post("/vms/{vm_id}/public-ip", **CHANGE, summary="give a VM a public IP (a request)")
def attach_public_ip(
    who: CallerDep, vm_id: VMIdPath, response: Response, body: ChangeNote | None = None
) -> RequestOut:
    return _public_ip(who, vm_id, True, body, response)


@router.delete("/vms/{vm_id}/public-ip", **CHANGE, summary="give a VM's public IP back (a request)")
def detach_public_ip(
    who: CallerDep, vm_id: VMIdPath, response: Response, body: ChangeNote | None = None
) -> RequestOut:
    return _public_ip(who, vm_id, False, body, response)


@router.get(
    "/vms/{vm_id}/disks",
    response_model=DiskList,
    responses=errors(404),
    summary="a VM's extra disks",
)
def list_disks(who: CallerDep, vm_id: VMIdPath) -> DiskList:
    with who.read_transaction() as session:
        found = vms.list_disks(session, who.actor, vm_id)
    return DiskList(
        items=[
            DiskOut(name=d.name, size_gb=d.size_gb, datastore=d.datastore, attached=d.attached)
            for d in found
        ]
    )


@router.post("/vms/{vm_id}/disks", **CHANGE, summary="attach an extra disk to a VM (a request)")
def attach_disk(
    who: CallerDep, vm_id: VMIdPath, body: DiskAttach, response: Response
) -> RequestOut:
    with who.transaction() as session:
        request_id = vm_requests.request_disk(
            session,
            who.actor,
            who.settings,
            vm_id,
            body.size_gb,
            approver=body.approver,
            purpose=body.purpose,
        )
        return change_accepted(session, who, request_id, response)


@router.post("/vms/{vm_id}/clones", **CHANGE, summary="clone a shut-off VM (a request)")
def clone_vm(who: CallerDep, vm_id: VMIdPath, body: CloneCreate, response: Response) -> RequestOut:
    with who.transaction() as session:
        request_id = vm_requests.request_clone(
            session,
            who.actor,
            who.settings,
            vm_id,
            body.count,
            full=body.full,
            approver=body.approver,
            purpose=body.purpose,
        )
        return change_accepted(session, who, request_id, response)


@router.post(
    "/vms/{vm_id}/migrate",
    status_code=202,
    response_model=Accepted,
    responses=errors(400, 404, 409),
    summary="move a VM to another host (admins)",
)
def migrate_vm(
    who: CallerDep, vm_id: VMIdPath, response: Response, body: Migrate | None = None
) -> Accepted:
    body = body or Migrate()
    with who.transaction() as session:
        task_id = vms.request_migrate(session, who.actor, vm_id, body.host, body.live).id
    return accepted(task_id, response)


@router.get(
    "/vms/{vm_id}/utilization",
    response_model=UtilizationOut,
    responses=errors(404),
    summary="a VM's average CPU, memory, disk and network use over a period",
)
def utilization(
    who: CallerDep, vm_id: VMIdPath, period: PeriodQuery = Period.day
) -> UtilizationOut:
    with who.read_transaction() as session:
        data = monitoring.fetch_rrd_data(
            session, who.actor, who.settings, "vm", str(vm_id), period.value
        )
    return utilization_out(period, data)


@router.get(
    "/vms/{vm_id}/graphs/{metric}",
    response_class=Response,
    responses={
        **PNG_RESPONSE,
        **errors(404),
    },
    summary="a graph of a VM's CPU, memory, disk or network use (PNG)",
)
def graph(
    who: CallerDep, vm_id: VMIdPath, metric: GraphName, period: PeriodQuery = Period.day
) -> Response:
    with who.read_transaction() as session:
        path = monitoring.get_performance_graph(
            session, who.actor, who.settings, "vm", str(vm_id), metric.value, period.value
        )
    return Response(path.read_bytes(), media_type=PNG_TYPE)
