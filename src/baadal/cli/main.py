"""The ``baadal`` command: a thin front door over the service layer.

Each sub-command group lives in its own module and exposes ``app``; register it below.
"""

from __future__ import annotations

import typer

app = typer.Typer(
    name="baadal",
    help="Baadal private cloud: hosts, pools, tasks and workers.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

from baadal.cli import tasks as tasks_cli  # noqa: E402

app.add_typer(tasks_cli.app, name="task")
app.command("worker")(tasks_cli.worker_cmd)

from baadal.cli import status as status_cli  # noqa: E402

app.command("status")(status_cli.status_cmd)
app.command("demo")(status_cli.demo_cmd)

from baadal.cli import pools as pools_cli  # noqa: E402

app.add_typer(pools_cli.app, name="pool")
