"""What the request workflow tells people: one call per transition.

A placeholder that sends nothing: the mail outbox (written in the caller's transaction,
sent by a periodic job) replaces this module; the callers stay as they are.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from baadal.db.models import RequestQueue


def request_event(
    session: Session, request: RequestQueue, event: str, reason: str | None = None
) -> None:
    """Tell the people of ``request`` that ``event`` happened to it (``made``,
    ``verified``, ``approved``, ``rejected``, ``reminded`` or ``queued``; ``reason``:
    why it was rejected). Runs in the caller's transaction; here it does nothing."""
