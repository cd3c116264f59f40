"""A user's pages: the dashboard of their VMs (with idle warnings), a VM's page and its
actions, asking for a VM, their requests and tasks (live), their quota.

Every change is a POST form that queues work through a service and sends the browser
back to the page it came from with a one-line message; a mistake (a conflict, a bad
value) comes back the same way, a refusal or a missing object is an error page.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Path, Query, Request
from fastapi.responses import FileResponse, Response
from sqlalchemy.orm import Session

from baadal import constants as C
from baadal.errors import BaadalError, ValidationError
from baadal.services import idle_vms as idle
from baadal.services import (
    inventory,
    monitoring,
    networks,
    quotas,
    tasks,
    vm_requests,
    vms,
)
from baadal.web.pages import (
    MISTAKES,
    Visitor,
    VisitorDep,
    optional_int,
    perform,
    redirect,
    render,
)

router = APIRouter(include_in_schema=False)

VmId = Annotated[int, Path(ge=1, le=C.ROW_ID_MAX)]
RowId = Annotated[int, Path(ge=1, le=C.ROW_ID_MAX)]
Text = Annotated[str, Form(max_length=C.VM_PURPOSE_MAX)]
Name = Annotated[str, Form(max_length=128)]


def _queued(task_id: int, what: str) -> str:
    return f"{what}: queued as task {task_id} (see My tasks)"


# --- dashboard ---------------------------------------------------------------------


@router.get("/")
def dashboard(request: Request, visitor: VisitorDep) -> Response:
    """The VMs the visitor owns or shares, and the idle warnings among them (an admin's
    and orgadmin's too: the VMs their role lets them see have pages of their own)."""
    with visitor.transaction() as session:
        page = vms.list_vm_page(session, visitor.actor, mine=True, limit=C.API_PAGE_MAX)
        warned = [vm for vm in page.items if vm.shutdown_warning_date or vm.delete_warning_date]
        return render(request, "dashboard.html", visitor, vms=page.items, warned=warned)


@router.post("/vms/{vm_id}/keep")
def keep(request: Request, visitor: VisitorDep, vm_id: VmId) -> Response:
    """The answer to an idle warning: keep the VM."""
    return perform(
        request,
        visitor,
        "/",
        lambda s: f"VM {idle.keep(s, visitor.actor, vm_id)} is kept: its warning is gone",
    )


# --- a VM's page ---------------------------------------------------------------------

#: the buttons a VM's state offers (the service refuses what does not fit anyway);
#: deleting is always offered, behind a box to tick
ACTIONS_BY_STATE = {
    C.VMStatus.RUNNING: ("stop", "suspend", "destroy"),
    C.VMStatus.SUSPENDED: ("resume", "destroy"),
    C.VMStatus.SHUTDOWN: ("start", "save-template"),
}
ACTION_WORDS = {
    "start": "Start",
    "stop": "Shut down",
    "suspend": "Suspend",
    "resume": "Resume",
    "destroy": "Power off (destroy)",
    "delete": "Delete the VM",
    "save-template": "Save as template",
}


@router.get("/vms/{vm_id}")
def vm_page(request: Request, visitor: VisitorDep, vm_id: VmId) -> Response:
    with visitor.transaction() as session:
        details = vms.vm_details(session, visitor.actor, vm_id)
        domains = networks.list_security_domains(session, visitor.actor).items
        actions = ACTIONS_BY_STATE.get(details.vm.status, ())
        return render(
            request,
            "vm.html",
            visitor,
            d=details,
            vm=details.vm,
            actions=actions,
            action_words=ACTION_WORDS,
            graphs=monitoring.GRAPH_KINDS,
            periods=tuple(C.GRAPH_PERIODS),
            schedules=vms.SCHEDULES,
            domains=domains,
            ram_sizes=C.ALLOWED_RAM_MB,
            cpu_counts=C.ALLOWED_VCPUS,
        )


@router.post("/vms/{vm_id}/actions/{action}")
def vm_action(
    request: Request,
    visitor: VisitorDep,
    vm_id: VmId,
    action: Annotated[str, Path(max_length=20)],
    confirm: Annotated[str, Form(max_length=3)] = "",
) -> Response:
    """A direct operation; deleting the VM wants its box ticked (it cannot be undone)."""
    back = f"/vms/{vm_id}"
    if action == "delete" and confirm != "yes":
        return redirect(request, back, "tick the box to confirm the deletion", error=True)

    def work(session: Session) -> str:
        task = vms.operate(session, visitor.actor, vm_id, action)
        return _queued(task.id, ACTION_WORDS.get(action, action))

    return perform(request, visitor, "/" if action == "delete" else back, work)


@router.post("/vms/{vm_id}/snapshots")
def take_snapshot(request: Request, visitor: VisitorDep, vm_id: VmId) -> Response:
    return perform(
        request,
        visitor,
        f"/vms/{vm_id}",
        lambda s: _queued(vms.request_snapshot(s, visitor.actor, vm_id).id, "snapshot"),
    )


@router.post("/vms/{vm_id}/snapshots/{snapshot_id}/revert")
def revert_snapshot(
    request: Request, visitor: VisitorDep, vm_id: VmId, snapshot_id: RowId
) -> Response:
    return perform(
        request,
        visitor,
        f"/vms/{vm_id}",
        lambda s: _queued(
            vms.request_revert(s, visitor.actor, vm_id, snapshot_id).id, "revert to snapshot"
        ),
    )


@router.post("/vms/{vm_id}/snapshots/{snapshot_id}/delete")
def delete_snapshot(
    request: Request, visitor: VisitorDep, vm_id: VmId, snapshot_id: RowId
) -> Response:
    return perform(
        request,
        visitor,
        f"/vms/{vm_id}",
        lambda s: _queued(
            vms.request_delete_snapshot(s, visitor.actor, vm_id, snapshot_id).id,
            "delete snapshot",
        ),
    )


@router.post("/vms/{vm_id}/schedule")
def snapshot_schedule(
    request: Request,
    visitor: VisitorDep,
    vm_id: VmId,
    schedule: Annotated[list[int], Form()] = [],  # noqa: B006 (FastAPI copies defaults)
) -> Response:
    def work(session: Session) -> str:
        try:
            kinds = {C.SnapshotType(k) for k in schedule}
        except ValueError:
            raise ValidationError("a schedule is daily, weekly, monthly or yearly") from None
        vms.set_snapshot_schedule(session, visitor.actor, vm_id, kinds)
        names = ", ".join(sorted(k.name.lower() for k in kinds)) or "none"
        return f"scheduled snapshots: {names}"

    return perform(request, visitor, f"/vms/{vm_id}", work)


@router.post("/vms/{vm_id}/users")
def add_user(request: Request, visitor: VisitorDep, vm_id: VmId, username: Name) -> Response:
    def work(session: Session) -> str:
        vms.add_vm_user(session, visitor.actor, vm_id, username.strip())
        return f"{username.strip()} may use the VM now"

    return perform(request, visitor, f"/vms/{vm_id}", work)


@router.post("/vms/{vm_id}/users/{username}/remove")
def remove_user(
    request: Request,
    visitor: VisitorDep,
    vm_id: VmId,
    username: Annotated[str, Path(max_length=128)],
) -> Response:
    def work(session: Session) -> str:
        vms.remove_vm_user(session, visitor.actor, vm_id, username)
        return f"{username} no longer uses the VM"

    return perform(request, visitor, f"/vms/{vm_id}", work)


@router.post("/vms/{vm_id}/requests/disk")
def ask_disk(
    request: Request,
    visitor: VisitorDep,
    vm_id: VmId,
    size_gb: Annotated[int, Form(ge=1, le=C.EXTRA_DISK_GB_RANGE[1])],
    purpose: Text = "",
) -> Response:
    def work(session: Session) -> str:
        made = vm_requests.request_disk(
            session, visitor.actor, visitor.settings, vm_id, size_gb, purpose=purpose or None
        )
        return f"request {made} for a {size_gb} GB disk made"

    return perform(request, visitor, f"/vms/{vm_id}", work)


@router.post("/vms/{vm_id}/requests/clone")
def ask_clone(
    request: Request,
    visitor: VisitorDep,
    vm_id: VmId,
    count: Annotated[int, Form(ge=1, le=C.CLONE_COUNT_MAX)] = 1,
    full: Annotated[bool, Form()] = False,
    purpose: Text = "",
) -> Response:
    def work(session: Session) -> str:
        made = vm_requests.request_clone(
            session,
            visitor.actor,
            visitor.settings,
            vm_id,
            count,
            full=full,
            purpose=purpose or None,
        )
        return f"request {made} for {count} clone(s) made"

    return perform(request, visitor, f"/vms/{vm_id}", work)


@router.post("/vms/{vm_id}/requests/edit")
def ask_edit(
    request: Request,
    visitor: VisitorDep,
    vm_id: VmId,
    ram_mb: Annotated[str, Form(max_length=6)] = "",
    vcpus: Annotated[str, Form(max_length=3)] = "",
    public_ip: Annotated[str, Form(max_length=8)] = "",
    security_domain: Name = "",
    purpose: Text = "",
) -> Response:
    """RAM, vCPUs, security domain or the public IP ('attach', 'detach'; empty keeps
    each as it is)."""

    def work(session: Session) -> str:
        if public_ip not in ("", "attach", "detach"):
            raise ValidationError("public IP: attach, detach or leave it")
        made = vm_requests.request_edit(
            session,
            visitor.actor,
            visitor.settings,
            vm_id,
            ram_mb=optional_int(ram_mb, "RAM"),
            vcpus=optional_int(vcpus, "vCPUs"),
            public_ip={"": None, "attach": True, "detach": False}[public_ip],
            security_domain=security_domain.strip() or None,
            purpose=purpose or None,
        )
        return f"request {made} to change the VM made"

    return perform(request, visitor, f"/vms/{vm_id}", work)


@router.get("/vms/{vm_id}/graphs/{graph}/{period}.png")
def vm_graph(
    visitor: VisitorDep,
    vm_id: VmId,
    graph: Annotated[str, Path(max_length=8)],
    period: Annotated[str, Path(max_length=8)],
) -> Response:
    """A graph drawn afresh from the VM's measurements (an <img> on its page)."""
    with visitor.transaction() as session:
        png = monitoring.get_performance_graph(
            session, visitor.actor, visitor.settings, "vm", str(vm_id), graph, period
        )
    return FileResponse(
        png, media_type="image/png", headers={"Cache-Control": "private, max-age=60"}
    )


# --- asking for a VM ------------------------------------------------------------------


def _request_form(
    request: Request, visitor: Visitor, values: dict, status: int = 200, error: str = ""
) -> Response:
    with visitor.transaction() as session:
        templates = inventory.list_templates(session, visitor.actor, active_only=True).items
        domains = networks.list_security_domains(session, visitor.actor).items
        needs_approver = not ({C.Role.FACULTY, C.Role.ORGADMIN, C.Role.ADMIN} & visitor.actor.roles)
        return render(
            request,
            "request_new.html",
            visitor,
            status=status,
            error=error,
            values=values,
            templates=templates,
            domains=domains,
            ram_sizes=C.ALLOWED_RAM_MB,
            cpu_counts=C.ALLOWED_VCPUS,
            needs_approver=needs_approver,
        )


@router.get("/requests/new")
def new_request_page(request: Request, visitor: VisitorDep) -> Response:
    return _request_form(request, visitor, {"ram_mb": 256, "vcpus": 1})


@router.get("/check/approver")
def check_approver(
    request: Request,
    visitor: VisitorDep,
    approver: Annotated[str, Query(max_length=128)] = "",
) -> Response:
    """The live check beside the approver field (an HTMX fragment)."""
    try:
        with visitor.transaction() as session:
            said, ok = vm_requests.check_approver(session, visitor.actor, approver), True
    except BaadalError as exc:
        said, ok = str(exc), False
    return render(request, "approver_check.html", visitor, said=said, ok=ok)


@router.post("/requests")
def create_request(
    request: Request,
    visitor: VisitorDep,
    vm_name: Annotated[str, Form(max_length=30)],
    template: Name,
    ram_mb: Annotated[int, Form()] = 256,
    vcpus: Annotated[int, Form()] = 1,
    security_domain: Name = "",
    public_ip: Annotated[bool, Form()] = False,
    extra_disk_gb: Annotated[int, Form(ge=0, le=C.EXTRA_DISK_GB_RANGE[1])] = 0,
    approver: Name = "",
    collaborators: Annotated[str, Form(max_length=2048)] = "",
    purpose: Text = "",
) -> Response:
    """A request (or, for an admin, a VM queued at once); the form comes back filled in
    with the one-line reason when something is wrong."""
    values = {
        "vm_name": vm_name,
        "template": template,
        "ram_mb": ram_mb,
        "vcpus": vcpus,
        "security_domain": security_domain,
        "public_ip": public_ip,
        "extra_disk_gb": extra_disk_gb,
        "approver": approver,
        "collaborators": collaborators,
        "purpose": purpose,
    }
    names = [n for n in collaborators.replace(",", " ").split() if n]
    try:
        with visitor.transaction() as session:
            made = vm_requests.request_create(
                session,
                visitor.actor,
                visitor.settings,
                vm_name=vm_name.strip(),
                template=template,
                approver=approver.strip() or None,
                ram_mb=ram_mb,
                vcpus=vcpus,
                security_domain=security_domain or None,
                public_ip=public_ip,
                extra_disk_gb=extra_disk_gb,
                collaborators=names,
                purpose=purpose or None,
            )
    except MISTAKES as exc:
        return _request_form(request, visitor, values, 422, str(exc))
    return redirect(request, "/requests", f"request {made} for VM {vm_name.strip()} made")


@router.get("/requests")
def my_requests(request: Request, visitor: VisitorDep) -> Response:
    """The requests the visitor made or that are for them (their organisation's are on
    the review pages)."""
    me = visitor.actor.username
    with visitor.transaction() as session:
        found = [
            r
            for r in vm_requests.list_requests(session, visitor.actor).items
            if me in (r.requester, r.owner) or me in r.collaborators
        ]
    return render(request, "requests.html", visitor, requests=found, pending=C.REQUEST_PENDING)


@router.post("/requests/{request_id}/withdraw")
def withdraw(request: Request, visitor: VisitorDep, request_id: RowId) -> Response:
    def work(session: Session) -> str:
        vm_requests.withdraw_request(session, visitor.actor, request_id)
        return f"request {request_id} withdrawn"

    return perform(request, visitor, "/requests", work)


# --- tasks and quota -------------------------------------------------------------------


@router.get("/tasks")
def my_tasks(request: Request, visitor: VisitorDep) -> Response:
    with visitor.transaction() as session:
        found = tasks.list_tasks(session, visitor.actor, limit=C.ITEMS_PER_PAGE).items
        return render(request, "tasks.html", visitor, tasks=found)


@router.get("/tasks/{task_id}/row")
def task_row(request: Request, visitor: VisitorDep, task_id: RowId) -> Response:
    """One task's row, polled by HTMX while the task runs (an ended one stops it)."""
    with visitor.transaction() as session:
        task = tasks.get_task(session, visitor.actor, task_id)
        return render(request, "task_row.html", visitor, t=task)


@router.get("/quota")
def quota_page(request: Request, visitor: VisitorDep) -> Response:
    with visitor.transaction() as session:
        mine = quotas.show_quota(session, visitor.actor, visitor.settings)
    return render(request, "quota.html", visitor, report=mine)
