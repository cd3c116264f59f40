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
