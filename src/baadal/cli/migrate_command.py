"""``baadal vm migrate``: move a VM to another host (registered by cli/vms.py)."""

from __future__ import annotations

from typing import Annotated

import typer

from baadal.cli.door import actor, db, handle_errors
from baadal.cli.vm_commands import InlineOpt, WaitOpt, follow_task
from baadal.services import vms


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
