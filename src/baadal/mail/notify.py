"""What Baadal tells people by mail.

This branch only needs the idle warning's entry point; the mail work (outbox, SMTP,
templates) fills it in. Until then it sends nothing, so callers can already say when
a mail is due.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from baadal.db.models import VM


def idle_warning(session: Session, vm: VM, kind: str, deadline: datetime) -> None:
    """Tell the VM's users that it will be destroyed (``kind`` "idle") or deleted
    (``kind`` "shutdown") at ``deadline`` unless someone keeps it. A no-op for now: the
    mail outbox replaces it, in the caller's transaction."""
