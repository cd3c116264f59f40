"""Accounts, quotas and organisations: self-registration (no token: anyone, into an
organisation that takes it), the accounts the caller may see, approval, roles and
blocking; quotas and usage; organisations and what they are given."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response

from baadal import constants as C
from baadal.api.callers import AfterQuery, CallerDep, errors
from baadal.api.schemas import (
    AccountList,
    AccountOut,
    LimitQuery,
    OrganisationChange,
    OrganisationCreate,
    OrganisationList,
    OrganisationOut,
    Problem,
    QuotaLineOut,
    QuotaOut,
    QuotaSet,
    Registration,
    RolesSet,
)
from baadal.config import Settings
from baadal.errors import ValidationError
from baadal.services import organisations, quotas, runtime, users
from baadal.services.organisations import OrganisationInfo
from baadal.services.quotas import QuotaReport
from baadal.services.users import Account

router = APIRouter()

UsernamePath = Annotated[str, Path(min_length=1, max_length=128, description="the user name")]
OrgPath = Annotated[str, Path(min_length=1, max_length=128, description="the organisation's name")]
NameQuery = Annotated[str | None, Query(min_length=1, max_length=128)]


def account_out(account: Account) -> AccountOut:
    return AccountOut(
        id=account.id,
        name=account.username,
        full_name=account.name,
        email=account.email,
        organisation=account.organisation,
        roles=[r.value for r in account.roles],
        state=account.state,
    )


# --- accounts ----------------------------------------------------------------------------


@router.post(
    "/users",
    tags=["users"],
    status_code=201,
    response_model=AccountOut,
    responses={
        **errors(400, 404, 409),
        429: {
            "model": Problem,
            "description": "too many registrations from the client's address: the "
            "Retry-After header says when to try again",
            "content": {"application/problem+json": {}},
        },
    },
    summary="register oneself into an organisation that takes registrations (no token); "
    "the account waits for approval; a client address registers a bounded number a window",
)
def register(request: Request, body: Registration, response: Response) -> AccountOut:
    settings: Settings = request.app.state.settings
    with runtime.transaction(settings) as session:
        account = users.register_self(
            session,
            settings,
            username=body.username,
            password=body.password,
            email=body.email,
            first_name=body.first_name,
            last_name=body.last_name,
            organisation=body.organisation,
            source=request.client.host if request.client else None,
        )
    response.headers["Location"] = f"{C.API_PREFIX}/users/{account.username}"
    return account_out(account)


@router.get(
    "/users",
    tags=["users"],
    response_model=AccountList,
    responses=errors(),
    summary="the accounts the caller may see (admins: all; orgadmins: their organisation's), by id",
)
def list_users(
    who: CallerDep, after: AfterQuery = None, limit: LimitQuery = C.API_PAGE_DEFAULT
) -> AccountList:
    with who.read_transaction() as session:
        page = users.list_accounts(session, who.actor, after=after, limit=limit)
        return AccountList(items=[account_out(a) for a in page.items], next=page.next)


@router.get(
    "/users/{username}",
    tags=["users"],
    response_model=AccountOut,
    responses=errors(404),
    summary="one account (admins: any; orgadmins: their organisation's; others: their own)",
)
def get_user(who: CallerDep, username: UsernamePath) -> AccountOut:
    with who.read_transaction() as session:
        return account_out(users.get_account(session, who.actor, username))


@router.post(
    "/users/{username}/approve",
    tags=["users"],
    response_model=AccountOut,
    responses=errors(404, 409),
    summary="let a pending registration log in (admins; orgadmins: their organisation's)",
)
def approve(who: CallerDep, username: UsernamePath) -> AccountOut:
    with who.transaction() as session:
        users.approve(session, who.actor, username)
        return account_out(users.get_account(session, who.actor, username))


@router.post(
    "/users/{username}/block",
    tags=["users"],
    response_model=AccountOut,
    responses=errors(404),
    summary="refuse the account's logins and tokens; its VMs are left alone (admins; "
    "orgadmins: their organisation's)",
)
def block(who: CallerDep, username: UsernamePath) -> AccountOut:
    with who.transaction() as session:
        users.set_blocked(session, who.actor, username, True)
        return account_out(users.get_account(session, who.actor, username))


@router.post(
    "/users/{username}/unblock",
    tags=["users"],
    response_model=AccountOut,
    responses=errors(404),
    summary="allow the account's logins again (admins; orgadmins: their organisation's)",
)
def unblock(who: CallerDep, username: UsernamePath) -> AccountOut:
    with who.transaction() as session:
        users.set_blocked(session, who.actor, username, False)
        return account_out(users.get_account(session, who.actor, username))


@router.post(
    "/users/{username}/roles",
    tags=["users"],
    response_model=AccountOut,
    responses=errors(400, 404),
    summary="make the account's roles exactly these; user is always kept (admins)",
)
def set_roles(who: CallerDep, username: UsernamePath, body: RolesSet) -> AccountOut:
    with who.transaction() as session:
        users.set_roles(session, who.actor, username, body.roles)
        return account_out(users.get_account(session, who.actor, username))


# --- quotas ------------------------------------------------------------------------------


def quota_out(report: QuotaReport) -> QuotaOut:
    return QuotaOut(
        whose=report.whose,
        lines=[
            QuotaLineOut(
                name=line.item.value, used=line.used, limit=line.limit, override=line.override
            )
            for line in report.lines
        ],
    )


@router.get(
    "/quotas",
    tags=["quotas"],
    response_model=QuotaOut,
    responses=errors(404),
    summary="usage and limits of a user (default: the caller) or of an organisation",
)
def show_quota(who: CallerDep, user: NameQuery = None, org: NameQuery = None) -> QuotaOut:
    with who.read_transaction() as session:
        return quota_out(quotas.show_quota(session, who.actor, who.settings, user=user, org=org))


@router.patch(
    "/quotas",
    tags=["quotas"],
    response_model=QuotaOut,
    responses=errors(400, 404),
    summary="set some limits of a user or an organisation, 0 = unlimited (admins)",
)
def set_quota(who: CallerDep, body: QuotaSet) -> QuotaOut:
    limits = {C.QuotaItem(item): value for item, value in body.limits.items()}
    with who.transaction() as session:
        quotas.set_quota(session, who.actor, user=body.user, org=body.org, limits=limits)
        report = quotas.show_quota(session, who.actor, who.settings, user=body.user, org=body.org)
        return quota_out(report)


# --- organisations -----------------------------------------------------------------------


def organisation_out(info: OrganisationInfo) -> OrganisationOut:
    return OrganisationOut(
        id=info.id,
        name=info.name,
        details=info.details,
        allows_registration=info.allows_registration,
        security_domains=list(info.domains),
        orgadmins=list(info.orgadmins),
        users=info.users,
    )


@router.get(
    "/organisations",
    tags=["organisations"],
    response_model=OrganisationList,
    responses=errors(),
    summary="the organisations, by id (admins)",
)
def list_organisations(
    who: CallerDep, after: AfterQuery = None, limit: LimitQuery = C.API_PAGE_DEFAULT
) -> OrganisationList:
    with who.read_transaction() as session:
        page = organisations.list_organisations(session, who.actor, after=after, limit=limit)
        return OrganisationList(items=[organisation_out(o) for o in page.items], next=page.next)


@router.get(
    "/organisations/{name}",
    tags=["organisations"],
    response_model=OrganisationOut,
    responses=errors(404),
    summary="one organisation (admins: any; an orgadmin: their own)",
)
def get_organisation(who: CallerDep, name: OrgPath) -> OrganisationOut:
    with who.read_transaction() as session:
        return organisation_out(organisations.get_organisation(session, who.actor, name))


@router.post(
    "/organisations",
    tags=["organisations"],
    status_code=201,
    response_model=OrganisationOut,
    responses=errors(400, 409),
    summary="a new organisation (admins)",
)
def add_organisation(
    who: CallerDep, body: OrganisationCreate, response: Response
) -> OrganisationOut:
    with who.transaction() as session:
        info = organisations.add_organisation(
            session, who.actor, body.name, details=body.details, registration=body.registration
        )
    response.headers["Location"] = f"{C.API_PREFIX}/organisations/{info.name}"
    return organisation_out(info)


@router.patch(
    "/organisations/{name}",
    tags=["organisations"],
    response_model=OrganisationOut,
    responses=errors(400, 404, 409),
    summary="rename an organisation, say whether it takes registrations, describe it, "
    "give it security domains or take them back; all or nothing (admins)",
)
def change_organisation(who: CallerDep, name: OrgPath, body: OrganisationChange) -> OrganisationOut:
    changes = (body.name, body.registration, body.details)
    domains = body.add_security_domains or body.remove_security_domains
    if all(change is None for change in changes) and not domains:
        raise ValidationError(
            "nothing to change: give name, registration, details or security domains"
        )
    with who.transaction() as session:
        info = organisations.get_organisation(session, who.actor, name)
        if body.registration is not None or body.details is not None:
            info = organisations.set_organisation(
                session, who.actor, info.name, registration=body.registration, details=body.details
            )
        if domains:
            info = organisations.set_domains(
                session,
                who.actor,
                info.name,
                add=body.add_security_domains,
                remove=body.remove_security_domains,
            )
        if body.name is not None:
            info = organisations.rename_organisation(session, who.actor, info.name, body.name)
        return organisation_out(info)
