"""VMs: the list (filtered, one query per page), one VM, a new one (a request), and the
direct operations, which queue a task and answer 202 with where to poll it."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from baadal import constants as C
from baadal.api.callers import CallerDep, errors
from baadal.api.request_routes import request_out
from baadal.api.schemas import Accepted, RequestOut, VMCreate, VMList, VMOut
from baadal.services import vm_requests, vms
from baadal.services.rows import VM

router = APIRouter(tags=["vms"])

#: the direct operations of ``POST /vms/{id}/actions/{action}`` (snapshot: a user snapshot)
VMAction = StrEnum("VMAction", {name: name for name in (*vms.DIRECT_OPERATIONS, "snapshot")})
VMStatusName = StrEnum("VMStatusName", {s.name.lower(): s.name.lower() for s in C.VMStatus})
VMIdPath = Annotated[int, Path(ge=1, le=C.ROW_ID_MAX, description="the VM's id")]


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
    with who.transaction() as session:
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
    with who.transaction() as session:
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
    response.headers["Location"] = f"{C.API_PREFIX}/tasks/{task_id}"
    return Accepted(task_id=task_id)
