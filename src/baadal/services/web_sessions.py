"""Portal logins: a session per login, in the database, named by a signed cookie.

The cookie is ``<id>.<signature>``: the id is 32 random bytes, the signature an HMAC of
it with a key kept in the home (0600), so a forged or mangled cookie is refused before
the database is asked. Only the id's SHA-256 is stored, so the table cannot be used to
log in. A session ends at logout, at its absolute expiry ([web] session_hours), after
[web] session_idle_minutes unused, and at once when its account is blocked or its
password changes (the rows go). Each session has its own CSRF secret, which every form
and HTMX call must show.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine, delete, select, update
from sqlalchemy.orm import Session

from baadal import constants as C
from baadal.auth import accounts
from baadal.auth.accounts import get_user
from baadal.config import Settings
from baadal.db.models import User, WebSession
from baadal.db.session import session_scope
from baadal.errors import ConfigError, Unauthenticated
from baadal.home import secure_home
from baadal.services import users
from baadal.services.policy import Action, Actor, actor_of, guarded, open_to_anyone, require
from baadal.timeutil import utcnow

log = logging.getLogger("baadal")
ENDED = "not logged in, or the session ended: log in again"


@dataclass(frozen=True)
class WebIdentity:
    """Who a session cookie belongs to, and the CSRF token their forms must carry."""

    actor: Actor
    csrf: str


@dataclass(frozen=True)
class SessionInfo:
    """A portal session as its account's page lists it (never its id)."""

    created: datetime
    last_seen: datetime
    expires: datetime
    #: the session the list is shown in
    current: bool


@dataclass(frozen=True)
class WebLogin:
    identity: WebIdentity
    #: the value of the session cookie (shown to the browser only)
    cookie: str


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


#: each home's signing key, read once per process
_keys: dict[Path, bytes] = {}


def _key(settings: Settings) -> bytes:
    """The signing key, made (0600) by the first process that needs it."""
    path: Path = settings.home / C.WEB_SESSION_KEY_FILE
    if path in _keys:
        return _keys[path]
    try:
        key = bytes.fromhex(path.read_text().strip())
    except FileNotFoundError:
        secure_home(settings)  # a lab's home stays searchable for QEMU (0711)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process made it first: use theirs
            return _key(settings)
        key = secrets.token_bytes(C.WEB_SESSION_BYTES)
        with os.fdopen(fd, "w") as stream:
            stream.write(key.hex())
    except ValueError:
        raise ConfigError(f"{path} is not a hex key: remove it to make a new one") from None
    if len(key) < C.WEB_SESSION_BYTES:
        raise ConfigError(f"{path} holds a key shorter than {C.WEB_SESSION_BYTES} bytes")
    _keys[path] = key
    return key


def _signature(settings: Settings, session_id: str) -> str:
    return hmac.new(_key(settings), session_id.encode(), hashlib.sha256).hexdigest()


def _session_id(settings: Settings, cookie: str) -> str:
    """The id in a cookie whose signature holds; Unauthenticated otherwise."""
    if not isinstance(cookie, str) or len(cookie) > 256:
        raise Unauthenticated(ENDED)
    session_id, _, signature = cookie.partition(".")
    expected = _signature(settings, session_id)
    if not session_id or not hmac.compare_digest(signature.encode(), expected.encode()):
        raise Unauthenticated(ENDED)
    return session_id


@open_to_anyone("a login: the password is the proof, there is no actor before it")
def log_in(
    engine: Engine, settings: Settings, username: str, password: str, *, source: str | None
) -> WebLogin:
    """A new session for whoever this password is (throttled and logged as every login:
    :func:`baadal.services.users.check_login`). Expired sessions are swept on the way."""
    account = users.check_login(engine, settings, username, password, source=source)
    session_id = secrets.token_urlsafe(C.WEB_SESSION_BYTES)
    csrf = secrets.token_urlsafe(C.WEB_SESSION_BYTES)
    now = utcnow()
    with session_scope(engine) as session:
        session.execute(delete(WebSession).where(WebSession.expires <= now))
        user = accounts.get_user(session, account.username)
        session.add(
            WebSession(
                id_hash=_digest(session_id),
                user_id=user.id,
                csrf_secret=csrf,
                created=now,
                expires=now + timedelta(hours=settings.web.session_hours),
                last_seen=now,
            )
        )
        actor = actor_of(session, user)
    log.info("portal login of %r from %s", account.username, source or "unknown")
    cookie = f"{session_id}.{_signature(settings, session_id)}"
    return WebLogin(WebIdentity(actor, csrf), cookie)


@open_to_anyone("the signed session cookie is the proof of who is asking")
def identify(engine: Engine, settings: Settings, cookie: str) -> WebIdentity:
    """Who holds this cookie. Unauthenticated when the session expired, sat unused too
    long, or its account is blocked or no longer approved: its rows are gone then
    (deleted in a short write of its own, before the refusal). Every page asks this, so
    it reads without SQLite's write lock and writes only an ending or a stale
    last_seen."""
    digest = _digest(_session_id(settings, cookie))
    with session_scope(engine, read=True) as session:
        row = session.get(WebSession, digest)
        if row is None:
            raise Unauthenticated(ENDED)
        user = session.get(User, row.user_id)
        actor = actor_of(session, user) if user is not None else None
        user_id, csrf, last_seen, expires = row.user_id, row.csrf_secret, row.last_seen, row.expires
    now = utcnow()
    idle = timedelta(minutes=settings.web.session_idle_minutes)
    if actor is not None and not actor.blocked and expires > now and last_seen + idle > now:
        if (now - last_seen).total_seconds() >= C.WEB_SESSION_TOUCH_S:
            with session_scope(engine) as session:
                touch = update(WebSession).where(WebSession.id_hash == digest)
                session.execute(touch.values(last_seen=now))
        return WebIdentity(actor, csrf)
    blocked = actor is not None and actor.blocked
    with session_scope(engine) as session:
        ended = WebSession.user_id == user_id if blocked else WebSession.id_hash == digest
        session.execute(delete(WebSession).where(ended))
    if blocked:
        assert actor is not None
        raise Unauthenticated(f"the account {actor.username!r} is blocked or not approved")
    raise Unauthenticated(ENDED)


@open_to_anyone("a logout ends only the session whose signed cookie it shows")
def log_out(session: Session, settings: Settings, cookie: str) -> None:
    """The session ends (its row goes); an unknown or ended one is already out."""
    try:
        session_id = _session_id(settings, cookie)
    except Unauthenticated:
        return
    session.execute(delete(WebSession).where(WebSession.id_hash == _digest(session_id)))


def _holder(session: Session, actor: Actor, username: str | None) -> User:
    user = get_user(session, username or actor.username)
    require(session, actor, Action.WEB_SESSIONS, user, f"of {user.username}")
    return user


def _current_digest(settings: Settings, cookie: str | None) -> str | None:
    try:
        return _digest(_session_id(settings, cookie)) if cookie else None
    except Unauthenticated:
        return None


@guarded(Action.WEB_SESSIONS, reads=True)
def list_sessions(
    session: Session,
    actor: Actor,
    settings: Settings,
    *,
    username: str | None = None,
    cookie: str | None = None,
) -> list[SessionInfo]:
    """The account's open sessions (default: the actor's), newest first; ``cookie``
    marks the one asking."""
    user = _holder(session, actor, username)
    current = _current_digest(settings, cookie)
    rows = session.scalars(
        select(WebSession)
        .where(WebSession.user_id == user.id, WebSession.expires > utcnow())
        .order_by(WebSession.created.desc())
    )
    return [SessionInfo(r.created, r.last_seen, r.expires, r.id_hash == current) for r in rows]


@guarded(Action.WEB_SESSIONS)
def end_sessions(
    session: Session,
    actor: Actor,
    settings: Settings,
    *,
    username: str | None = None,
    keep_cookie: str | None = None,
) -> int:
    """End the account's sessions (default: the actor's) but the one of ``keep_cookie``
    ("log out everywhere else"); returns how many ended."""
    user = _holder(session, actor, username)
    query = delete(WebSession).where(WebSession.user_id == user.id)
    kept = _current_digest(settings, keep_cookie)
    if kept is not None:
        query = query.where(WebSession.id_hash != kept)
    return session.execute(query).rowcount or 0
