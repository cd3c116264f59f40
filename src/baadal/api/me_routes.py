"""``GET /me``: who the token belongs to (what a script checks first)."""

from __future__ import annotations

from fastapi import APIRouter

from baadal.api.callers import CallerDep, errors
from baadal.api.schemas import Me

router = APIRouter(tags=["me"])


@router.get("/me", response_model=Me, responses=errors(), summary="the caller's account")
def me(who: CallerDep) -> Me:
    actor = who.actor
    return Me(
        id=actor.user_id,
        username=actor.username,
        roles=sorted(role.value for role in actor.roles),
        organisation_id=actor.organisation_id,
    )
