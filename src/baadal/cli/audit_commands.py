"""``baadal audit``: who changed what, on which object, when, and how it went."""

from __future__ import annotations

from typing import Annotated

import typer

from baadal import constants as C
from baadal.cli.door import actor, db, handle_errors, print_table
from baadal.services import audit


def _target(entry: audit.AuditEntry) -> str:
    if entry.target_type is None:
        return ""
    name = f" {entry.target_name}" if entry.target_name else ""
    return f"{entry.target_type} {entry.target_id if entry.target_id is not None else ''}{name}"


@handle_errors
def audit_cmd(
    user: Annotated[str | None, typer.Option("--user", help="entries of what USER did")] = None,
    vm: Annotated[
        str | None, typer.Option("--vm", help="entries about this VM (id, name or identity)")
    ] = None,
    since: Annotated[
        str | None, typer.Option("--since", help="from this ISO date or time (UTC) on")
    ] = None,
    limit: Annotated[
        int, typer.Option(help=f"at most this many, newest first (1-{C.AUDIT_LIST_MAX})")
    ] = C.AUDIT_LIST_DEFAULT,
) -> None:
    """The audit log: admins see all of it, an orgadmin their organisation's people's
    entries, everyone else their own."""
    with db() as session:
        entries = audit.list_entries(
            session, actor(session), user=user, vm=vm, since=since, limit=limit
        ).items
        rows = [
            (e.id, e.at.isoformat(sep=" ", timespec="seconds"), e.actor_name, e.function,
             _target(e), e.detail, e.outcome)
            for e in entries
        ]  # fmt: skip
    print_table(
        "Audit log", ["id", "when (UTC)", "who", "what", "object", "detail", "outcome"], rows
    )
