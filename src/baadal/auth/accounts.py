"""User accounts (the seed's register_callback and create_or_update_user).

Passwords are stored as argon2id hashes and never logged. A registration through the
database waits for an administrator's approval (registration_key 'pending') unless the
settings allow login right after registration, as upstream did.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from baadal import constants as C
from baadal.auth import roles
from baadal.config import Settings
from baadal.db.models import Organisation, User
from baadal.errors import ConflictError, NotFoundError, ValidationError
from baadal.net.validators import check_no_control, check_safe_name

USERNAME_MAX = 128
PERSON_NAME_MAX = 128
PASSWORD_MIN = 8
PASSWORD_MAX = 1024
_EMAIL = re.compile(r"[^@\s\x00-\x1f\x7f-\x9f]{1,64}@[A-Za-z0-9.-]{1,255}\.[A-Za-z]{2,}")
_hasher = PasswordHasher()
log = logging.getLogger("baadal")


@dataclass(frozen=True)
class UserInfo:
    """What an identity source (the registration form, LDAP) knows of a person."""

    username: str
    first_name: str = ""
    last_name: str = ""
    email: str | None = None
    organisation: str | None = None


def hash_password(password: str) -> str:
    if not PASSWORD_MIN <= len(password) <= PASSWORD_MAX:
        raise ValidationError(f"a password must be {PASSWORD_MIN}-{PASSWORD_MAX} characters")
    return _hasher.hash(password)


def verify_password(stored_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(stored_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(stored_hash: str) -> bool:
    """True when the hash was made with weaker parameters than today's."""
    return _hasher.check_needs_rehash(stored_hash)


def check_username(username: str) -> str:
    return check_safe_name(username, "a username", USERNAME_MAX)


def check_person_name(value: str, what: str) -> str:
    """First and last names: free text, but printable and short enough for the column."""
    if not isinstance(value, str) or len(value) > PERSON_NAME_MAX:
        raise ValidationError(f"{what} must be text of at most {PERSON_NAME_MAX} characters")
    return check_no_control(value, what).strip()


def check_email(email: str | None) -> str | None:
    if email in (None, ""):
        return None
    if not _EMAIL.fullmatch(email):
        raise ValidationError(f"{email!r} is not an e-mail address")
    return email.lower()


def get_user(session: Session, username: str) -> User:
    user = session.scalar(select(User).where(User.username == username))
    if user is None:
        raise NotFoundError(f"no user named {username!r}")
    return user


def _organisation(session: Session, name: str | None) -> Organisation | None:
    if not name:
        return None
    org = session.scalar(select(Organisation).where(Organisation.name == name))
    if org is None:
        raise NotFoundError(f"no organisation named {name!r}")
    return org


def _check_free(session: Session, username: str, email: str | None) -> None:
    if session.scalar(select(User.id).where(User.username == username)) is not None:
        raise ConflictError(f"the username {username!r} is taken")
    if email and session.scalar(select(User.id).where(User.email == email)) is not None:
        raise ConflictError(f"the e-mail address {email!r} belongs to another account")


def registration_organisations(session: Session) -> list[str]:
    """The organisations that take self-registrations (none until an admin says so)."""
    query = select(Organisation.name).where(Organisation.allows_registration.is_(True))
    return list(session.scalars(query.order_by(Organisation.name)))


def _registration_organisation(session: Session, name: str | None) -> Organisation | None:
    """Only an organisation that takes self-registrations (``org add|set --registration``);
    one that does not and one that does not exist get the same answer."""
    if not name:
        return None
    org = session.scalar(select(Organisation).where(Organisation.name == name))
    if org is None or not org.allows_registration:
        allowed = registration_organisations(session)
        offered = f"choose one of {', '.join(allowed)}" if allowed else "register without one"
        raise ValidationError(
            f"organisation {name!r} does not take self-registrations: {offered} "
            "(an administrator can move the account)"
        )
    return org


def register_callback(session: Session, settings: Settings, info: UserInfo, password: str) -> User:
    """A new local account with the user role; it can log in once an administrator
    approves it (or at once with auth.login_after_registration). The settings' role
    lists are not applied: a registration form takes any name, so "admin_uid = alice"
    must not make whoever registers first as alice an admin; an admin grants roles."""
    username = check_username(info.username)
    email = check_email(info.email)
    first_name = check_person_name(info.first_name, "first name")
    last_name = check_person_name(info.last_name, "last name")
    organisation = _registration_organisation(session, info.organisation)
    _check_free(session, username, email)
    user = User(
        username=username,
        first_name=first_name,
        last_name=last_name,
        email=email,
        password=hash_password(password),
        organisation=organisation,
        registration_key=C.RegistrationKey.ACTIVE
        if settings.auth.login_after_registration
        else C.RegistrationKey.PENDING,
    )
    session.add(user)
    session.flush()
    roles.add_membership_db(session, user.id, [C.Role.USER])
    return user


def create_or_update_user(session: Session, settings: Settings, info: UserInfo) -> User:
    """Called when someone first logs in through an outside source that vouches for the
    name (LDAP): the account is made with its organisation and the roles the settings
    grant that name; later logins refresh names and e-mail (an e-mail another account
    holds is left as it was). The organisation and roles are then the admins' to change.
    Such accounts have no local password."""
    username = check_username(info.username)
    email = check_email(info.email)
    first_name = check_person_name(info.first_name, "first name")
    last_name = check_person_name(info.last_name, "last name")
    user = session.scalar(select(User).where(User.username == username))
    if user is None:
        user = User(
            username=username,
            registration_key=C.RegistrationKey.ACTIVE,
            organisation=_organisation(session, info.organisation),
        )
        session.add(user)
    user.first_name, user.last_name = first_name, last_name
    if email and email != user.email:
        holder = session.scalar(select(User.username).where(User.email == email))
        if holder is None:
            user.email = email
        else:
            log.warning(
                "e-mail %s of %s belongs to account %s; not copied", email, username, holder
            )
    session.flush()
    if not roles.user_roles(session, user.id):
        roles.add_membership_db(session, user.id, roles.fetch_user_role(settings, username))
    return user


def approve_user(session: Session, username: str) -> User:
    """An administrator lets a pending registration log in."""
    user = get_user(session, username)
    if user.registration_key != C.RegistrationKey.PENDING:
        raise ConflictError(f"{username!r} is not awaiting approval")
    user.registration_key = C.RegistrationKey.ACTIVE
    return user


def set_blocked(session: Session, username: str, blocked: bool) -> User:
    user = get_user(session, username)
    user.block_user = blocked
    return user


def set_password(session: Session, username: str, password: str) -> User:
    user = get_user(session, username)
    user.password = hash_password(password)
    return user
