"""Quotas for the doors: a user's or an organisation's usage and limits, and (admins)
their limits. The arithmetic and the locked check are :mod:`baadal.quota`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from baadal import constants as C
from baadal import quota
from baadal.config import Settings
from baadal.db.models import Organisation, Quota, User
from baadal.errors import NotFoundError, ValidationError
from baadal.net.validators import check_int
from baadal.services.policy import Action, Actor, guarded, require


@dataclass(frozen=True)
class QuotaLine:
    item: C.QuotaItem
    #: RAM in GB (a fraction), the rest as limited
    used: float
    #: 0 = unlimited
    limit: int
    #: the limit is this account's own, not the settings' default
    override: bool


@dataclass(frozen=True)
class QuotaReport:
    whose: str
    lines: tuple[QuotaLine, ...]


def _account(
    session: Session, actor: Actor, user: str | None, org: str | None
) -> tuple[str, quota.Account, User | Organisation]:
    if user is not None and org is not None:
        raise ValidationError("name a user or an organisation, not both")
    if org is not None:
        row = session.scalar(select(Organisation).where(Organisation.name == org))
        if row is None:
            raise NotFoundError(f"no organisation named {org!r}")
        return f"organisation {row.name}", quota.Account(organisation_id=row.id), row
    name = user if user is not None else actor.username
    found = session.scalar(select(User).where(User.username == name))
    if found is None:
        raise NotFoundError(f"no user named {name!r}")
    return f"user {found.username}", quota.Account(user_id=found.id), found


@guarded(Action.QUOTA_READ)
def show_quota(
    session: Session,
    actor: Actor,
    settings: Settings,
    *,
    user: str | None = None,
    org: str | None = None,
) -> QuotaReport:
    """Usage and limits of a user (default: the actor) or an organisation."""
    whose, account, target = _account(session, actor, user, org)
    require(session, actor, Action.QUOTA_READ, target, whose)
    used = quota.usage(session, account)
    limits = quota.limits(session, settings, account)
    row = session.scalar(select(Quota).where(account.where()))
    lines = []
    for item in C.QuotaItem:
        shown = used[item] / quota.MB_PER_GB if item == C.QuotaItem.RAM_GB else used[item]
        override = row is not None and getattr(row, item.value) is not None
        lines.append(QuotaLine(item, shown, limits[item], override))
    return QuotaReport(whose, tuple(lines))


@guarded(Action.QUOTA_SET)
def set_quota(
    session: Session,
    actor: Actor,
    *,
    user: str | None = None,
    org: str | None = None,
    limits: Mapping[C.QuotaItem, int],
) -> None:
    """Set some limits of a user or an organisation (0 = unlimited); the others keep
    theirs (or the settings' default)."""
    if user is None and org is None:
        raise ValidationError("name a user (--user) or an organisation (--org)")
    if not limits:
        raise ValidationError("no limit given")
    for item, value in limits.items():
        check_int(value, f"quota {item.value}", 0, C.QUOTA_MAX)
    _, account, _ = _account(session, actor, user, org)
    row = session.scalar(select(Quota).where(account.where()))
    if row is None:
        row = Quota(user_id=account.user_id, organisation_id=account.organisation_id)
        session.add(row)
    for item, value in limits.items():
        setattr(row, item.value, value)
    session.flush()
