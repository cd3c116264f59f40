"""Logging in (the seed's login_callback, login_ldap_callback and is_auth_type_db).

One message for every wrong username or password, checked before anything else is said
about the account, so a login form cannot be used to find out who has one; a password is
checked against a dummy hash when there is no such user, so it takes as long (the
first time too: the hash is ready when the module loads).
"""

from __future__ import annotations

import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from baadal import constants as C
from baadal.auth import accounts, ldap, roles
from baadal.config import Settings
from baadal.db.models import Organisation, User
from baadal.db.seed import ADMIN_ORGANISATION
from baadal.errors import PermissionDenied

BAD_LOGIN = "wrong username or password"


#: an argon2id hash of a random password nobody knows, made once with today's parameters
#: (hashing one here would cost every CLI command a quarter of a second)
_STORED_DUMMY_HASH = "$argon2id$v=19$m=65536,t=3,p=4$lolhtrXVaxyC4IiA0YeUZg$m5OWHat8m4h7k/bd2nkYBPWl4KJqA5bQEvCDBzhuC5Y"
#: what unknown users' passwords are checked against: it must cost what a real one does,
#: so it is made again at load when the hasher's parameters are no longer the stored ones
DUMMY_HASH = (
    accounts.hash_password(secrets.token_urlsafe(24))
    if accounts.needs_rehash(_STORED_DUMMY_HASH)
    else _STORED_DUMMY_HASH
)


def is_auth_type_db(settings: Settings) -> bool:
    """True when users log in with passwords kept by Baadal, False for LDAP."""
    return settings.auth.auth_type == C.AuthType.DB


def _check_account(user: User) -> None:
    if user.block_user:
        raise PermissionDenied(f"the account {user.username!r} is blocked")
    if user.registration_key == C.RegistrationKey.PENDING:
        raise PermissionDenied(f"the account {user.username!r} awaits an administrator's approval")
    if user.registration_key == C.RegistrationKey.DISABLED:
        raise PermissionDenied(f"the account {user.username!r} is disabled")


def login_callback(session: Session, settings: Settings, user: User) -> set[C.Role]:
    """After a login: a user without any membership gets one. Names a directory vouches
    for (LDAP) get the roles the settings grant them; a local account gets the user
    role (anyone can register any name)."""
    have = roles.user_roles(session, user.id)
    if not have:
        granted = (
            [C.Role.USER]
            if is_auth_type_db(settings)
            else roles.fetch_user_role(settings, user.username)
        )
        roles.add_membership_db(session, user.id, granted)
        have = roles.user_roles(session, user.id)
    return have


def login_ldap_callback(session: Session, settings: Settings, info: accounts.UserInfo) -> User:
    """An LDAP login makes or refreshes the local account. A new account of one of the
    settings' admins belongs to the ADMIN organisation, others to the one their entry
    names when Baadal knows it, else to ldap.default_organisation. Blocked or disabled
    accounts, and the system account, are refused before anything is changed."""
    existing = session.scalar(select(User).where(User.username == info.username))
    if existing is not None:
        if existing.id == C.SYSTEM_USER_ID:
            raise PermissionDenied(BAD_LOGIN)
        _check_account(existing)
    organisation = info.organisation
    if C.Role.ADMIN in roles.fetch_user_role(settings, info.username):
        organisation = ADMIN_ORGANISATION
    elif not organisation or not session.scalar(
        select(Organisation.id).where(Organisation.name == organisation)
    ):
        organisation = settings.ldap.default_organisation or None
    return accounts.create_or_update_user(
        session,
        settings,
        accounts.UserInfo(info.username, info.first_name, info.last_name, info.email, organisation),
    )


def login(session: Session, settings: Settings, username: str, password: str) -> User:
    """The user whose password this is, ready to work; PermissionDenied otherwise."""
    if is_auth_type_db(settings):
        user = session.scalar(select(User).where(User.username == username))
        if user is None or not user.password:
            accounts.verify_password(DUMMY_HASH, password)
            raise PermissionDenied(BAD_LOGIN)
        if not accounts.verify_password(user.password, password):
            raise PermissionDenied(BAD_LOGIN)
        if accounts.needs_rehash(user.password):
            user.password = accounts.hash_password(password)
    elif settings.auth.auth_type == C.AuthType.LDAP:
        info = ldap.ldap_authenticate(settings, username, password)
        if info is None:
            raise PermissionDenied(BAD_LOGIN)
        user = login_ldap_callback(session, settings, info)
    else:
        raise PermissionDenied(f"logins through {settings.auth.auth_type} are not supported")
    _check_account(user)
    login_callback(session, settings, user)
    return user
