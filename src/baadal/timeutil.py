"""Time in one convention: naive UTC datetimes (what both SQLite and PostgreSQL store)."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)
