"""The mail outbox for the doors (admins): what was sent, what waits and what failed;
a failed mail tried again; the due mails sent now (thin, guarded wrappers over
:mod:`baadal.mail`)."""

from __future__ import annotations

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from baadal import constants as C
from baadal.config import Settings
from baadal.db.models import OutboxMail
from baadal.errors import ConflictError
from baadal.mail import outbox, sender
from baadal.net.validators import check_int, check_row_id
from baadal.services.policy import Action, Actor, guarded


@guarded(Action.MAIL_READ)
def list_outbox(
    session: Session,
    actor: Actor,
    *,
    status: C.MailStatus | None = None,
    limit: int = C.ITEMS_PER_PAGE,
) -> list[OutboxMail]:
    """The newest mails first (with ``status``: only those)."""
    check_int(limit, "mail list length", 1, C.MAIL_LIST_MAX)
    return outbox.list_mails(session, status=status, limit=limit)


@guarded(Action.MAIL_MANAGE)
def retry_mail(session: Session, actor: Actor, mail_id: int) -> OutboxMail:
    """A failed mail goes back to the outbox with a fresh count of tries."""
    check_row_id(mail_id, "mail")
    return outbox.retry(session, mail_id)


@guarded(Action.MAIL_MANAGE)
def send_now(engine: Engine, actor: Actor, settings: Settings) -> sender.SendReport:
    """Send the due mails in this process now, without waiting for the job."""
    if not settings.mail.mail_active:
        raise ConflictError("mail is off: set [mail] mail_active = true to send mails")
    return sender.send_due(engine, settings)
