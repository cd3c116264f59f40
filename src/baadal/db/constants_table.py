"""The seed's get_constant / update_constant over the ``constants`` table."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from baadal.db.models import Constant
from baadal.errors import NotFoundError, ValidationError


def get_constant(session: Session, name: str) -> str:
    value = session.scalar(select(Constant.value).where(Constant.name == name))
    if value is None:
        raise NotFoundError(f"no constant named {name!r}")
    return value


def update_constant(session: Session, name: str, value: str) -> None:
    """Set a constant, creating it if it does not exist yet."""
    if not name or len(name) > 255 or len(value) > 255:
        raise ValidationError("constant name and value must be 1-255 characters")
    row = session.scalar(select(Constant).where(Constant.name == name))
    if row is None:
        session.add(Constant(name=name, value=value))
    else:
        row.value = value
