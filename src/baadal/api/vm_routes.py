"""VMs: the list (filtered, one query per page), one VM, a new one (a request), the
direct operations and snapshot reverts and deletions, which queue a task and answer 202
with where to poll it, a VNC console grant, and the VM's users."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from baadal import constants as C
from baadal.api.callers import CallerDep, accepted, errors
from baadal.api.request_routes import request_out
from baadal.api.schemas import (
    Accepted,
    RequestOut,
    SnapshotList,
    SnapshotOut,
    VMCreate,
    VMList,
    VMOut,
    VMUserAdd,
    VMUserList,
    VMUserOut,
    VncCreate,
    VncOut,
)
from baadal.services import vm_requests, vms
from baadal.services.rows import VM

router = APIRouter(tags=["vms"])

#: the direct operations of ``POST /vms/{id}/actions/{action}`` (snapshot: a user snapshot)
VMAction = StrEnum("VMAction", {name: name for name in (*vms.DIRECT_OPERATIONS, "snapshot")})
VMStatusName = StrEnum("VMStatusName", {s.name.lower(): s.name.lower() for s in C.VMStatus})
VMIdPath = Annotated[int, Path(ge=1, le=C.ROW_ID_MAX, description="the VM's id")]
SnapshotIdPath = Annotated[int, Path(ge=1, le=C.ROW_ID_MAX, description="the snapshot's id")]
UsernamePath = Annotated[str, Path(min_length=1, max_length=128)]


def vm_out(vm: VM, owner: str | None) -> VMOut:
    return VMOut(
        id=vm.id,
        name=vm.vm_name,
        status=C.VMStatus(vm.status).name.lower(),
        owner=owner,
        ram_mb=vm.RAM,
        vcpus=vm.vCPU,
        disk_gb=vm.HDD,
        extra_disk_gb=vm.extra_HDD,
        host=vm.host.host_name if vm.host else None,
        private_ip=vm.private_ip.private_ip if vm.private_ip else None,
        public_ip=vm.public_ip.public_ip if vm.public_ip else None,
        locked=bool(vm.locked),
    )


@router.get("/vms", response_model=VMList, responses=errors(), summary="list VMs")
def list_vms(
    who: CallerDep,
    after: Annotated[
        int | None, Query(ge=0, le=C.ROW_ID_MAX, description="the previous page's next")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=C.API_PAGE_MAX)] = C.API_PAGE_DEFAULT,
    status: VMStatusName | None = None,
    owner: Annotated[str | None, Query(min_length=1, max_length=128)] = None,
    host: Annotated[str | None, Query(min_length=1, max_length=30)] = None,
) -> VMList:
    with who.read_transaction() as session:
        page = vms.list_vm_page(
            session,
            who.actor,
            after=after,
            limit=limit,
            status=C.VMStatus[status.upper()] if status else None,
            owner=owner,
            host=host,
        )
        return VMList(items=[vm_out(vm, name) for vm, name in page.items], next=page.next)


@router.get("/vms/{vm_id}", response_model=VMOut, responses=errors(404), summary="one VM")
def get_vm(who: CallerDep, vm_id: VMIdPath) -> VMOut:
    with who.read_transaction() as session:
        vm = vms.get_vm(session, who.actor, vm_id)
        owner = vms.list_vm_users(session, who.actor, vm_id)
        return vm_out(vm, next((u.username for u in owner if u.owner), None))


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
    responses=errors(400, 404, 409),
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
