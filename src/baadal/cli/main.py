"""The ``baadal`` command: a thin front door over the service layer.

Each sub-command group lives in its own module; this file only wires them together.
"""

from __future__ import annotations

from typing import Annotated

import typer

from baadal.cli import (
    admin,
    cloud,
    demo,
    hosts,
    inventory,
    lab,
    migrate,
    monitor,
    net,
    pools,
    power,  # noqa: F401 - imported for the commands it adds to `host`
    status,
    tasks,
    users,
    vms,
)
from baadal.cli.common import act_as, handle_errors
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


app.command("demo")(demo.demo_cmd)
app.command("status")(status.status_cmd)
app.command("worker")(tasks.worker_cmd)
app.add_typer(admin.db_app, name="db")
app.add_typer(admin.config_app, name="config")
app.add_typer(inventory.host_app, name="host")
app.add_typer(inventory.datastore_app, name="datastore")
app.add_typer(inventory.template_app, name="template")
app.add_typer(pools.app, name="pool")
app.add_typer(net.app, name="net")
vms.app.command("sanity")(hosts.vm_sanity_cmd)
vms.app.command("migrate")(migrate.migrate_cmd)
app.add_typer(vms.app, name="vm")
app.add_typer(tasks.app, name="task")
app.add_typer(lab.app, name="lab")
app.add_typer(cloud.app, name="cloud")
app.add_typer(monitor.app, name="monitor")
app.add_typer(users.app, name="user")
