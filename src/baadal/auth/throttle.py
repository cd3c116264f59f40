"""Login throttling: failed logins are counted per username and per source (the client's
address) in the database, so the web server, the CLI and every worker see the same
counts. After too many failures in a window further logins of that name or from that
source are refused, before any password is checked, for a lockout that doubles with each
further failure. Names are counted whether or not an account has them, so a lockout
tells nobody which names exist. A successful login clears its name's count.

Self-registrations are counted per address the same way (a row per address: the count
and when its window began), in the registration's own transaction: a refused or failed
registration counts nothing, and changes nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine, delete
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from baadal import constants as C
from baadal.db.models import LoginThrottle
from baadal.db.session import session_scope
from baadal.errors import LoginThrottled, RegistrationThrottled

#: the key column's size; longer names are cut (still one key per name in practice)
KEY_MAX = 300


@dataclass(frozen=True)
class Limit:
    max_failures: int
    window_s: int = C.LOGIN_FAILURE_WINDOW_S
    lockout_s: int = C.LOGIN_LOCKOUT_S
    max_lockout_s: int = C.LOGIN_LOCKOUT_MAX_S

    def lockout(self, failures: int) -> int:
        """Seconds to wait after ``failures`` failures (0 below the limit)."""
        if failures < self.max_failures:
            return 0
        return min(self.max_lockout_s, self.lockout_s * 2 ** (failures - self.max_failures))


USER_LIMIT = Limit(C.LOGIN_USER_MAX_FAILURES)
#: a source is often many people (a lab behind one NAT): it may fail more often
SOURCE_LIMIT = Limit(C.LOGIN_SOURCE_MAX_FAILURES)


def user_key(username: str) -> str:
    """Case folded: a directory matches uids without regard to case, so "ASHA" must not
    buy another round of guesses at asha's password."""
    return f"user:{username.casefold()}"[:KEY_MAX]


def source_key(source: str) -> str:
    return f"source:{source}"[:KEY_MAX]


def registration_key(source: str) -> str:
    return f"register:{source}"[:KEY_MAX]


def _keys(username: str, source: str | None) -> dict[str, Limit]:
    keys = {user_key(username): USER_LIMIT}
    if source:
        keys[source_key(source)] = SOURCE_LIMIT
    return keys


def check(engine: Engine, username: str, source: str | None, now: datetime) -> None:
    """Raise :class:`LoginThrottled` (with the longest wait) while the name or the
    source is locked out."""
    with session_scope(engine) as session:
        rows = [session.get(LoginThrottle, key) for key in _keys(username, source)]
    waits = [
        (row.locked_until - now).total_seconds()
        for row in rows
        if row is not None and row.locked_until is not None and row.locked_until > now
    ]
    if waits:
        raise LoginThrottled(max(1, math.ceil(max(waits))))


def _row(session: Session, key: str, now: datetime) -> LoginThrottle:
    """The key's row, locked; made when missing (a concurrent maker wins, then it is read)."""
    row = session.get(LoginThrottle, key, with_for_update=True)
    if row is not None:
        return row
    try:
        with session.begin_nested():
            row = LoginThrottle(key=key, failures=0, first_failure=now)
            session.add(row)
    except IntegrityError:
        row = session.get(LoginThrottle, key, with_for_update=True, populate_existing=True)
        assert row is not None
    return row


def record_failure(engine: Engine, username: str, source: str | None, now: datetime) -> int:
    """Count a failed login of the name and from the source; returns the longest lockout
    it starts in seconds (0 when none)."""
    longest = 0
    with session_scope(engine) as session:
        for key, limit in _keys(username, source).items():
            row = _row(session, key, now)
            if row.first_failure + timedelta(seconds=limit.window_s) <= now and not (
                row.locked_until and row.locked_until > now
            ):
                row.failures, row.first_failure = 0, now  # an old window: count anew
            row.failures += 1
            lockout = limit.lockout(row.failures)
            if lockout:
                row.locked_until = now + timedelta(seconds=lockout)
                longest = max(longest, lockout)
    return longest


def record_success(engine: Engine, username: str) -> None:
    """The name's failures are forgiven (its source's are not: others may fail there)."""
    with session_scope(engine) as session:
        session.execute(delete(LoginThrottle).where(LoginThrottle.key == user_key(username)))


def count_registration(
    session: Session, source: str, limit: int, window_s: int, now: datetime
) -> None:
    """Count a registration from ``source`` in the registration's transaction (its row
    locked: concurrent ones from one address wait in turn); raise
    :class:`RegistrationThrottled` once ``limit`` were made in the window."""
    row = _row(session, registration_key(source), now)
    ends = row.first_failure + timedelta(seconds=window_s)
    if ends <= now:
        row.failures, row.first_failure, ends = 0, now, now + timedelta(seconds=window_s)
    if row.failures >= limit:
        raise RegistrationThrottled(max(1, math.ceil((ends - now).total_seconds())))
    row.failures += 1
