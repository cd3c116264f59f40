"""Roles (the seed's fetch_user_role, add_or_update_user_memberships, add_membership_db).

A role is a membership in a user_group row. At a user's first login the roles come from
the settings' username lists (upstream admin_uid / orgadmin_uid / faculty_uid), and
everybody is a user; after that an admin changes them and the lists no longer apply.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from baadal import constants as C
from baadal.config import Settings
from baadal.db.models import User, UserGroup, UserMembership
from baadal.errors import NotFoundError, ValidationError


def parse_role(name: str) -> C.Role:
    try:
        return C.Role(name.strip().lower())
    except ValueError:
        raise ValidationError(
            f"unknown role {name!r}; choose from {', '.join(r.value for r in C.Role)}"
        ) from None


def fetch_user_role(settings: Settings, username: str) -> list[C.Role]:
    """The roles the settings grant ``username``: admin, orgadmin, faculty as listed, and
    user always."""
    general = settings.general
    granted = [
        (C.Role.ADMIN, general.admin_uid),
        (C.Role.ORGADMIN, general.orgadmin_uid),
        (C.Role.FACULTY, general.faculty_uid),
    ]
    return [role for role, names in granted if username in names] + [C.Role.USER]


def _group_ids(session: Session, roles: Iterable[C.Role]) -> dict[C.Role, int]:
    wanted = {C.Role(r) for r in roles}
    rows = session.execute(
        select(UserGroup.role, UserGroup.id).where(UserGroup.role.in_([r.value for r in wanted]))
    ).all()
    found = {C.Role(role): group_id for role, group_id in rows}
    missing = wanted - set(found)
    if missing:
        raise NotFoundError(f"no user group for role(s) {', '.join(sorted(missing))}")
    return found


def user_roles(session: Session, user_id: int) -> set[C.Role]:
    rows = session.scalars(
        select(UserGroup.role)
        .join(UserMembership, UserMembership.group_id == UserGroup.id)
        .where(UserMembership.user_id == user_id)
    )
    return {C.Role(role) for role in rows}


def add_membership_db(session: Session, user_id: int, roles: Iterable[C.Role]) -> None:
    """Add the roles the user does not have yet; keeps the ones it has."""
    have = user_roles(session, user_id)
    for role, group_id in _group_ids(session, roles).items():
        if role not in have:
            session.add(UserMembership(user_id=user_id, group_id=group_id))
    session.flush()


def add_or_update_user_memberships(
    session: Session, user_id: int, roles: Iterable[C.Role]
) -> set[C.Role]:
    """Make the user's roles exactly ``roles`` (an admin's change); user is always kept."""
    wanted = {C.Role(r) for r in roles} | {C.Role.USER}
    if session.get(User, user_id) is None:
        raise NotFoundError(f"no user with id {user_id}")
    groups = _group_ids(session, wanted)
    session.execute(
        delete(UserMembership).where(
            UserMembership.user_id == user_id, UserMembership.group_id.not_in(groups.values())
        )
    )
    add_membership_db(session, user_id, wanted)
    return wanted
