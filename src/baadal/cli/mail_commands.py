"""``baadal mail outbox|retry|send-now``: the mails Baadal sent, waits to send or gave up
on (admins)."""

from __future__ import annotations

from typing import Annotated

import typer

from baadal import constants as C
from baadal.cli.door import (
    actor,
    checked_engine,
    current_actor,
    db,
    handle_errors,
    print_table,
    say,
)
from baadal.config import get_settings
from baadal.services import mails

app = typer.Typer(help="The mail outbox: list, retry, send now.", no_args_is_help=True)


@app.command("outbox")
@handle_errors
def outbox_cmd(
    failed: Annotated[bool, typer.Option("--failed", help="only mails given up on")] = False,
    pending: Annotated[bool, typer.Option("--pending", help="only mails still to send")] = False,
    limit: Annotated[int, typer.Option(min=1, max=C.MAIL_LIST_MAX)] = C.ITEMS_PER_PAGE,
) -> None:
    """The newest mails first: sent, waiting (with the next try) or failed (with why)."""
    if failed and pending:
        raise typer.BadParameter("give --failed or --pending, not both")
    status = C.MailStatus.FAILED if failed else C.MailStatus.PENDING if pending else None
    with db() as session:
        rows = [
            (
                m.id,
                m.status,
                m.recipient,
                m.subject,
                m.attempts,
                m.created_at.strftime("%Y-%m-%d %H:%M"),
                m.sent_at.strftime("%Y-%m-%d %H:%M") if m.sent_at else
                m.next_attempt_at.strftime("next %Y-%m-%d %H:%M")
                if m.status == C.MailStatus.PENDING else "",
                m.last_error,
            )
            for m in mails.list_outbox(session, actor(session), status=status, limit=limit)
        ]  # fmt: skip
    columns = ["id", "status", "to", "subject", "tries", "created", "sent / next", "error"]
    print_table("Outbox", columns, rows)


@app.command("retry")
@handle_errors
def retry_cmd(mail_id: Annotated[int, typer.Argument(help="the mail's id (mail outbox)")]) -> None:
    """Try a failed mail again (with a fresh count of tries) at the next run."""
    with db() as session:
        mails.retry_mail(session, actor(session), mail_id)
    say(f"mail {mail_id} queued again")


@app.command("send-now")
@handle_errors
def send_now_cmd() -> None:
    """Send the due mails now from this process (no worker needed)."""
    say(str(mails.send_now(checked_engine(), current_actor(), get_settings())))
