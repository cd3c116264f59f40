"""The audit log: the newest entries the caller may see (admins: all; orgadmins: their
organisation's; others: their own), filtered as ``baadal audit`` filters them."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from baadal import constants as C
from baadal.api.callers import BeforeQuery, CallerDep, errors
from baadal.api.schemas import AuditEntryOut, AuditList
from baadal.services import audit

router = APIRouter(tags=["audit"])


@router.get("/audit", response_model=AuditList, responses=errors(), summary="the audit log")
def list_audit(
    who: CallerDep,
    user: Annotated[
        str | None, Query(min_length=1, max_length=128, description="who acted")
    ] = None,
    vm: Annotated[str | None, Query(min_length=1, max_length=128, description="a VM")] = None,
    since: Annotated[
        str | None, Query(min_length=1, max_length=40, description="an ISO date or time")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=C.AUDIT_LIST_MAX)] = C.AUDIT_LIST_DEFAULT,
    before: BeforeQuery = None,
) -> AuditList:
    with who.read_transaction() as session:
        page = audit.list_entries(
            session, who.actor, user=user, vm=vm, since=since, limit=limit, before=before
        )
    return AuditList(
        next=page.next,
        items=[
            AuditEntryOut(
                id=e.id,
                at=e.at,
                actor=e.actor_name,
                function=e.function,
                action=e.action,
                target_type=e.target_type,
                target_id=e.target_id,
                target_name=e.target_name,
                detail=e.detail,
                outcome=e.outcome,
            )
            for e in page.items
        ],
    )
