"""The administrators' pages under ``/admin``: the cloud's status (shutdown and bootup
with live progress), every VM, pending requests, tasks (retry, ignore, live progress),
the VM sanity check with its orphans, hosts (details, graphs, maintenance, evacuation,
power, adding), the controller's and NAT box's graphs and the host network picture,
templates, datastores, security domains, IP pools, users, quotas and the audit log.

Every page is refused (403) to anyone but an admin before anything is read, and every
change is a CSRF-checked POST that calls a service (which checks the policy again) and
goes back to its page with a one-line message; a refused change changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Form, Path, Query, Request
from fastapi.responses import FileResponse, Response
from sqlalchemy.orm import Session

from baadal import constants as C
from baadal.errors import BaadalError, NotFoundError, PermissionDenied, ValidationError
from baadal.services import (
    audit,
    cloud,
    hosts,
    inventory,
    measurements,
    monitoring,
    networks,
    pools,
    quotas,
    runtime,
    tasks,
    users,
    vm_requests,
    vms,
)
from baadal.services.hosts import Queued
from baadal.web.pages import Visitor, VisitorDep, perform, perform_alone, redirect, render

NOT_ADMIN = "the administration pages are for administrators"


def _admin(visitor: VisitorDep) -> Visitor:
    """The visitor, if an admin (the services check again: this keeps every page,
    even one that shows only forms, to admins)."""
    if not visitor.actor.is_admin:
        raise PermissionDenied(NOT_ADMIN)
    return visitor


AdminDep = Annotated[Visitor, Depends(_admin)]
router = APIRouter(prefix="/admin", include_in_schema=False)

RowId = Annotated[int, Path(ge=1, le=C.ROW_ID_MAX)]
#: a short form field (a name, an address, a path); free text is bounded before a service
Name = Annotated[str, Form(max_length=255)]
Text = Annotated[str, Form(max_length=1024)]
Flag = Annotated[bool, Form()]
Filter = Annotated[str, Query(max_length=128)]
#: where a list's page starts: the previous page's last id
After = Annotated[int | None, Query(ge=0, le=C.ROW_ID_MAX)]


def _optional(text: str) -> str | None:
    return text.strip() or None


def _queued_message(what: str, queued: Queued) -> str:
    text = f"{what}: {len(queued.task_ids)} task(s) queued"
    if queued.skipped:
        text += "; skipped " + ", ".join(f"{name} ({why})" for name, why in queued.skipped)
    return text


def _ids_query(task_ids: Sequence[int]) -> str:
    return ",".join(str(i) for i in task_ids)


def _parse_ids(text: str) -> list[int]:
    parts = [p for p in text.split(",") if p]
    if len(parts) > C.TASK_LIST_MAX or not all(p.isdigit() and len(p) <= 12 for p in parts):
        raise ValidationError(f"ids: up to {C.TASK_LIST_MAX} task ids, separated by commas")
    return [int(p) for p in parts]


# --- the cloud, live progress ------------------------------------------------------------


@router.get("")
def cloud_page(
    request: Request,
    visitor: AdminDep,
    tasks_: Annotated[str, Query(alias="tasks", max_length=4096)] = "",
) -> Response:
    """The cloud at a glance; after a shutdown or bootup, the progress of its tasks."""
    with visitor.transaction() as session:
        lines = cloud.summary(session, visitor.actor)
    return render(
        request, "admin/cloud.html", visitor, lines=lines, task_ids=_ids_query(_parse_ids(tasks_))
    )


def _cloud_change(request: Request, visitor: Visitor, what: str, shutdown: bool) -> Response:
    change = cloud.shutdown if shutdown else cloud.bootup
    try:
        with visitor.transaction() as session:
            queued = change(session, visitor.actor)
    except BaadalError as exc:
        return redirect(request, "/admin", str(exc), error=True)
    return redirect(
        request, f"/admin?tasks={_ids_query(queued.task_ids)}", _queued_message(what, queued)
    )


@router.post("/cloud/shutdown")
def cloud_shutdown(request: Request, visitor: AdminDep) -> Response:
    return _cloud_change(request, visitor, "cloud shutdown", shutdown=True)


@router.post("/cloud/bootup")
def cloud_bootup(request: Request, visitor: AdminDep) -> Response:
    return _cloud_change(request, visitor, "cloud bootup", shutdown=False)


@router.post("/cloud/finish")
def cloud_finish(request: Request, visitor: AdminDep, down: Flag = False) -> Response:
    """Record the cloud as down (after a shutdown's tasks ended) or up (after a bootup)."""

    def work(session: Session) -> str:
        cloud.finish(session, visitor.actor, shutdown=down)
        return "the cloud is recorded as " + ("down" if down else "up")

    return perform(request, visitor, "/admin", work)


@router.get("/progress")
def progress(
    request: Request, visitor: AdminDep, ids: Annotated[str, Query(max_length=4096)] = ""
) -> Response:
    """The progress of some tasks (an HTMX fragment that asks again until all ended)."""
    task_ids = _parse_ids(ids)
    with visitor.transaction() as session:
        states = tasks.task_states(session, visitor.actor, task_ids)
    ended = sum(1 for s in states if s.ended)
    return render(
        request,
        "admin/progress.html",
        visitor,
        states=states,
        ended=ended,
        ids=_ids_query(task_ids),
    )


# --- VMs ---------------------------------------------------------------------------------


@router.get("/vms")
def vms_page(
    request: Request,
    visitor: AdminDep,
    status: Filter = "",
    owner: Filter = "",
    host: Filter = "",
    after: After = None,
) -> Response:
    """Every VM, filtered, one keyset page at a time."""
    state = None
    if status:
        try:
            state = C.VMStatus[status.upper().replace(" ", "_")]
        except KeyError:
            raise ValidationError(f"unknown VM state {status!r}") from None
    with visitor.transaction() as session:
        page = vms.list_vm_page(
            session,
            visitor.actor,
            after=after,
            limit=C.ITEMS_PER_PAGE,
            status=state,
            owner=_optional(owner),
            host=_optional(host),
        )
        return render(
            request,
            "admin/vms.html",
            visitor,
            page=page,
            filters={"status": status, "owner": owner, "host": host},
            states=[s.name.lower() for s in C.VMStatus],
        )


# --- requests ----------------------------------------------------------------------------


@router.get("/requests")
def requests_page(request: Request, visitor: AdminDep) -> Response:
    with visitor.transaction() as session:
        found = vm_requests.list_requests(session, visitor.actor, pending_only=True).items
    return render(request, "admin/requests.html", visitor, requests=found)


@router.post("/requests/{request_id}/approve")
def approve_request(request: Request, visitor: AdminDep, request_id: RowId) -> Response:
    def work(session: Session) -> str:
        info = vm_requests.approve_request(session, visitor.actor, visitor.settings, request_id)
        queued = f" (task {info.task_id})" if info.task_id else ""
        return f"request {request_id} ({info.vm_name}) approved{queued}"

    return perform(request, visitor, "/admin/requests", work)


@router.post("/requests/{request_id}/reject")
def reject_request(
    request: Request, visitor: AdminDep, request_id: RowId, reason: Text
) -> Response:
    def work(session: Session) -> str:
        info = vm_requests.reject_request(session, visitor.actor, request_id, reason)
        return f"request {request_id} ({info.vm_name}) rejected"

    return perform(request, visitor, "/admin/requests", work)


@router.post("/requests/{request_id}/remind")
def remind_request(request: Request, visitor: AdminDep, request_id: RowId) -> Response:
    def work(session: Session) -> str:
        who = vm_requests.remind_request(session, visitor.actor, request_id)
        return f"request {request_id}: {who} reminded"

    return perform(request, visitor, "/admin/requests", work)


# --- tasks -------------------------------------------------------------------------------


@router.get("/tasks")
def tasks_page(request: Request, visitor: AdminDep, status: Filter = "") -> Response:
    """The newest tasks; the unfinished ones' rows refresh themselves."""
    state = None
    if status:
        try:
            state = C.TaskStatus[status.upper()]
        except KeyError:
            raise ValidationError(f"unknown task state {status!r}") from None
    with visitor.transaction() as session:
        found = tasks.list_tasks(session, visitor.actor, status=state, limit=C.TASK_LIST_MAX).items
        running = [t.id for t in found if t.status not in C.TASK_FINAL]
        return render(
            request,
            "admin/tasks.html",
            visitor,
            tasks=found,
            chosen=status,
            states=[s.name.lower() for s in C.TaskStatus],
            running=_ids_query(running),
        )


@router.post("/tasks/{task_id}/retry")
def retry_task(request: Request, visitor: AdminDep, task_id: RowId) -> Response:
    def work(session: Session) -> str:
        tasks.retry(session, visitor.actor, task_id)
        return f"task {task_id} queued again"

    return perform(request, visitor, "/admin/tasks", work)


@router.post("/tasks/{task_id}/ignore")
def ignore_task(request: Request, visitor: AdminDep, task_id: RowId) -> Response:
    def work(session: Session) -> str:
        tasks.ignore(session, visitor.actor, task_id)
        return f"task {task_id} ignored"

    return perform(request, visitor, "/admin/tasks", work)


# --- the VM sanity check and its orphans -------------------------------------------------


@router.get("/sanity")
def sanity_page(request: Request, visitor: AdminDep) -> Response:
    return render(request, "admin/sanity.html", visitor, report=None, orphan=None)


@router.post("/sanity")
def run_sanity(request: Request, visitor: AdminDep) -> Response:
    """Compare the VM rows with what the hosts run (it asks every UP host: the answer
    is this page, not a redirect); orphans can then be deleted or adopted."""
    engine = runtime.checked_engine(visitor.settings)
    report = hosts.vm_sanity(engine, visitor.actor, visitor.settings)
    with visitor.transaction() as session:
        templates = inventory.list_templates(session, visitor.actor, active_only=True).items
        datastores = inventory.list_datastores(session, visitor.actor).items
        return render(
            request,
            "admin/sanity.html",
            visitor,
            report=report,
            orphan="Orphan",
            templates=[t.name for t in templates],
            datastores=[d.ds_name for d in datastores],
        )


@router.post("/orphans/delete")
def delete_orphan(request: Request, visitor: AdminDep, host: Name, domain: Name) -> Response:
    def work() -> str:
        engine = runtime.checked_engine(visitor.settings)
        name = hosts.delete_orphan(engine, visitor.actor, host, domain)
        return f"orphan domain {domain} removed from {name}"

    return perform_alone(request, visitor, "/admin/sanity", work)


@router.post("/orphans/adopt")
def adopt_orphan(
    request: Request,
    visitor: AdminDep,
    vm_name: Name,
    owner: Name,
    template: Name,
    datastore: Name,
    ram_mb: Annotated[int, Form(ge=1, le=C.ROW_ID_MAX)],
    vcpus: Annotated[int, Form(ge=1, le=1024)],
    host: Name = "",
) -> Response:
    """Make a VM row for an image already on the datastore (the service checks the
    sizes, the owner and that the name is free)."""

    def work(session: Session) -> str:
        vm = vms.launch_existing_vm_image(
            session,
            visitor.actor,
            visitor.settings,
            vm_name=vm_name.strip(),
            template=template,
            datastore=datastore,
            ram_mb=ram_mb,
            vcpus=vcpus,
            owner=owner.strip(),
            host=_optional(host),
        )
        return f"VM {vm.vm_name} ({vm.vm_identity}) adopted"

    return perform(request, visitor, "/admin/sanity", work)


# --- hosts -------------------------------------------------------------------------------


@router.get("/hosts")
def hosts_page(request: Request, visitor: AdminDep, after: After = None) -> Response:
    with visitor.transaction() as session:
        found = inventory.list_hosts(session, visitor.actor, after=after, limit=C.ITEMS_PER_PAGE)
        return render(
            request,
            "admin/hosts.html",
            visitor,
            page=found,
            host_types=[t.value for t in C.HostType],
        )


@router.post("/hosts")
def add_host(
    request: Request,
    visitor: AdminDep,
    name: Name,
    address: Name,
    cpus: Annotated[int, Form(ge=0, le=C.ROW_ID_MAX)],
    ram_gb: Annotated[int, Form(ge=0, le=C.ROW_ID_MAX)],
    hdd_gb: Annotated[int, Form(ge=0, le=C.ROW_ID_MAX)] = 0,
    libvirt_uri: Name = "",
    host_type: Annotated[str, Form(max_length=20)] = C.HostType.PHYSICAL.value,
    mac_addr: Name = "",
    category: Name = "",
) -> Response:
    def work(session: Session) -> str:
        host = inventory.add_host(
            session,
            visitor.actor,
            name=name.strip(),
            address=address.strip(),
            cpus=cpus,
            ram_gb=ram_gb,
            hdd_gb=hdd_gb,
            libvirt_uri=_optional(libvirt_uri),
            host_type=host_type,
            mac_addr=_optional(mac_addr),
            category=_optional(category),
        )
        return f"host {host.host_name} added (down until the host check sees it up)"

    return perform(request, visitor, "/admin/hosts", work)


@router.get("/hosts/{host_id}")
def host_page(
    request: Request,
    visitor: AdminDep,
    host_id: RowId,
    tasks_: Annotated[str, Query(alias="tasks", max_length=4096)] = "",
) -> Response:
    """One host: its row, its VMs, what the sanity check saw, its usage graphs; after
    maintenance or an evacuation, the progress of the migrations."""
    with visitor.transaction() as session:
        host = inventory.get_host(session, visitor.actor, host_id)
        _name, seen = hosts.events(session, visitor.actor, host_id)
        placed = vms.list_vm_page(session, visitor.actor, host=host.host_name, limit=C.API_PAGE_MAX)
        return render(
            request,
            "admin/host.html",
            visitor,
            host=host,
            host_status=C.HostStatus(host.status).name.lower(),
            events=seen[-C.ITEMS_PER_PAGE :],
            vms=placed.items,
            graphs=measurements.GRAPH_TYPES,
            periods=list(C.GRAPH_PERIODS),
            task_ids=_ids_query(_parse_ids(tasks_)),
        )


def _host_queued(
    request: Request, visitor: Visitor, host_id: int, what: str, queue: Callable[..., Queued]
) -> Response:
    try:
        with visitor.transaction() as session:
            queued = queue(session, visitor.actor, host_id)
    except BaadalError as exc:
        return redirect(request, f"/admin/hosts/{host_id}", str(exc), error=True)
    return redirect(
        request,
        f"/admin/hosts/{host_id}?tasks={_ids_query(queued.task_ids)}",
        _queued_message(what, queued),
    )


@router.post("/hosts/{host_id}/maintenance")
def host_maintenance(request: Request, visitor: AdminDep, host_id: RowId) -> Response:
    """MAINTENANCE (no new VMs) and every VM migrated away."""
    return _host_queued(request, visitor, host_id, "maintenance", hosts.start_maintenance)


@router.post("/hosts/{host_id}/evacuate")
def host_evacuate(request: Request, visitor: AdminDep, host_id: RowId) -> Response:
    return _host_queued(request, visitor, host_id, "evacuation", hosts.evacuate)


@router.post("/hosts/{host_id}/status")
def host_status(
    request: Request,
    visitor: AdminDep,
    host_id: RowId,
    status: Annotated[str, Form(max_length=20)],
) -> Response:
    def work(session: Session) -> str:
        host = inventory.set_host_status(session, visitor.actor, host_id, status)
        return f"host {host.host_name} is now {C.HostStatus(host.status).name.lower()}"

    return perform(request, visitor, f"/admin/hosts/{host_id}", work)


@router.post("/hosts/{host_id}/power")
def host_power(
    request: Request,
    visitor: AdminDep,
    host_id: RowId,
    to: Annotated[str, Form(pattern="^(up|down)$")],
) -> Response:
    """Wake the host (not waiting for it: the host check sees it come up) or power it
    off (refused while one of its VMs runs)."""

    def work() -> str:
        engine = runtime.checked_engine(visitor.settings)
        if to == "up":
            done = hosts.power_up(engine, visitor.actor, visitor.settings, host_id, wait=False)
        else:
            done = hosts.power_down(engine, visitor.actor, visitor.settings, host_id)
        return f"host {done.host_name}: {done.message or 'power ' + to}"

    return perform_alone(request, visitor, f"/admin/hosts/{host_id}", work)


# --- graphs and the network picture ------------------------------------------------------


@router.get("/graphs/{kind}.png")
def graph_png(
    visitor: AdminDep,
    kind: Annotated[str, Path(pattern="^(host|controller|nat)$")],
    name: Filter = "",
    graph: Annotated[str, Query(max_length=8)] = "cpu",
    period: Annotated[str, Query(max_length=8)] = "day",
) -> Response:
    """A usage graph drawn afresh from the RRD history (an ``<img>`` of the pages)."""
    with visitor.transaction() as session:
        path = monitoring.get_performance_graph(
            session, visitor.actor, visitor.settings, kind, name, graph, period
        )
    return FileResponse(path, media_type="image/png", headers={"Cache-Control": "no-store"})


@router.get("/monitor")
def monitor_page(
    request: Request, visitor: AdminDep, period: Annotated[str, Query(max_length=8)] = "day"
) -> Response:
    if period not in C.GRAPH_PERIODS:
        raise ValidationError(
            f"unknown period {period!r}; choose one of {', '.join(C.GRAPH_PERIODS)}"
        )
    try:
        measurements.network_graph_file(visitor.actor, visitor.settings, "svg")
        has_picture = True
    except NotFoundError:  # not measured yet
        has_picture = False
    return render(
        request,
        "admin/monitor.html",
        visitor,
        graphs=measurements.GRAPH_TYPES,
        period=period,
        periods=list(C.GRAPH_PERIODS),
        has_picture=has_picture,
    )


@router.get("/network.svg")
def network_svg(visitor: AdminDep) -> Response:
    """The host network picture (Baadal draws it, names escaped; no scripts run from an
    ``<img>``, and the policy below forbids them when opened directly)."""
    try:
        picture = measurements.network_graph_file(visitor.actor, visitor.settings, "svg")
    except NotFoundError:
        return Response("no measurement yet", status_code=404, media_type="text/plain")
    return FileResponse(
        picture,
        media_type="image/svg+xml",
        headers={"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'"},
    )


# --- templates, datastores ---------------------------------------------------------------


@router.get("/templates")
def templates_page(request: Request, visitor: AdminDep, after: After = None) -> Response:
    with visitor.transaction() as session:
        found = inventory.list_templates(
            session, visitor.actor, after=after, limit=C.ITEMS_PER_PAGE
        )
        datastores = inventory.list_datastores(session, visitor.actor).items
        return render(
            request,
            "admin/templates.html",
            visitor,
            page=found,
            datastores=[d.ds_name for d in datastores],
        )


@router.post("/templates")
def add_template(
    request: Request,
    visitor: AdminDep,
    name: Name,
    datastore: Name,
    hdfile: Name,
    os_version: Name,
    hdd_gb: Annotated[int, Form(ge=1, le=C.ROW_ID_MAX)],
    os: Annotated[str, Form(max_length=20)] = "Linux",
    boot_kernel: Name = "",
    boot_initrd: Name = "",
    boot_cmdline: Name = "",
) -> Response:
    def work(session: Session) -> str:
        made = inventory.add_template(
            session,
            visitor.actor,
            name=name.strip(),
            datastore=datastore,
            hdfile=hdfile.strip(),
            os_version=os_version,
            hdd_gb=hdd_gb,
            os=os,
            boot_kernel=_optional(boot_kernel),
            boot_initrd=_optional(boot_initrd),
            boot_cmdline=_optional(boot_cmdline),
            settings=visitor.settings,
        )
        return f"template {made.name} added"

    return perform(request, visitor, "/admin/templates", work)


@router.post("/templates/{template_id}/deactivate")
def deactivate_template(request: Request, visitor: AdminDep, template_id: RowId) -> Response:
    def work(session: Session) -> str:
        found = inventory.deactivate_template(session, visitor.actor, template_id)
        return f"template {found.name} no longer offered"

    return perform(request, visitor, "/admin/templates", work)


@router.get("/datastores")
def datastores_page(request: Request, visitor: AdminDep, after: After = None) -> Response:
    with visitor.transaction() as session:
        found = inventory.list_datastores(
            session, visitor.actor, after=after, limit=C.ITEMS_PER_PAGE
        )
        return render(request, "admin/datastores.html", visitor, page=found)


@router.post("/datastores")
def add_datastore(
    request: Request,
    visitor: AdminDep,
    name: Name,
    mount_point: Name,
    capacity_gb: Annotated[int, Form(ge=1, le=C.ROW_ID_MAX)],
    path: Name = "",
    ds_ip: Name = "",
) -> Response:
    def work(session: Session) -> str:
        made = inventory.add_datastore(
            session,
            visitor.actor,
            name=name.strip(),
            mount_point=mount_point.strip(),
            capacity_gb=capacity_gb,
            path=_optional(path),
            ds_ip=_optional(ds_ip),
            settings=visitor.settings,
        )
        return f"datastore {made.ds_name} added"

    return perform(request, visitor, "/admin/datastores", work)


# --- security domains, IP pools ----------------------------------------------------------


@router.get("/domains")
def domains_page(request: Request, visitor: AdminDep, after: After = None) -> Response:
    with visitor.transaction() as session:
        found = networks.list_security_domains(
            session, visitor.actor, after=after, limit=C.ITEMS_PER_PAGE
        )
    return render(request, "admin/domains.html", visitor, page=found)


@router.post("/domains")
def add_domain(
    request: Request,
    visitor: AdminDep,
    name: Name,
    vlan_tag: Annotated[int, Form(ge=1, le=4094)],
    cidr: Name,
    ip_from: Name = "",
    ip_to: Name = "",
    visible_to_all: Flag = False,
) -> Response:
    def work(session: Session) -> str:
        made = networks.add_security_domain(
            session,
            visitor.actor,
            name.strip(),
            vlan_tag=vlan_tag,
            cidr=cidr.strip(),
            ip_from=_optional(ip_from),
            ip_to=_optional(ip_to),
            visible_to_all=visible_to_all,
        )
        return f"security domain {made.name} added"

    return perform(request, visitor, "/admin/domains", work)


@router.post("/domains/remove")
def remove_domain(request: Request, visitor: AdminDep, name: Name) -> Response:
    def work(session: Session) -> str:
        networks.remove_security_domain(session, visitor.actor, name)
        return f"security domain {name} removed"

    return perform(request, visitor, "/admin/domains", work)


@router.get("/pools")
def pools_page(request: Request, visitor: AdminDep, after: After = None) -> Response:
    """The public pool and VNC ports, a page of VLANs; the form offers every VLAN."""
    with visitor.transaction() as session:
        found = pools.usage(session, visitor.actor)
        page = pools.list_vlans(session, visitor.actor, after=after, limit=C.ITEMS_PER_PAGE)
        names = [v.name for v in pools.list_vlans(session, visitor.actor).items]
    return render(request, "admin/pools.html", visitor, usage=found, page=page, vlan_names=names)


@router.post("/pools/vlans")
def add_vlan(
    request: Request,
    visitor: AdminDep,
    name: Name,
    tag: Annotated[int, Form(ge=1, le=4094)],
    cidr: Name,
) -> Response:
    def work(session: Session) -> str:
        made = pools.add_vlan(session, visitor.actor, name.strip(), tag, cidr.strip())
        return f"VLAN {made.name} added"

    return perform(request, visitor, "/admin/pools", work)


@router.post("/pools/addresses")
def change_addresses(
    request: Request,
    visitor: AdminDep,
    kind: Annotated[str, Form(pattern="^(private|public)$")],
    change: Annotated[str, Form(pattern="^(add|remove)$")],
    ip_from: Name,
    ip_to: Name,
    vlan: Name = "",
) -> Response:
    """Add or remove a range of private (of a VLAN) or public addresses: all or none."""

    def work(session: Session) -> str:
        low, high = ip_from.strip(), ip_to.strip()
        if change == "add" and kind == "private":
            count = pools.add_private_ips(session, visitor.actor, vlan.strip(), low, high)
        elif change == "add":
            count = pools.add_public_ips(session, visitor.actor, low, high)
        elif kind == "private":
            count = pools.remove_private_ips(session, visitor.actor, low, high)
        else:
            count = pools.remove_public_ips(session, visitor.actor, low, high)
        done = "added" if change == "add" else "removed"
        return f"{count} {kind} address(es) {done}"

    return perform(request, visitor, "/admin/pools", work)


# --- users, quotas, the audit log --------------------------------------------------------


@router.get("/users")
def users_page(request: Request, visitor: AdminDep, after: After = None) -> Response:
    with visitor.transaction() as session:
        found = users.list_accounts(session, visitor.actor, after=after, limit=C.ITEMS_PER_PAGE)
    return render(request, "admin/users.html", visitor, page=found, roles=[r.value for r in C.Role])


@router.post("/users/{username}/approve")
def approve_user(
    request: Request, visitor: AdminDep, username: Annotated[str, Path(max_length=128)]
) -> Response:
    def work(session: Session) -> str:
        users.approve(session, visitor.actor, username)
        return f"account {username} approved"

    return perform(request, visitor, "/admin/users", work)


@router.post("/users/{username}/block")
def block_user(
    request: Request,
    visitor: AdminDep,
    username: Annotated[str, Path(max_length=128)],
    blocked: Flag = False,
) -> Response:
    def work(session: Session) -> str:
        users.set_blocked(session, visitor.actor, username, blocked)
        return f"account {username} " + ("blocked" if blocked else "unblocked")

    return perform(request, visitor, "/admin/users", work)


@router.post("/users/{username}/roles")
def set_roles(
    request: Request,
    visitor: AdminDep,
    username: Annotated[str, Path(max_length=128)],
    role: Annotated[list[str] | None, Form(max_length=16)] = None,
) -> Response:
    def work(session: Session) -> str:
        now = users.set_roles(session, visitor.actor, username, role or [])
        return f"account {username}: " + ", ".join(r.value for r in now)

    return perform(request, visitor, "/admin/users", work)


@router.get("/quotas")
def quotas_page(
    request: Request, visitor: AdminDep, user: Filter = "", org: Filter = ""
) -> Response:
    """A user's or an organisation's usage and limits (default: the visitor's own)."""
    with visitor.transaction() as session:
        report = quotas.show_quota(
            session, visitor.actor, visitor.settings, user=_optional(user), org=_optional(org)
        )
    return render(request, "admin/quotas.html", visitor, report=report, user=user, org=org)


@router.post("/quotas")
def set_quota(
    request: Request,
    visitor: AdminDep,
    user: Name = "",
    org: Name = "",
    vms_: Annotated[str, Form(alias="vms", max_length=12)] = "",
    vcpus: Annotated[str, Form(max_length=12)] = "",
    ram_gb: Annotated[str, Form(max_length=12)] = "",
    disk_gb: Annotated[str, Form(max_length=12)] = "",
    public_ips: Annotated[str, Form(max_length=12)] = "",
) -> Response:
    """Set the limits given (0 = unlimited); blank ones keep theirs."""
    given = {
        C.QuotaItem.VMS: vms_,
        C.QuotaItem.VCPUS: vcpus,
        C.QuotaItem.RAM_GB: ram_gb,
        C.QuotaItem.DISK_GB: disk_gb,
        C.QuotaItem.PUBLIC_IPS: public_ips,
    }
    whose = {"org": org.strip()} if org.strip() else {"user": user.strip()}
    back = "/admin/quotas?" + urlencode(whose)

    def work(session: Session) -> str:
        limits = {}
        for item, text in given.items():
            if text.strip():
                if not text.strip().isdigit():
                    raise ValidationError(f"quota {item.value}: a whole number (0 = unlimited)")
                limits[item] = int(text)
        quotas.set_quota(
            session, visitor.actor, user=_optional(user), org=_optional(org), limits=limits
        )
        return "limits of " + (org.strip() or user.strip()) + " saved"

    return perform(request, visitor, back, work)


@router.get("/audit")
def audit_page(
    request: Request,
    visitor: AdminDep,
    user: Filter = "",
    vm: Filter = "",
    since: Annotated[str, Query(max_length=40)] = "",
    limit: Annotated[int, Query(ge=1, le=C.AUDIT_LIST_MAX)] = C.AUDIT_LIST_DEFAULT,
) -> Response:
    with visitor.transaction() as session:
        entries = audit.list_entries(
            session,
            visitor.actor,
            user=_optional(user),
            vm=_optional(vm),
            since=_optional(since),
            limit=limit,
        ).items
        return render(
            request,
            "admin/audit.html",
            visitor,
            entries=entries,
            filters={"user": user, "vm": vm, "since": since},
            limit=limit,
        )
