"""Requests for VMs: list, show, change a pending one, remind its next approver, and the
steps of the approval chain (verify, approve, reject, withdraw). Making one is
``POST /requests`` or ``POST /vms``, and the VM changes under ``/vms/{id}`` (vm_routes)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from baadal import constants as C
from baadal.api.callers import BeforeQuery, CallerDep, errors
from baadal.api.schemas import Reject, Reminded, RequestEdit, RequestList, RequestOut
from baadal.services import vm_requests
from baadal.services.vm_requests import RequestInfo

router = APIRouter(tags=["requests"])

RequestIdPath = Annotated[int, Path(ge=1, le=C.ROW_ID_MAX, description="the request's id")]


def request_out(info: RequestInfo) -> RequestOut:
    return RequestOut(
        id=info.id,
        kind=info.kind.value,
        status=info.status.name.lower(),
        vm_name=info.vm_name,
        requester=info.requester,
        owner=info.owner,
        approver=info.approver,
        collaborators=list(info.collaborators),
        ram_mb=info.ram_mb,
        vcpus=info.vcpus,
        extra_disk_gb=info.extra_disk_gb,
        clone_count=info.clone_count,
        clone_full=info.clone_full,
        public_ip=info.public_ip,
        security_domain=info.security_domain,
        template=info.template,
        purpose=info.purpose,
        reject_reason=info.reject_reason,
        task_id=info.task_id,
        task_message=info.task_message,
        request_time=info.request_time,
    )


@router.get(
    "/requests", response_model=RequestList, responses=errors(), summary="requests, newest first"
)
def list_requests(
    who: CallerDep,
    pending: Annotated[bool, Query(description="only those still waiting")] = False,
    mine: Annotated[
        bool, Query(description="only those the caller asked for, will own or shares")
    ] = False,
    limit: Annotated[int, Query(ge=1, le=C.TASK_LIST_MAX)] = C.API_PAGE_DEFAULT,
    before: BeforeQuery = None,
) -> RequestList:
    with who.read_transaction() as session:
        page = vm_requests.list_requests(
            session, who.actor, pending_only=pending, mine=mine, limit=limit, before=before
        )
    return RequestList(items=[request_out(info) for info in page.items], next=page.next)


@router.get(
    "/requests/{request_id}",
    response_model=RequestOut,
    responses=errors(404),
    summary="one request",
)
def get_request(who: CallerDep, request_id: RequestIdPath) -> RequestOut:
    with who.read_transaction() as session:
        return request_out(vm_requests.get_request(session, who.actor, request_id))


@router.patch(
    "/requests/{request_id}",
    response_model=RequestOut,
    responses=errors(400, 404, 409),
    summary="change a pending request (its approvers: only the sizes)",
)
def edit_request(who: CallerDep, request_id: RequestIdPath, body: RequestEdit) -> RequestOut:
    with who.transaction() as session:
        info = vm_requests.edit_request(
            session, who.actor, who.settings, request_id, **body.model_dump(exclude_none=True)
        )
        return request_out(info)


@router.post(
    "/requests/{request_id}/remind",
    response_model=Reminded,
    responses=errors(404, 409),
    summary="remind whom a pending request waits for (once a day)",
)
def remind(who: CallerDep, request_id: RequestIdPath) -> Reminded:
    with who.transaction() as session:
        whom = vm_requests.remind_request(session, who.actor, request_id)
    return Reminded(request_id=request_id, reminded=whom)


@router.post(
    "/requests/{request_id}/verify",
    response_model=RequestOut,
    responses=errors(404, 409),
    summary="verify a request (its faculty approver)",
)
def verify(who: CallerDep, request_id: RequestIdPath) -> RequestOut:
    with who.transaction() as session:
        return request_out(vm_requests.verify_request(session, who.actor, request_id))


@router.post(
    "/requests/{request_id}/approve",
    response_model=RequestOut,
    responses=errors(404, 409),
    summary="approve a request (an admin's approval queues it)",
)
def approve(who: CallerDep, request_id: RequestIdPath) -> RequestOut:
    with who.transaction() as session:
        info = vm_requests.approve_request(session, who.actor, who.settings, request_id)
        return request_out(info)


@router.post(
    "/requests/{request_id}/reject",
    response_model=RequestOut,
    responses=errors(400, 404, 409),
    summary="reject a pending request, saying why",
)
def reject(who: CallerDep, request_id: RequestIdPath, body: Reject) -> RequestOut:
    with who.transaction() as session:
        return request_out(vm_requests.reject_request(session, who.actor, request_id, body.reason))


@router.post(
    "/requests/{request_id}/withdraw",
    status_code=204,
    response_class=Response,
    responses=errors(404, 409),
    summary="withdraw one's own pending request (it is deleted)",
)
def withdraw(who: CallerDep, request_id: RequestIdPath) -> Response:
    with who.transaction() as session:
        vm_requests.withdraw_request(session, who.actor, request_id)
    return Response(status_code=204)
