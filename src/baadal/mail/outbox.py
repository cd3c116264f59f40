"""The outbox table: mails are added in the caller's transaction and taken out by the
sending job, a batch at a time, with a lease so two runs never send one mail twice.

Life of a mail::

    queue_mail ── PENDING ──claim (attempts + 1, leased)──> sent ──> SENT
                     ^                                   └─ error ─> PENDING after a back-off
                     └──── admin retry ──── FAILED <── error after [mail] max_attempts

A run that dies while sending leaves its mails leased; the next run after the lease takes
them again (a mail may then arrive twice, never not at all).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine, delete, select, update
from sqlalchemy.orm import Session

from baadal import constants as C
from baadal.config import MailConf
from baadal.db.models import OutboxMail
from baadal.db.session import is_postgres, session_scope
from baadal.errors import ConflictError, NotFoundError
from baadal.mail.compose import Composed
from baadal.timeutil import utcnow


@dataclass(frozen=True)
class Claimed:
    """A mail a sending run holds, as plain values (sent outside any transaction)."""

    id: int
    recipient: str
    subject: str
    body: str
    attempts: int


def queue_mail(
    session: Session, kind: str, recipient: str, mail: Composed, user_id: int | None
) -> OutboxMail:
    """Add a mail in the caller's transaction: it exists iff the change it tells about
    was committed."""
    row = OutboxMail(
        kind=kind,
        user_id=user_id,
        recipient=recipient,
        subject=mail.subject,
        body=mail.body,
        status=C.MailStatus.PENDING,
        next_attempt_at=utcnow(),
        attempts=0,
    )
    session.add(row)
    session.flush()
    return row


def claim_due(engine: Engine, lease_s: float, limit: int = C.MAIL_BATCH) -> list[Claimed]:
    """Take up to ``limit`` due mails for one run: each counts an attempt and is leased
    for ``lease_s`` (longer than the run can take), so no other run takes it meanwhile."""
    now = utcnow()
    due = (
        select(OutboxMail.id)
        .where(OutboxMail.status == C.MailStatus.PENDING, OutboxMail.next_attempt_at <= now)
        .order_by(OutboxMail.next_attempt_at, OutboxMail.id)
        .limit(limit)
    )
    if is_postgres(engine):
        # rows another run holds are skipped; the ids are read first, in their own
        # statement: as a subquery of the UPDATE, PostgreSQL may run a LIMIT ... SKIP
        # LOCKED again for each row and take more than the batch
        due = due.with_for_update(skip_locked=True)
    take = (
        update(OutboxMail)
        .values(
            attempts=OutboxMail.attempts + 1,
            next_attempt_at=now + timedelta(seconds=lease_s),
        )
        .returning(
            OutboxMail.id,
            OutboxMail.recipient,
            OutboxMail.subject,
            OutboxMail.body,
            OutboxMail.attempts,
        )
        .execution_options(synchronize_session=False)
    )
    with session_scope(engine) as session:
        ids = list(session.scalars(due))
        if not ids:
            return []
        # the conditions again: a row another run took meanwhile no longer matches
        rows = session.execute(
            take.where(
                OutboxMail.id.in_(ids),
                OutboxMail.status == C.MailStatus.PENDING,
                OutboxMail.next_attempt_at <= now,
            )
        ).all()
    return sorted((Claimed(*row) for row in rows), key=lambda m: m.id)


def mark_sent(engine: Engine, mail_id: int) -> None:
    with session_scope(engine) as session:
        row = session.get(OutboxMail, mail_id)
        if row is not None:
            row.status = C.MailStatus.SENT
            row.sent_at = utcnow()
            row.last_error = None


def backoff_s(attempts: int, conf: MailConf) -> float:
    """How long a mail waits after its ``attempts``-th failed try: doubling, bounded."""
    return min(conf.retry_base_s * 2 ** min(attempts - 1, 60), conf.retry_max_s)


def mark_failed(
    engine: Engine, mail_id: int, error: str, conf: MailConf, *, permanent: bool = False
) -> bool:
    """Record a failed try: the mail waits its back-off, or is given up on after
    ``max_attempts`` tries or at once when the server refused it for good
    (``permanent``). True = given up (FAILED)."""
    with session_scope(engine) as session:
        row = session.get(OutboxMail, mail_id)
        if row is None:
            return False
        row.last_error = error
        if permanent or row.attempts >= conf.max_attempts:
            row.status = C.MailStatus.FAILED
            return True
        row.next_attempt_at = utcnow() + timedelta(seconds=backoff_s(row.attempts, conf))
        return False


def purge_sent(engine: Engine, conf: MailConf) -> int:
    """Delete the mails sent more than ``keep_sent_days`` ago; returns how many."""
    cutoff = utcnow() - timedelta(days=conf.keep_sent_days)
    with session_scope(engine) as session:
        return session.execute(
            delete(OutboxMail).where(
                OutboxMail.status == C.MailStatus.SENT, OutboxMail.sent_at < cutoff
            )
        ).rowcount


def list_mails(
    session: Session, *, status: C.MailStatus | None = None, limit: int = C.ITEMS_PER_PAGE
) -> list[OutboxMail]:
    """The newest mails first."""
    query = select(OutboxMail).order_by(OutboxMail.id.desc()).limit(limit)
    if status is not None:
        query = query.where(OutboxMail.status == status)
    return list(session.scalars(query))


def get_mail(session: Session, mail_id: int) -> OutboxMail:
    row = session.get(OutboxMail, mail_id) if 1 <= mail_id <= C.ROW_ID_MAX else None
    if row is None:
        raise NotFoundError(f"no mail with id {mail_id}")
    return row


def retry(session: Session, mail_id: int, now: datetime | None = None) -> OutboxMail:
    """A failed mail is tried again by the next run, with a fresh count of tries."""
    row = get_mail(session, mail_id)
    if row.status != C.MailStatus.FAILED:
        raise ConflictError(f"mail {mail_id} is {row.status}; only failed mails can be retried")
    row.status = C.MailStatus.PENDING
    row.attempts = 0
    row.next_attempt_at = now or utcnow()
    return row
