"""Reference rows every Baadal database has (upstream private/startup_data.xml, trimmed)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from baadal import constants as C
from baadal.db.models import Constant, Organisation, User, UserGroup

ROLE_DESCRIPTIONS = {
    C.Role.ADMIN: "Administrators of the whole cloud",
    C.Role.ORGADMIN: "Administrators of one organisation",
    C.Role.FACULTY: "Approve their students' requests",
    C.Role.USER: "Request and use virtual machines",
}

DEFAULT_CONSTANTS = {
    "baadal_status": C.BaadalStatus.UP.value,
    "vncport_start_range": str(C.VNC_PORT_RANGE[0]),
    "vncport_end_range": str(C.VNC_PORT_RANGE[1]),
}

ADMIN_ORGANISATION = "ADMIN"


def seed_reference_data(session: Session) -> None:
    """Insert whatever reference row is missing; never changes existing rows."""
    have_roles = set(session.scalars(select(UserGroup.role)))
    for role, description in ROLE_DESCRIPTIONS.items():
        if role.value not in have_roles:
            session.add(UserGroup(role=role.value, description=description))
    have_constants = set(session.scalars(select(Constant.name)))
    for name, value in DEFAULT_CONSTANTS.items():
        if name not in have_constants:
            session.add(Constant(name=name, value=value))
    org = session.scalar(select(Organisation).where(Organisation.name == ADMIN_ORGANISATION))
    if org is None:
        org = Organisation(name=ADMIN_ORGANISATION, details="Cloud administrators")
        session.add(org)
        session.flush()
    if session.get(User, C.SYSTEM_USER_ID) is None:
        session.add(
            User(
                id=C.SYSTEM_USER_ID,
                username="system",
                first_name="System",
                last_name="User",
                organisation_id=org.id,
                registration_key=C.RegistrationKey.DISABLED,
            )
        )
