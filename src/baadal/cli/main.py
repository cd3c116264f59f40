"""The ``baadal`` command: a thin front door over the service layer.

Each sub-command group lives in its own module; this file only wires them together.
"""

from __future__ import annotations

import importlib
from typing import Annotated, Any

import typer
from typer.core import TyperCommand, TyperGroup

#: every sub-command: name -> (module, attribute, help). A module is imported only when
#: its command runs (or shows its own help), so ``baadal --help`` and every command start
#: without the others' imports (libvirt, paramiko, FastAPI, ...). ``help`` is what
#: ``baadal --help`` lists; tests/unit/test_cli_startup.py checks it is the command's own.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "demo": (
        "baadal.cli.demo_command",
        "demo_cmd",
        "The lab cloud on this machine with a demo VM that answers ping (run it again: it\n"
        "keeps what is there).",
    ),
    "status": (
        "baadal.cli.status_command",
        "status_cmd",
        "Show the cloud's state: database, hosts, VMs, pools and tasks.",
    ),
    "worker": (
        "baadal.cli.task_commands",
        "worker_cmd",
        "Claim and run tasks until stopped (SIGTERM/SIGINT finish running tasks first).",
    ),
    "audit": (
        "baadal.cli.audit_commands",
        "audit_cmd",
        "The audit log: admins see all of it, an orgadmin their organisation's people's\n"
        "entries, everyone else their own.",
    ),
    "serve": (
        "baadal.cli.serve_command",
        "serve_cmd",
        "Serve the API at web.host:web.port (127.0.0.1:8080 by default), under /api/v1, and\n"
        "the console's websockify on 127.0.0.1:novnc.port.",
    ),
    "db": ("baadal.cli.admin_commands", "db_app", "Database schema: create, upgrade, inspect."),
    "config": ("baadal.cli.admin_commands", "config_app", "Settings in effect."),
    "host": ("baadal.cli.host_commands", "app", "Hypervisor hosts."),
    "datastore": (
        "baadal.cli.inventory_commands",
        "datastore_app",
        "Datastores: shared storage for images.",
    ),
    "template": (
        "baadal.cli.inventory_commands",
        "template_app",
        "Templates: base images VMs are made from.",
    ),
    "pool": ("baadal.cli.pool_commands", "app", "IP pools: VLANs, private and public addresses."),
    "net": ("baadal.cli.net_commands", "app", "Networking: security domains, pools, DHCP, NAT."),
    "vm": ("baadal.cli.vm_commands", "app", "Virtual machines."),
    "task": ("baadal.cli.task_commands", "app", "Tasks: list, show, retry and ignore."),
    "lab": ("baadal.cli.lab_commands", "app", "The lab: a whole cloud on one machine."),
    "cloud": (
        "baadal.cli.cloud_commands",
        "app",
        "The whole cloud: maintenance shutdown and bootup.",
    ),
    "monitor": (
        "baadal.cli.monitor_commands",
        "app",
        "Usage history of hosts and VMs (RRD) and its graphs.",
    ),
    "user": ("baadal.cli.user_commands", "app", "User accounts, approval and roles."),
    "org": ("baadal.cli.org_commands", "app", "Organisations."),
    "mail": ("baadal.cli.mail_commands", "app", "The mail outbox: list, retry, send now."),
    "request": (
        "baadal.cli.request_commands",
        "app",
        "Requests for VMs and changes, and their approval.",
    ),
    "quota": ("baadal.cli.quota_commands", "app", "Quotas of users and organisations."),
    "token": ("baadal.cli.token_commands", "app", "Personal API tokens: create, list, revoke."),
}


def load_command(name: str) -> Any:
    """The sub-command's click command, imported now and built as Typer builds it for a
    parent that adds it (``add_typer`` / ``command``)."""
    module, attribute, _ = COMMANDS[name]
    target = getattr(importlib.import_module(module), attribute)
    parent = typer.Typer(add_completion=False)
    if isinstance(target, typer.Typer):
        parent.add_typer(target, name=name)
        return typer.main.get_command(parent).commands[name]  # type: ignore[attr-defined]
    parent.command(name)(target)
    return typer.main.get_command(parent)


class LazyGroup(TyperGroup):
    """The top-level group: its sub-commands are imported when used; the list in
    ``--help`` comes from :data:`COMMANDS` without importing them."""

    _listing = False

    def list_commands(self, ctx: Any) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            if self._listing:
                # one line each in the list (the table's text wraps as the docstring does)
                listed = " ".join(COMMANDS[cmd_name][2].split())
                return TyperCommand(name=cmd_name, help=listed)
            self.commands[cmd_name] = load_command(cmd_name)
        return self.commands.get(cmd_name)

    def format_help(self, ctx: Any, formatter: Any) -> None:
        self._listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False


app = typer.Typer(
    name="baadal",
    help="Baadal private cloud: hosts, pools, VMs, tasks and workers.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    cls=LazyGroup,
)


@app.callback()
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
    from baadal.cli.door import act_as, handle_errors
    from baadal.logs import setup_logging

    @handle_errors
    def setup() -> None:
        setup_logging()
        act_as(as_user)

    setup()
