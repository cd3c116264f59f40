"""``baadal request ...``: ask for VMs and changes, and move requests along the chain
(user -> faculty verifies -> orgadmin approves -> admin approves: queued)."""

from __future__ import annotations

from typing import Annotated

import typer

from baadal.cli.door import actor, db, handle_errors, print_fields, print_table, read_db, say
from baadal.cli.vm_commands import InlineOpt, follow_task
from baadal.config import get_settings
from baadal.services import vm_requests
from baadal.services.vm_requests import RequestInfo

app = typer.Typer(help="Requests for VMs and changes, and their approval.", no_args_is_help=True)

ApproverOpt = Annotated[
    str | None, typer.Option(help="your faculty approver (students must name one)")
]
PurposeOpt = Annotated[str | None, typer.Option(help="what it is for")]
RequestArg = Annotated[int, typer.Argument(help="request id")]


def _made(request_id: int) -> None:
    say(f"request {request_id}")


@app.command("create")
@handle_errors
def create_cmd(
    name: str,
    template: Annotated[str, typer.Option(help="template name or id")],
    approver: ApproverOpt = None,
    ram: Annotated[int, typer.Option(help="RAM in MB")] = 256,
    vcpus: Annotated[int, typer.Option()] = 1,
    domain: Annotated[
        str | None,
        typer.Option(help="security domain (default: network.default_security_domain)"),
    ] = None,
    public_ip: Annotated[bool, typer.Option()] = False,
    extra_disk: Annotated[int, typer.Option(help="extra disk in GB")] = 0,
    collaborator: Annotated[
        list[str] | None, typer.Option(help="a user who shares the VM (repeat for more)")
    ] = None,
    purpose: PurposeOpt = None,
) -> None:
    """Ask for a new VM; prints 'request N'."""
    with db() as session:
        _made(
            vm_requests.request_create(
                session,
                actor(session),
                get_settings(),
                vm_name=name,
                template=template,
                approver=approver,
                ram_mb=ram,
                vcpus=vcpus,
                security_domain=domain,
                public_ip=public_ip,
                extra_disk_gb=extra_disk,
                collaborators=collaborator or [],
                purpose=purpose,
            )
        )


@app.command("clone")
@handle_errors
def clone_cmd(
    vm: str,
    count: Annotated[int, typer.Option(help="how many clones")] = 1,
    full: Annotated[bool, typer.Option(help="standalone copies instead of overlays")] = False,
    approver: ApproverOpt = None,
    purpose: PurposeOpt = None,
) -> None:
    """Ask for clones of a VM (made while it is shut off)."""
    with db() as session:
        _made(
            vm_requests.request_clone(
                session,
                actor(session),
                get_settings(),
                vm,
                count,
                full=full,
                approver=approver,
                purpose=purpose,
            )
        )


@app.command("disk")
@handle_errors
def disk_cmd(
    vm: str,
    size: Annotated[int, typer.Option(help="size in GB")],
    approver: ApproverOpt = None,
    purpose: PurposeOpt = None,
) -> None:
    """Ask for an extra disk on a VM."""
    with db() as session:
        _made(
            vm_requests.request_disk(
                session,
                actor(session),
                get_settings(),
                vm,
                size,
                approver=approver,
                purpose=purpose,
            )
        )


@app.command("config")
@handle_errors
def config_cmd(
    vm: str,
    ram: Annotated[int | None, typer.Option(help="RAM in MB")] = None,
    vcpus: Annotated[int | None, typer.Option()] = None,
    public_ip: Annotated[bool | None, typer.Option("--public-ip/--no-public-ip")] = None,
    domain: Annotated[str | None, typer.Option(help="move to this security domain")] = None,
    approver: ApproverOpt = None,
    purpose: PurposeOpt = None,
) -> None:
    """Ask to change a VM's RAM, vCPUs, public IP or security domain (an edit request;
    'request edit ID' changes a pending request)."""
    with db() as session:
        _made(
            vm_requests.request_edit(
                session,
                actor(session),
                get_settings(),
                vm,
                ram_mb=ram,
                vcpus=vcpus,
                public_ip=public_ip,
                security_domain=domain,
                approver=approver,
                purpose=purpose,
            )
        )


def _status(info: RequestInfo) -> str:
    return info.status.name


@app.command("list")
@handle_errors
def list_cmd(
    pending: Annotated[bool, typer.Option(help="only those still waiting")] = False,
) -> None:
    """Your requests, those naming you, your organisation's (orgadmins), all (admins)."""
    with read_db() as session:
        found = vm_requests.list_requests(session, actor(session), pending_only=pending).items
    rows = [
        (r.id, r.kind.value, r.vm_name, _status(r), r.requester, r.owner, r.approver, r.task_id)
        for r in found
    ]
    print_table(
        "Requests", ["id", "kind", "VM", "status", "requester", "owner", "approver", "task"], rows
    )


@app.command("show")
@handle_errors
def show_cmd(request_id: RequestArg) -> None:
    with read_db() as session:
        r = vm_requests.get_request(session, actor(session), request_id)
    fields = [
        ("id", r.id),
        ("kind", r.kind.value),
        ("VM", r.vm_name),
        ("status", _status(r)),
        ("requester / owner / approver", f"{r.requester} / {r.owner} / {r.approver or '-'}"),
        ("collaborators", ", ".join(r.collaborators)),
        ("template", r.template),
        ("RAM MB / vCPU", f"{r.ram_mb or '-'} / {r.vcpus or '-'}"),
        ("extra disk GB / disk GB", f"{r.extra_disk_gb} / {r.disk_gb or '-'}"),
        ("clones", r.clone_count),
        ("public IP", r.public_ip),
        ("security domain", r.security_domain),
        ("purpose", r.purpose),
        ("rejected because", r.reject_reason),
        ("task", r.task_id),
        ("task message", r.task_message),
        ("asked", f"{r.request_time:%Y-%m-%d %H:%M}"),
    ]
    print_fields(f"Request {r.id}", fields)


@app.command("verify")
@handle_errors
def verify_cmd(request_id: RequestArg) -> None:
    """As the faculty approver: vouch for a request."""
    with db() as session:
        info = vm_requests.verify_request(session, actor(session), request_id)
    say(f"request {info.id}: {_status(info)}")


@app.command("approve")
@handle_errors
def approve_cmd(
    request_id: RequestArg,
    wait: Annotated[bool, typer.Option(help="wait for the queued task")] = False,
    inline: InlineOpt = False,
) -> None:
    """As orgadmin: approve a verified request; as admin: approve and queue it."""
    with db() as session:
        info = vm_requests.approve_request(session, actor(session), get_settings(), request_id)
    say(f"request {info.id}: {_status(info)}")
    if info.task_id is not None:
        follow_task(info.task_id, wait=wait, inline=inline)


@app.command("reject")
@handle_errors
def reject_cmd(
    request_id: RequestArg,
    reason: Annotated[str, typer.Option(help="why (the requester is told)")],
) -> None:
    with db() as session:
        info = vm_requests.reject_request(session, actor(session), request_id, reason)
    say(f"request {info.id}: {_status(info)}")


@app.command("edit")
@handle_errors
def edit_cmd(
    request_id: RequestArg,
    ram: Annotated[int | None, typer.Option(help="RAM in MB")] = None,
    vcpus: Annotated[int | None, typer.Option()] = None,
    extra_disk: Annotated[int | None, typer.Option(help="a new VM's extra disk in GB")] = None,
    size: Annotated[int | None, typer.Option(help="a disk request's size in GB")] = None,
    count: Annotated[int | None, typer.Option(help="a clone request's count")] = None,
    public_ip: Annotated[bool | None, typer.Option("--public-ip/--no-public-ip")] = None,
    domain: Annotated[str | None, typer.Option(help="security domain")] = None,
    purpose: PurposeOpt = None,
) -> None:
    """Change a pending request (its approvers: only the sizes)."""
    with db() as session:
        info = vm_requests.edit_request(
            session,
            actor(session),
            get_settings(),
            request_id,
            ram_mb=ram,
            vcpus=vcpus,
            extra_disk_gb=extra_disk,
            disk_gb=size,
            clone_count=count,
            public_ip=public_ip,
            security_domain=domain,
            purpose=purpose,
        )
    say(f"request {info.id}: changed, {_status(info)}")


@app.command("remind")
@handle_errors
def remind_cmd(request_id: RequestArg) -> None:
    """Remind whoever the request waits for (once a day)."""
    with db() as session:
        who = vm_requests.remind_request(session, actor(session), request_id)
    say(f"request {request_id}: reminded {who}")


@app.command("withdraw")
@handle_errors
def withdraw_cmd(request_id: RequestArg) -> None:
    """Take back your own pending request."""
    with db() as session:
        vm_requests.withdraw_request(session, actor(session), request_id)
    say(f"request {request_id}: withdrawn")
