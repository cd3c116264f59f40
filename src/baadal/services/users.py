"""Accounts for the doors: registration and login (open to anyone), the list, approval,
blocking, roles and passwords (thin, guarded wrappers over :mod:`baadal.auth`).

Who may do what to an account: an admin anything; an orgadmin approve, block and unblock
the accounts of their organisation; everyone see their own account and set their own
password (:data:`baadal.services.policy.RULES`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Engine, delete, func, select
from sqlalchemy.orm import Session

from baadal import constants as C
from baadal.auth import accounts, roles, sessions, throttle
from baadal.config import Settings
from baadal.db.models import Organisation, User, UserGroup, UserMembership, WebSession
from baadal.db.session import session_scope
from baadal.errors import LoginThrottled, PermissionDenied, RegistrationThrottled
from baadal.mail import notify
from baadal.services import auditing, policy
from baadal.services.policy import Action, Actor, guarded, open_to_anyone
from baadal.services.rows import Page, keyset
from baadal.timeutil import utcnow

log = logging.getLogger("baadal")


@dataclass(frozen=True)
class Account:
    """An account as people see it (never its password hash)."""

    id: int
    username: str
    name: str
    email: str
    organisation: str
    roles: tuple[C.Role, ...]
    state: str
    #: gets a mail when a task of one of their VMs ends
    task_mails: bool = True


def _state(user: User) -> str:
    if user.block_user:
        return "blocked"
    return {
        C.RegistrationKey.PENDING: "awaiting approval",
        C.RegistrationKey.DISABLED: "disabled",
    }.get(user.registration_key, "active")


def _roles(session: Session, user: User) -> tuple[C.Role, ...]:
    return tuple(sorted(roles.user_roles(session, user.id), key=lambda r: r.value))


def _account(session: Session, user: User) -> Account:
    org = user.organisation.name if user.organisation else None
    return _shown(user, org, _roles(session, user))


def _shown(user: User, organisation: str | None, held: Sequence[C.Role]) -> Account:
    return Account(
        id=user.id,
        username=user.username,
        name=f"{user.first_name} {user.last_name}".strip(),
        email=user.email or "",
        organisation=organisation or "",
        roles=tuple(sorted(held, key=lambda r: r.value)),
        state=_state(user),
        task_mails=bool(user.mail_subscribed),
    )


#: an account's roles, comma-separated, for a list's one query
_ROLES = (
    select(func.aggregate_strings(UserGroup.role, ","))
    .join(UserMembership, UserMembership.group_id == UserGroup.id)
    .where(UserMembership.user_id == User.id)
    .scalar_subquery()
)


def _user(session: Session, actor: Actor, action: Action, username: str) -> User:
    """The account, if ``actor`` may do ``action`` to it."""
    user = accounts.get_user(session, username)
    policy.require(session, actor, action, user, f"account {username}")
    return user


def _end_sessions(session: Session, user: User) -> None:
    session.execute(delete(WebSession).where(WebSession.user_id == user.id))


# --- open to anyone ----------------------------------------------------------------------


@open_to_anyone("self-registration: the account waits for approval and has only the user role")
def register_self(
    session: Session,
    settings: Settings,
    *,
    username: str,
    password: str,
    email: str | None = None,
    first_name: str = "",
    last_name: str = "",
    organisation: str | None = None,
    source: str | None = None,
) -> Account:
    """Anyone may register, so there is no actor: the account has only the user role and
    waits for an approval (unless auth.login_after_registration), and roles come from an
    admin, so registering grants nothing. ``source`` (the client's address, over HTTP)
    may register ``[auth] registrations_per_address`` accounts a window, no more."""
    if source:
        auth = settings.auth
        limit, window = auth.registrations_per_address, auth.registration_window_s
        try:
            throttle.count_registration(session, source, limit, window, utcnow())
        except RegistrationThrottled as exc:
            log.warning("registration of %r from %s refused: %s", username, source, exc)
            raise
    info = accounts.UserInfo(username, first_name, last_name, email, organisation)
    return _account(session, accounts.register_callback(session, settings, info, password))


@open_to_anyone("a login: the password is the proof, there is no actor before it")
def check_login(
    engine: Engine,
    settings: Settings,
    username: str,
    password: str,
    *,
    source: str | None = None,
) -> Account:
    """A login through the configured source (database or LDAP), open to anyone: the
    password is the proof, so there is no actor yet. PermissionDenied when it fails;
    :class:`LoginThrottled` ("try again in N s"), before any password is checked, after
    too many failures of the name or from ``source`` (the client's address). Failures
    are counted in their own transaction and logged, without the password."""
    now = utcnow()
    try:
        throttle.check(engine, username, source, now)
    except LoginThrottled as exc:
        log.warning("login of %r from %s refused: %s", username, source or "unknown", exc)
        raise
    try:
        with session_scope(engine) as session:
            account = _account(session, sessions.login(session, settings, username, password))
    except PermissionDenied as exc:
        lockout = throttle.record_failure(engine, username, source, now)
        log.warning(
            "failed login of %r from %s: %s%s",
            username,
            source or "unknown",
            exc,
            f"; further logins wait {lockout} s" if lockout else "",
        )
        raise
    throttle.record_success(engine, username)
    return account


# --- guarded -------------------------------------------------------------------------------


@guarded(Action.USER_LIST)
def list_accounts(
    session: Session, actor: Actor, *, after: int | None = None, limit: int | None = None
) -> Page[Account]:
    """The accounts the actor may see (admins: all; orgadmins: their organisation's),
    without the system account, by id: one query a page (no limit: all of them)."""
    policy.require(session, actor, Action.USER_LIST)
    query = (
        select(User, Organisation.name, _ROLES)
        .outerjoin(Organisation, Organisation.id == User.organisation_id)
        .where(User.id >= 0, policy.user_filter(actor))
    )
    rows = [
        _shown(user, org, [C.Role(r) for r in held.split(",")] if held else [])
        for user, org, held in session.execute(keyset(query, User.id, after, limit))
    ]
    return Page.of(rows, limit, lambda a: a.id)


@guarded(Action.USER_READ)
def get_account(session: Session, actor: Actor, username: str) -> Account:
    """One account (admins: any; orgadmins: their organisation's; others: their own)."""
    return _account(session, _user(session, actor, Action.USER_READ, username))


@guarded(Action.USER_READ)
def get_roles(session: Session, actor: Actor, username: str) -> tuple[C.Role, ...]:
    return _roles(session, _user(session, actor, Action.USER_READ, username))


@guarded(Action.USER_ROLES)
def set_roles(
    session: Session, actor: Actor, username: str, role_names: Sequence[str]
) -> tuple[C.Role, ...]:
    """Make the account's roles exactly these (user is always kept); returns them."""
    wanted = [roles.parse_role(name) for name in role_names if name.strip()]
    user = accounts.get_user(session, username)
    auditing.note(user, detail=", ".join(sorted(r.value for r in wanted)))
    roles.add_or_update_user_memberships(session, user.id, wanted)
    return _roles(session, user)


@guarded(Action.USER_APPROVE)
def approve(session: Session, actor: Actor, username: str) -> None:
    """Let a pending registration log in."""
    _user(session, actor, Action.USER_APPROVE, username)
    notify.registration_approved(session, accounts.approve_user(session, username))


@guarded(Action.USER_APPROVE)
def set_blocked(session: Session, actor: Actor, username: str, blocked: bool) -> None:
    """Refuse (or allow again) the account's logins; its VMs are left alone. Blocking
    ends its portal sessions at once."""
    user = _user(session, actor, Action.USER_APPROVE, username)
    accounts.set_blocked(session, username, blocked)
    if blocked:
        _end_sessions(session, user)


@guarded(Action.USER_PASSWORD)
def set_password(session: Session, actor: Actor, username: str, password: str) -> None:
    """A new password ends every portal session of the account (one may be a thief's)."""
    user = _user(session, actor, Action.USER_PASSWORD, username)
    accounts.set_password(session, username, password)
    _end_sessions(session, user)


@guarded(Action.USER_MAIL)
def set_task_mails(session: Session, actor: Actor, username: str, wanted: bool) -> Account:
    """Whether the account is mailed when a task of one of its VMs ends (request mails,
    idle-VM warnings and account mails come whatever it says)."""
    user = _user(session, actor, Action.USER_MAIL, username)
    user.mail_subscribed = wanted
    return _account(session, user)
