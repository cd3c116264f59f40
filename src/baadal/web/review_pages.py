"""Faculty and orgadmin pages: the requests to verify (faculty) or approve (orgadmins),
by kind in tabs, with verify / approve / reject / remind / edit; the organisation's VMs.
The services decide who may do what; these pages only show the likely buttons."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Form, Path, Query, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session

from baadal import constants as C
from baadal.errors import PermissionDenied
from baadal.services import users, vm_requests, vms
from baadal.services.vm_requests import RequestInfo
from baadal.web.pages import Visitor, VisitorDep, local_path, optional_int, perform, render

router = APIRouter(include_in_schema=False)

RowId = Annotated[int, Path(ge=1, le=C.ROW_ID_MAX)]
Back = Annotated[str, Form(max_length=512)]
#: the tabs: a request kind and its title
TABS = {
    C.RequestKind.CREATE: "New VMs",
    C.RequestKind.CLONE: "Clones",
    C.RequestKind.ATTACH_DISK: "Disks",
    C.RequestKind.EDIT: "Changes",
}
KindQuery = Annotated[C.RequestKind, Query()]


def _queue_page(
    request: Request,
    visitor: Visitor,
    kind: C.RequestKind,
    title: str,
    path: str,
    wanted: Callable[[RequestInfo], bool],
    **extra: object,
) -> Response:
    with visitor.transaction() as session:
        pending = [
            r
            for r in vm_requests.list_requests(session, visitor.actor, pending_only=True).items
            if wanted(r)
        ]
    shown = [r for r in pending if r.kind == kind]
    counts = {k: sum(1 for r in pending if r.kind == k) for k in TABS}
    return render(
        request,
        "review.html",
        visitor,
        title=title,
        path=path,
        tabs=TABS,
        kind=kind,
        counts=counts,
        requests=shown,
        pending=C.REQUEST_PENDING,
        reviewing=True,
        back=f"{path}?kind={kind.value}",
        **extra,
    )


@router.get("/review")
def review(
    request: Request, visitor: VisitorDep, kind: KindQuery = C.RequestKind.CREATE
) -> Response:
    """Faculty: the requests naming them as approver that wait for their verification."""
    if not visitor.has(C.Role.FACULTY):
        raise PermissionDenied(f"{visitor.actor.username} is not a faculty member")
    me = visitor.actor.username

    def waits_for_me(req: RequestInfo) -> bool:
        return req.status == C.RequestStatus.REQUESTED and req.approver == me

    return _queue_page(request, visitor, kind, "Requests to verify", "/review", waits_for_me)


@router.get("/org")
def organisation(
    request: Request, visitor: VisitorDep, kind: KindQuery = C.RequestKind.CREATE
) -> Response:
    """Orgadmin: the organisation's pending requests (those verified wait for them; the
    others can be reminded or rejected), and its VMs."""
    if not visitor.has(C.Role.ORGADMIN):
        raise PermissionDenied(f"{visitor.actor.username} is not an orgadmin")
    with visitor.transaction() as session:
        waiting = [
            a
            for a in users.list_accounts(session, visitor.actor).items
            if a.state == "awaiting approval"
        ]
        page = vms.list_vm_page(session, visitor.actor, limit=C.API_PAGE_MAX)
    return _queue_page(
        request,
        visitor,
        kind,
        "Organisation: pending requests",
        "/org",
        lambda _req: True,
        org_vms=page.items,
        accounts=waiting,
    )


def _decide(
    request: Request, visitor: Visitor, back: str, work: Callable[[Session], str]
) -> Response:
    """Back to the queue the form was on (a local path only)."""
    return perform(request, visitor, local_path(back, "/requests"), work)


@router.post("/accounts/{username}/approve")
def approve_account(
    request: Request, visitor: VisitorDep, username: Annotated[str, Path(max_length=128)]
) -> Response:
    """An orgadmin (or admin) lets a registration of their organisation log in."""

    def work(session: Session) -> str:
        users.approve(session, visitor.actor, username)
        return f"account {username} approved: it may log in now"

    return perform(request, visitor, "/org", work)


@router.post("/requests/{request_id}/verify")
def verify(request: Request, visitor: VisitorDep, request_id: RowId, back: Back = "") -> Response:
    def work(session: Session) -> str:
        vm_requests.verify_request(session, visitor.actor, request_id)
        return f"request {request_id} verified: its orgadmin approves it next"

    return _decide(request, visitor, back, work)


@router.post("/requests/{request_id}/approve")
def approve(request: Request, visitor: VisitorDep, request_id: RowId, back: Back = "") -> Response:
    def work(session: Session) -> str:
        info = vm_requests.approve_request(session, visitor.actor, visitor.settings, request_id)
        if info.task_id:
            return f"request {request_id} approved and queued as task {info.task_id}"
        return f"request {request_id} approved: an admin queues it next"

    return _decide(request, visitor, back, work)


@router.post("/requests/{request_id}/reject")
def reject(
    request: Request,
    visitor: VisitorDep,
    request_id: RowId,
    reason: Annotated[str, Form(max_length=C.REJECT_REASON_MAX)] = "",
    back: Back = "",
) -> Response:
    def work(session: Session) -> str:
        vm_requests.reject_request(session, visitor.actor, request_id, reason)
        return f"request {request_id} rejected"

    return _decide(request, visitor, back, work)


@router.post("/requests/{request_id}/remind")
def remind(request: Request, visitor: VisitorDep, request_id: RowId, back: Back = "") -> Response:
    def work(session: Session) -> str:
        who = vm_requests.remind_request(session, visitor.actor, request_id)
        return f"{who} reminded of request {request_id}"

    return _decide(request, visitor, back or "/requests", work)


@router.post("/requests/{request_id}/edit")
def edit(
    request: Request,
    visitor: VisitorDep,
    request_id: RowId,
    ram_mb: Annotated[str, Form(max_length=6)] = "",
    vcpus: Annotated[str, Form(max_length=3)] = "",
    size: Annotated[str, Form(max_length=6)] = "",
    back: Back = "",
) -> Response:
    """An approver's edit: the sizes (RAM, vCPUs, and the disk size or clone count the
    request's kind has); empty fields stay as they are."""

    def work(session: Session) -> str:
        kind = vm_requests.get_request(session, visitor.actor, request_id).kind
        sized = {
            C.RequestKind.CREATE: "extra_disk_gb",
            C.RequestKind.ATTACH_DISK: "disk_gb",
            C.RequestKind.CLONE: "clone_count",
        }.get(kind)
        amount = optional_int(size, "size")
        vm_requests.edit_request(
            session,
            visitor.actor,
            visitor.settings,
            request_id,
            ram_mb=optional_int(ram_mb, "RAM"),
            vcpus=optional_int(vcpus, "vCPUs"),
            **({sized: amount} if sized and amount is not None else {}),
        )
        return f"request {request_id} changed"

    return _decide(request, visitor, back, work)
