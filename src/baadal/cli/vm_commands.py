"""``baadal vm ...``: request VMs and operate them; long work shows its progress."""

from __future__ import annotations

import time
from typing import Annotated

import typer

from baadal import constants as C
from baadal.cli.door import (
    AfterOption,
    LimitOption,
    actor,
    checked_engine,
    console,
    current_actor,
    db,
    fail,
    handle_errors,
    print_more,
    print_table,
    read_db,
    say,
)
from baadal.config import get_settings
from baadal.services import vms
from baadal.services.rows import Page

app = typer.Typer(help="Virtual machines.", no_args_is_help=True)
snapshot_app = typer.Typer(help="Snapshots of a VM.", no_args_is_help=True)
disk_app = typer.Typer(help="Extra disks of a VM.", no_args_is_help=True)
public_ip_app = typer.Typer(help="The public IP of a VM.", no_args_is_help=True)
vnc_app = typer.Typer(help="Time-limited VNC console access.", no_args_is_help=True)
users_app = typer.Typer(help="Who sees and operates a VM besides its owner.", no_args_is_help=True)
app.add_typer(snapshot_app, name="snapshot")
app.add_typer(disk_app, name="disk")
app.add_typer(public_ip_app, name="public-ip")
app.add_typer(vnc_app, name="vnc")
app.add_typer(users_app, name="users")

WaitOpt = Annotated[bool, typer.Option(help="wait until the task ends and show progress")]
InlineOpt = Annotated[
    bool, typer.Option(help="run the task in this process instead of waiting for a worker")
]
TIMEOUT_S = 1800


def follow_task(task_id: int, *, wait: bool, inline: bool) -> None:
    """Show the task's progress until it ends; exit 1 when it failed."""
    console.print(f"queued task {task_id}")
    if not (wait or inline):
        return
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from baadal.services import tasks  # the task engine: not for `vm list`

    settings, engine, who = get_settings(), checked_engine(), current_actor()
    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        bar = progress.add_task(f"task {task_id}: waiting for a worker")
        if inline:
            progress.update(bar, description=f"task {task_id}: running here")
            tasks.inline_runner(engine, who, settings, [task_id])()
        deadline = time.monotonic() + TIMEOUT_S
        while True:
            with db() as session:
                (state,) = tasks.task_states(session, who, [task_id])
            if state.ended:
                break
            if time.monotonic() > deadline:
                raise fail(f"task {task_id} still {state.status.name.lower()} after {TIMEOUT_S} s")
            progress.update(bar, description=f"task {task_id}: {state.status.name.lower()}")
            time.sleep(0.3)
    colour = "green" if state.status == C.TaskStatus.SUCCESS else "red"
    console.print(f"[{colour}]{state.status.name}[/]: {state.message}")
    if state.status not in (C.TaskStatus.SUCCESS, C.TaskStatus.PARTIAL_SUCCESS):
        raise typer.Exit(1)


@app.command("create")
@handle_errors
def create_cmd(
    name: str,
    template: Annotated[str, typer.Option(help="template name or id")],
    ram: Annotated[int, typer.Option(help="RAM in MB")] = 256,
    vcpus: Annotated[int, typer.Option()] = 1,
    domain: Annotated[
        str | None,
        typer.Option(help="security domain (default: network.default_security_domain)"),
    ] = None,
    no_network: Annotated[
        bool, typer.Option("--no-network", help="a VM with no network: no IP, MAC or DHCP")
    ] = False,
    public_ip: Annotated[bool, typer.Option()] = False,
    extra_disk: Annotated[int, typer.Option(help="extra disk in GB")] = 0,
    host: Annotated[str | None, typer.Option(help="put it on this host")] = None,
    owner: Annotated[str | None, typer.Option(help="owner's username")] = None,
    purpose: Annotated[str | None, typer.Option()] = None,
    wait: WaitOpt = True,
    inline: InlineOpt = False,
) -> None:
    """Request a VM (as an admin: approved at once) and install it."""
    settings = get_settings()
    with db() as session:
        queued = vms.request_vm(
            session,
            actor(session),
            settings,
            vm_name=name,
            template=template,
            ram_mb=ram,
            vcpus=vcpus,
            owner=owner,
            security_domain=domain,
            public_ip=public_ip,
            extra_disk_gb=extra_disk,
            host=host,
            purpose=purpose,
            network=not no_network,
        )
    follow_task(queued.task_id, wait=wait, inline=inline)


@app.command("list")
@handle_errors
def list_cmd(limit: LimitOption = None, after: AfterOption = None) -> None:
    """The VMs you may see (admins: all; orgadmins: their organisation's)."""
    with read_db() as session:
        who = actor(session)
        if limit is None and after is None:
            page = Page(vms.list_vms(session, who), None)
        else:
            page = vms.list_vm_page(session, who, after=after, limit=limit or C.API_PAGE_MAX)
    rows = [
        (vm.id, vm.name, vm.identity, vm.status.name, vm.host or "", vm.private_ip or "",
         vm.public_ip or "", vm.ram_mb, vm.vcpus)
        for vm in page.items
    ]  # fmt: skip
    print_table(
        "VMs", ["id", "name", "identity", "status", "host", "IP", "public IP", "MB", "vCPU"], rows
    )
    print_more(page)


@app.command("show")
@handle_errors
def show_cmd(vm: str) -> None:
    with read_db() as session:
        who = actor(session)
        row = vms.get_vm(session, who, vm)
        fields = [
            ("id", row.id),
            ("name", row.vm_name),
            ("identity", row.vm_identity),
            ("status", C.VMStatus(row.status).name),
            ("host", row.host.host_name if row.host else ""),
            ("private IP", row.private_ip.private_ip if row.private_ip else ""),
            ("MAC", row.private_ip.mac_addr if row.private_ip else ""),
            ("public IP", row.public_ip.public_ip if row.public_ip else ""),
            ("VNC port", row.vnc_port),
            ("RAM MB / vCPU", f"{row.RAM} / {row.vCPU}"),
            ("disk GB / extra GB", f"{row.HDD} / {row.extra_HDD}"),
            ("template", row.template.name if row.template else ""),
            ("datastore", row.datastore.ds_name if row.datastore else ""),
            ("locked", "yes" if row.locked else "no"),
            ("destroyed if still idle at", row.shutdown_warning_date),
            ("deleted if still shut off at", row.delete_warning_date),
        ]
        snaps = [
            (s.id, s.snapshot_name, s.timestamp) for s in vms.list_snapshots(session, who, row.id)
        ]
    print_table(f"VM {vm}", ["field", "value"], fields)
    if snaps:
        print_table("Snapshots", ["id", "name", "taken"], snaps)


VMArg = Annotated[str, typer.Argument(help="VM name, identity or id")]
PersonArg = Annotated[str, typer.Argument(help="username")]


@users_app.command("list")
@handle_errors
def users_list_cmd(vm: VMArg) -> None:
    """The VM's owner and the people it is shared with."""
    with read_db() as session:
        people = vms.list_vm_users(session, actor(session), vm)
    rows = [(p.username, p.name, p.organisation, "owner" if p.owner else "") for p in people]
    print_table(f"Users of VM {vm}", ["username", "name", "organisation", ""], rows)


@users_app.command("add")
@handle_errors
def users_add_cmd(vm: VMArg, username: PersonArg) -> None:
    """Share the VM (its owner, an orgadmin of its organisation, or an admin)."""
    with db() as session:
        vms.add_vm_user(session, actor(session), vm, username)
    say(f"{username} is a user of VM {vm}")


@users_app.command("remove")
@handle_errors
def users_remove_cmd(vm: VMArg, username: PersonArg) -> None:
    """Stop sharing the VM with someone (not its owner)."""
    with db() as session:
        vms.remove_vm_user(session, actor(session), vm, username)
    say(f"{username} is no longer a user of VM {vm}")


@app.command("owner")
@handle_errors
def owner_cmd(vm: VMArg, username: PersonArg) -> None:
    """Give the VM to another owner (admins); the VM keeps its identity."""
    with db() as session:
        vms.transfer_ownership(session, actor(session), vm, username)
    say(f"VM {vm} is owned by {username} now")


def _operation(op: str) -> None:
    def command(vm: str, wait: WaitOpt = True, inline: InlineOpt = False) -> None:
        with db() as session:
            task = vms.operate(session, actor(session), vm, op)
            task_id = task.id
        follow_task(task_id, wait=wait, inline=inline)

    command.__doc__ = f"{op.capitalize()} a VM."
    app.command(op)(handle_errors(command))


for _op in vms.DIRECT_OPERATIONS:
    _operation(_op)


@app.command("edit")
@handle_errors
def edit_cmd(
    vm: str,
    ram: Annotated[int | None, typer.Option(help="RAM in MB")] = None,
    vcpus: Annotated[int | None, typer.Option()] = None,
    public_ip: Annotated[bool | None, typer.Option("--public-ip/--no-public-ip")] = None,
    domain: Annotated[
        str | None, typer.Option(help="move to this security domain (reboots a running VM)")
    ] = None,
    wait: WaitOpt = True,
    inline: InlineOpt = False,
) -> None:
    """Change RAM, vCPUs, public IP or security domain of a VM (RAM/vCPU: VM shut off)."""
    with db() as session:
        task = vms.request_edit(
            session,
            actor(session),
            vm,
            ram_mb=ram,
            vcpus=vcpus,
            public_ip=public_ip,
            security_domain=domain,
        )
        task_id = task.id
    follow_task(task_id, wait=wait, inline=inline)


def _public_ip(attach: bool) -> None:
    def command(vm: str, wait: WaitOpt = True, inline: InlineOpt = False) -> None:
        with db() as session:
            task_id = vms.request_edit(session, actor(session), vm, public_ip=attach).id
        follow_task(task_id, wait=wait, inline=inline)

    verb = "attach" if attach else "detach"
    command.__doc__ = f"{verb.capitalize()} a public IP (mapped on the NAT box)."
    public_ip_app.command(verb)(handle_errors(command))


_public_ip(True)
_public_ip(False)


@vnc_app.command("grant")
@handle_errors
def vnc_grant_cmd(
    vm: str,
    minutes: Annotated[int, typer.Option(min=1, max=24 * 60)] = C.VNC_ACCESS_DURATION_S // 60,
) -> None:
    """Open a running VM's console for a limited time (at most 10 grants a day)."""
    with db() as session:
        who = actor(session)
    grant = vms.grant_vnc_access(checked_engine(), who, get_settings(), vm, minutes * 60)
    console.print(
        f"VNC console of {vm}: {grant.vnc_ip}:{grant.port} until {grant.expiry_time:%H:%M} UTC;"
        f" password: {grant.password}",
        highlight=False,
    )


@app.command("clone")
@handle_errors
def clone_cmd(
    vm: str,
    count: Annotated[int, typer.Option(min=1, max=100)] = 1,
    full: Annotated[bool, typer.Option(help="standalone copies instead of overlays")] = False,
    wait: WaitOpt = True,
    inline: InlineOpt = False,
) -> None:
    """Clone a shut-off VM."""
    with db() as session:
        task, _ = vms.request_clone(session, actor(session), vm, count, full=full)
        task_id = task.id
    follow_task(task_id, wait=wait, inline=inline)


@snapshot_app.command("take")
@handle_errors
def snapshot_take(vm: str, wait: WaitOpt = True, inline: InlineOpt = False) -> None:
    with db() as session:
        task_id = vms.request_snapshot(session, actor(session), vm).id
    follow_task(task_id, wait=wait, inline=inline)


@app.command("revert")
@snapshot_app.command("revert")
@handle_errors
def snapshot_revert(
    vm: str, snapshot: str, wait: WaitOpt = True, inline: InlineOpt = False
) -> None:
    with db() as session:
        task_id = vms.request_revert(session, actor(session), vm, snapshot).id
    follow_task(task_id, wait=wait, inline=inline)


@snapshot_app.command("delete")
@handle_errors
def snapshot_delete(
    vm: str, snapshot: str, wait: WaitOpt = True, inline: InlineOpt = False
) -> None:
    with db() as session:
        task_id = vms.request_delete_snapshot(session, actor(session), vm, snapshot).id
    follow_task(task_id, wait=wait, inline=inline)


@disk_app.command("attach")
@handle_errors
def disk_attach(
    vm: str,
    size: Annotated[int, typer.Option(help="GB")],
    wait: WaitOpt = True,
    inline: InlineOpt = False,
) -> None:
    with db() as session:
        task_id = vms.request_attach_disk(session, actor(session), vm, size).id
    follow_task(task_id, wait=wait, inline=inline)


@app.command("migrate")
@handle_errors
def migrate_cmd(
    vm: str,
    to: Annotated[
        str | None, typer.Option(help="destination host (default: placement chooses)")
    ] = None,
    offline: Annotated[
        bool, typer.Option(help="pause a running guest while it moves instead of a live migration")
    ] = False,
    wait: WaitOpt = True,
    inline: InlineOpt = False,
) -> None:
    """Migrate a VM to another host; a shut-off VM always moves offline."""
    with db() as session:
        task = vms.request_migrate(session, actor(session), vm, to, live=not offline)
        task_id = task.id
    follow_task(task_id, wait=wait, inline=inline)


@app.command("sanity")
@handle_errors
def vm_sanity_cmd() -> None:
    """Compare the VM rows with what the UP hosts run; fix drift, respawn lost domains,
    report orphans."""
    from baadal.services import hosts as host_services

    report = host_services.vm_sanity(checked_engine(), current_actor(), get_settings())
    rows = [(r.vm_name, r.vm_identity, r.host, r.state, r.action) for r in report.rows]
    print_table("VM sanity", ["VM", "domain", "host", "state", "action"], rows)
    for host, error in report.unreachable.items():
        console.print(f"[red]{host} did not answer:[/] {error}", highlight=False)
    console.print(report.summary(), highlight=False)


# --- idle VMs ----------------------------------------------------------------------------


def _lock(locked: bool) -> None:
    def command(vm: str) -> None:
        from baadal.services import idle_vms

        with db() as session:
            name = idle_vms.set_locked(session, actor(session), vm, locked)
        say(f"{name} is {'locked' if locked else 'unlocked'}")

    verb = "lock" if locked else "unlock"
    command.__doc__ = (
        "Admin: the idle and shut-off clean-up leaves the VM alone (its warnings go)."
        if locked
        else "Admin: the idle and shut-off clean-up applies to the VM again."
    )
    app.command(verb)(handle_errors(command))


_lock(True)
_lock(False)


@app.command("keep")
@handle_errors
def keep_cmd(vm: str) -> None:
    """Answer an idle or shut-off warning: the VM stays, and is not warned again for
    general.idle_vm_days."""
    from baadal.services import idle_vms

    with db() as session:
        name = idle_vms.keep(session, actor(session), vm)
    say(f"{name} is kept; its warning is withdrawn")


@app.command("idle")
@handle_errors
def idle_cmd(
    dry_run: Annotated[bool, typer.Option(help="only list what the next run would do")] = False,
) -> None:
    """Admin: the daily idle checks and the clean-up now: warn the users of idle and long
    shut-off VMs, destroy/delete those whose warning ran out."""
    from baadal.services import idle_vms

    run = idle_vms.check(checked_engine(), current_actor(), get_settings(), dry_run=dry_run)
    rows = [
        (s.vm_name, s.action.value, s.deadline.strftime("%Y-%m-%d %H:%M") if s.deadline else "",
         s.reason)
        for s in run.steps
    ]  # fmt: skip
    if not rows:
        say("nothing to do")
        return
    title = "The next idle run would" if dry_run else "Idle run"
    print_table(title, ["VM", "action", "deadline", "why"], rows)
    for line in run.done:
        say(line)
