"""Personal API tokens: what a script shows as ``Authorization: Bearer`` instead of a
password. A token is shown once, when made; only its SHA-256 is stored (the token is 32
random bytes, so nobody can guess it from the hash, and a fast hash keeps each request
to one indexed lookup). Everyone manages their own tokens, admins anyone's."""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import NamedTuple

from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session

from baadal import constants as C
from baadal.auth import accounts
from baadal.db.direct import DirectQuery
from baadal.db.models import ApiToken, User, UserGroup, UserMembership
from baadal.errors import NotFoundError, PermissionDenied, Unauthenticated, ValidationError
from baadal.net.validators import check_int, check_row_id
from baadal.services.policy import (
    Action,
    Actor,
    actor_with_roles,
    guarded,
    open_to_anyone,
    require,
)
from baadal.services.rows import Page, one_more_than
from baadal.timeutil import utcnow

_TOKEN_RE = re.compile(re.escape(C.API_TOKEN_PREFIX) + r"[A-Za-z0-9_-]{43}")
_NAME_RE = re.compile(C.API_TOKEN_NAME_RE)
#: last_used is written at most this often per token (not a write on every request)
_TOUCH_EVERY = timedelta(minutes=1)


@dataclass(frozen=True)
class TokenInfo:
    """A token as lists show it: never the token itself."""

    id: int
    username: str
    name: str
    prefix: str
    created: datetime
    expires: datetime | None
    last_used: datetime | None
    revoked: datetime | None

    @property
    def active(self) -> bool:
        return self.revoked is None and (self.expires is None or self.expires > utcnow())


@dataclass(frozen=True)
class NewToken:
    info: TokenInfo
    #: the token itself: shown this once, never stored
    token: str


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _info(row: ApiToken, username: str) -> TokenInfo:
    return TokenInfo(
        row.id,
        username,
        row.name,
        row.prefix,
        row.created,
        row.expires,
        row.last_used,
        row.revoked,
    )


def _holder(session: Session, actor: Actor, username: str | None) -> User:
    """Whose tokens: ``username``'s, or the actor's own."""
    if username is None:
        user = session.get(User, actor.user_id)
    else:
        user = accounts.get_user(session, username)
    if user is None or user.id == C.SYSTEM_USER_ID:
        # the controller itself: a token for it would be an admin key nobody answers for
        raise ValidationError("the system account has no API tokens: name a user")
    require(session, actor, Action.TOKEN_MANAGE, user, f"of {user.username}")
    return user


@guarded(Action.TOKEN_MANAGE)
def create_token(
    session: Session,
    actor: Actor,
    *,
    username: str | None = None,
    name: str = "api",
    expires_days: int | None = None,
) -> NewToken:
    """A new token for ``username`` (default: the actor), valid ``expires_days`` or
    until revoked."""
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise ValidationError(
            "token name must be 1-64 ASCII letters, digits, spaces or . _ : @ + -"
        )
    if expires_days is not None:
        check_int(expires_days, "token validity in days", 1, C.API_TOKEN_DAYS_MAX)
    user = _holder(session, actor, username)
    token = C.API_TOKEN_PREFIX + secrets.token_urlsafe(C.API_TOKEN_BYTES)
    now = utcnow()
    row = ApiToken(
        user_id=user.id,
        name=name,
        token_hash=_digest(token),
        prefix=token[: len(C.API_TOKEN_PREFIX) + C.API_TOKEN_SHOWN_CHARS],
        created=now,
        expires=now + timedelta(days=expires_days) if expires_days is not None else None,
    )
    session.add(row)
    session.flush()
    return NewToken(_info(row, user.username), token)


@guarded(Action.TOKEN_MANAGE, reads=True)
def list_tokens(
    session: Session,
    actor: Actor,
    *,
    username: str | None = None,
    limit: int = C.API_PAGE_MAX,
    after: int | None = None,
) -> Page[TokenInfo]:
    """The tokens of ``username`` (default: the actor), revoked and expired ones too,
    oldest first from id ``after`` on."""
    check_int(limit, "token list length", 1, C.API_PAGE_MAX)
    user = _holder(session, actor, username)
    query = (
        select(ApiToken)
        .where(ApiToken.user_id == user.id)
        .order_by(ApiToken.id)
        .limit(one_more_than(limit))
    )
    if after is not None:
        query = query.where(ApiToken.id > check_int(after, "after", 0, C.ROW_ID_MAX))
    rows = [_info(row, user.username) for row in session.scalars(query)]
    return Page.of(rows, limit, lambda info: info.id)


@guarded(Action.TOKEN_MANAGE)
def revoke_token(session: Session, actor: Actor, token_id: int) -> TokenInfo:
    """The token stops working at once (kept, so lists show when it was revoked)."""
    check_row_id(token_id, "token")
    row = session.get(ApiToken, token_id)
    user = session.get(User, row.user_id) if row is not None else None
    if row is None or user is None:
        raise NotFoundError(f"no token with id {token_id}")
    require(session, actor, Action.TOKEN_MANAGE, user, f"of {user.username}")
    if row.revoked is None:
        row.revoked = utcnow()
    return _info(row, user.username)


class _HolderRow(NamedTuple):
    """A row of :data:`_HOLDER`: the token, its holder, and one of their roles."""

    token_id: int
    revoked: datetime | None
    expires: datetime | None
    last_used: datetime | None
    id: int
    username: str
    organisation_id: int | None
    block_user: bool
    registration_key: str | None
    role: int | None


#: the token, its holder and their roles, one row per role: every request asks this, so
#: it runs on the driver's cursor (built once: making it would cost more than running it)
_HOLDER = DirectQuery(
    select(
        ApiToken.id,
        ApiToken.revoked,
        ApiToken.expires,
        ApiToken.last_used,
        User.id,
        User.username,
        User.organisation_id,
        User.block_user,
        User.registration_key,
        UserGroup.role,
    )
    .join(User, User.id == ApiToken.user_id)
    .outerjoin(UserMembership, UserMembership.user_id == User.id)
    .outerjoin(UserGroup, UserGroup.id == UserMembership.group_id)
    .where(ApiToken.token_hash == bindparam("digest"))
)


@dataclass(frozen=True)
class TokenHolder:
    """Who presents a token, and whether its use is worth recording now."""

    actor: Actor
    token_id: int
    #: last_used is older than a minute: :func:`record_use` it, in a session that may write
    stale: bool


@open_to_anyone("authentication: the token is the proof, there is no actor before it")
def token_holder(session: Session, token: str) -> TokenHolder:
    """Who presents ``token``, in one statement that writes nothing (every request asks
    this, in the session of its reads). Unauthenticated for an unknown, revoked or
    expired token (the same message for all: a guesser learns nothing); PermissionDenied
    for a blocked or not yet approved account."""
    if not isinstance(token, str) or not _TOKEN_RE.fullmatch(token):
        raise Unauthenticated("invalid, expired or revoked API token")
    rows = _HOLDER.rows(session, {"digest": _digest(token)})
    now = utcnow()
    if not rows:
        raise Unauthenticated("invalid, expired or revoked API token")
    first = _HolderRow._make(rows[0])
    if first.revoked is not None or (first.expires is not None and first.expires <= now):
        raise Unauthenticated("invalid, expired or revoked API token")
    roles = [C.Role(row[-1]) for row in rows if row[-1] is not None]
    actor = actor_with_roles(first, roles)
    if actor.blocked:
        raise PermissionDenied(f"{actor.username} is blocked or not approved: nothing allowed")
    stale = first.last_used is None or now - first.last_used >= _TOUCH_EVERY
    return TokenHolder(actor, first.token_id, stale)


@open_to_anyone("a token's use is recorded once its holder passed token_holder")
def record_use(session: Session, token_id: int) -> None:
    """The token's last_used is now (it tells its holder and admins that it is in use)."""
    session.execute(update(ApiToken).where(ApiToken.id == token_id).values(last_used=utcnow()))
