"""The ``baadal`` command: a thin front door over the service layer.

Each sub-command group lives in its own module; this file only wires them together.
"""

from __future__ import annotations

from typing import Annotated

import typer

from baadal.cli import (
    admin_commands,
    audit_commands,
    cloud_commands,
    demo_command,
    host_commands,
    inventory_commands,
    lab_commands,
    mail_commands,
    monitor_commands,
    net_commands,
    org_commands,
    pool_commands,
    quota_commands,
    request_commands,
    serve_command,
    status_command,
    task_commands,
    token_commands,
    user_commands,
    vm_commands,
)
from baadal.cli.door import act_as, handle_errors
from baadal.logs import setup_logging

app = typer.Typer(
    name="baadal",
    help="Baadal private cloud: hosts, pools, VMs, tasks and workers.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
@handle_errors
def _setup(
    as_user: Annotated[
        str | None,
        typer.Option(
            "--as",
            metavar="USERNAME",
            help="act as this user (the policy decides what they may do); "
            "default: the system administrator",
        ),
    ] = None,
) -> None:
    """Every command logs to the Baadal log (tracebacks go there, never to the screen)."""
    setup_logging()
    act_as(as_user)


app.command("demo")(demo_command.demo_cmd)
app.command("status")(status_command.status_cmd)
app.command("worker")(task_commands.worker_cmd)
app.command("audit")(audit_commands.audit_cmd)
app.command("serve")(serve_command.serve_cmd)
app.add_typer(admin_commands.db_app, name="db")
app.add_typer(admin_commands.config_app, name="config")
app.add_typer(host_commands.app, name="host")
app.add_typer(inventory_commands.datastore_app, name="datastore")
app.add_typer(inventory_commands.template_app, name="template")
app.add_typer(pool_commands.app, name="pool")
app.add_typer(net_commands.app, name="net")
app.add_typer(vm_commands.app, name="vm")
app.add_typer(task_commands.app, name="task")
app.add_typer(lab_commands.app, name="lab")
app.add_typer(cloud_commands.app, name="cloud")
app.add_typer(monitor_commands.app, name="monitor")
app.add_typer(user_commands.app, name="user")
app.add_typer(org_commands.app, name="org")
app.add_typer(mail_commands.app, name="mail")
app.add_typer(request_commands.app, name="request")
app.add_typer(quota_commands.app, name="quota")
app.add_typer(token_commands.app, name="token")
