"""Organisations: adding and renaming them, the security domains each may use, whether
people may register themselves into it, and who its orgadmins are.

Admins manage organisations; an orgadmin may see their own; the names of those taking
self-registrations are open to anyone (a registration form offers them).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from baadal import constants as C
from baadal.auth import accounts
from baadal.db.models import (
    Organisation,
    SecurityDomain,
    SecurityDomainOrg,
    User,
    UserGroup,
    UserMembership,
)
from baadal.db.seed import ADMIN_ORGANISATION
from baadal.errors import ConflictError, NotFoundError, ValidationError
from baadal.net.validators import check_no_control, check_safe_name
from baadal.services import auditing, lookup
from baadal.services.policy import Action, Actor, guarded, open_to_anyone, require
from baadal.services.rows import Page, keyset


@dataclass(frozen=True)
class OrganisationInfo:
    """An organisation as people see it."""

    id: int
    name: str
    details: str
    allows_registration: bool
    #: security domains given to this organisation (besides those visible to all)
    domains: tuple[str, ...]
    orgadmins: tuple[str, ...]
    users: int


def _check_name(name: str) -> str:
    return check_safe_name(name, "an organisation name", C.ORG_NAME_MAX)


def _check_details(details: str) -> str:
    if not isinstance(details, str) or len(details) > C.ORG_DETAILS_MAX:
        raise ValidationError(f"details must be text of at most {C.ORG_DETAILS_MAX} characters")
    return check_no_control(details, "details").strip()


def _check_registration(org_name: str, registration: bool) -> None:
    if registration and org_name == ADMIN_ORGANISATION:
        raise ValidationError(
            f"the cloud administrators' organisation {ADMIN_ORGANISATION!r} takes no "
            "self-registrations"
        )


def _org(session: Session, name: str) -> Organisation:
    return lookup.by_name_or_id(session, Organisation, Organisation.name, name, "organisation")


def _infos(session: Session, orgs: Sequence[Organisation]) -> list[OrganisationInfo]:
    """What a list shows, in four queries whatever the number of organisations."""
    ids = [o.id for o in orgs]
    domains: dict[int, list[str]] = {i: [] for i in ids}
    for org_id, name in session.execute(
        select(SecurityDomainOrg.organisation_id, SecurityDomain.name)
        .join(SecurityDomain, SecurityDomain.id == SecurityDomainOrg.security_domain_id)
        .where(SecurityDomainOrg.organisation_id.in_(ids))
        .order_by(SecurityDomain.name)
    ):
        domains[org_id].append(name)
    admins: dict[int, list[str]] = {i: [] for i in ids}
    for org_id, username in session.execute(
        select(User.organisation_id, User.username)
        .join(UserMembership, UserMembership.user_id == User.id)
        .join(UserGroup, UserGroup.id == UserMembership.group_id)
        .where(User.organisation_id.in_(ids), UserGroup.role == C.Role.ORGADMIN.value)
        .order_by(User.username)
    ):
        admins[org_id].append(username)
    counts = dict(
        session.execute(
            select(User.organisation_id, func.count())
            .where(User.organisation_id.in_(ids), User.id >= 0)
            .group_by(User.organisation_id)
        ).all()
    )
    return [
        OrganisationInfo(
            id=o.id,
            name=o.name,
            details=o.details or "",
            allows_registration=o.allows_registration,
            domains=tuple(domains[o.id]),
            orgadmins=tuple(admins[o.id]),
            users=counts.get(o.id, 0),
        )
        for o in orgs
    ]


def _info(session: Session, org: Organisation) -> OrganisationInfo:
    session.flush()
    return _infos(session, [org])[0]


@guarded(Action.ORG_MANAGE)
def add_organisation(
    session: Session, actor: Actor, name: str, *, details: str = "", registration: bool = False
) -> OrganisationInfo:
    """A new organisation; with ``registration`` people may register themselves into it
    (an orgadmin or admin then approves each account)."""
    name = _check_name(name)
    details = _check_details(details)
    _check_registration(name, registration)
    if session.scalar(select(Organisation.id).where(Organisation.name == name)) is not None:
        raise ConflictError(f"an organisation named {name!r} exists")
    org = Organisation(name=name, details=details or None, allows_registration=registration)
    session.add(org)
    session.flush()
    auditing.note(org)
    return _info(session, org)


@guarded(Action.ORG_LIST)
def list_organisations(
    session: Session, actor: Actor, *, after: int | None = None, limit: int | None = None
) -> Page[OrganisationInfo]:
    """Organisations by id, in four queries a page (no limit: all of them)."""
    orgs = session.scalars(keyset(select(Organisation), Organisation.id, after, limit)).all()
    page = Page.of(orgs, limit, lambda o: o.id)
    return Page(_infos(session, page.items), page.next)


@guarded(Action.ORG_READ)
def get_organisation(session: Session, actor: Actor, name: str) -> OrganisationInfo:
    """Admins: any organisation; an orgadmin: their own."""
    org = _org(session, name)
    require(session, actor, Action.ORG_READ, org, f"organisation {org.name}")
    return _info(session, org)


@guarded(Action.ORG_MANAGE)
def rename_organisation(
    session: Session, actor: Actor, name: str, new_name: str
) -> OrganisationInfo:
    """New VMs of its people carry the new name in their identity; existing VMs keep
    theirs (it names their libvirt domain and files)."""
    new_name = _check_name(new_name)
    org = _org(session, name)
    if org.name == ADMIN_ORGANISATION:
        raise ValidationError(f"{ADMIN_ORGANISATION!r} (the cloud administrators') keeps its name")
    if org.name == new_name:
        raise ValidationError(f"the organisation is called {new_name!r} already")
    if session.scalar(select(Organisation.id).where(Organisation.name == new_name)) is not None:
        raise ConflictError(f"an organisation named {new_name!r} exists")
    auditing.note(detail=f"{org.name} -> {new_name}")
    org.name = new_name
    return _info(session, org)


@guarded(Action.ORG_MANAGE)
def set_organisation(
    session: Session,
    actor: Actor,
    name: str,
    *,
    registration: bool | None = None,
    details: str | None = None,
) -> OrganisationInfo:
    """Whether it takes self-registrations, and its description."""
    if registration is None and details is None:
        raise ValidationError("nothing to change: give --registration/--no-registration or details")
    org = _org(session, name)
    if registration is not None:
        _check_registration(org.name, registration)
        org.allows_registration = registration
        auditing.note(detail=f"registration {'on' if registration else 'off'}")
    if details is not None:
        org.details = _check_details(details) or None
    return _info(session, org)


@guarded(Action.ORG_MANAGE)
def set_domains(
    session: Session,
    actor: Actor,
    name: str,
    *,
    add: Sequence[str] = (),
    remove: Sequence[str] = (),
) -> OrganisationInfo:
    """Give the organisation security domains, or take them back. A domain visible to all
    is usable anyway; VMs already in a domain taken back keep their addresses."""
    if not add and not remove:
        raise ValidationError("nothing to change: give --add or --remove")
    both = set(add) & set(remove)
    if both:
        raise ValidationError(f"both added and removed: {', '.join(sorted(both))}")
    org = _org(session, name)
    have = set(
        session.scalars(
            select(SecurityDomainOrg.security_domain_id).where(
                SecurityDomainOrg.organisation_id == org.id
            )
        )
    )
    adding = [lookup.security_domain(session, d) for d in dict.fromkeys(add)]
    removing = [lookup.security_domain(session, d) for d in dict.fromkeys(remove)]
    for domain in adding:
        if domain.id in have:
            raise ConflictError(f"{org.name} has security domain {domain.name!r} already")
    for domain in removing:
        if domain.id not in have:
            raise NotFoundError(f"{org.name} was not given security domain {domain.name!r}")
    session.add_all(
        SecurityDomainOrg(security_domain_id=d.id, organisation_id=org.id) for d in adding
    )
    if removing:
        session.execute(
            delete(SecurityDomainOrg).where(
                SecurityDomainOrg.organisation_id == org.id,
                SecurityDomainOrg.security_domain_id.in_([d.id for d in removing]),
            )
        )
    changes = [f"+{d.name}" for d in adding] + [f"-{d.name}" for d in removing]
    auditing.note(org, detail=" ".join(changes))
    return _info(session, org)


@open_to_anyone("the names of the organisations taking self-registrations, for the form")
def registration_organisations(session: Session) -> list[str]:
    return accounts.registration_organisations(session)
