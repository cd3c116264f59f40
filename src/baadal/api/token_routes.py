"""The caller's API tokens (admins: anyone's): make one (shown once), list, revoke."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from baadal import constants as C
from baadal.api.callers import AfterQuery, CallerDep, errors
from baadal.api.schemas import NewTokenOut, TokenCreate, TokenList, TokenOut
from baadal.services import tokens
from baadal.services.tokens import TokenInfo

router = APIRouter(tags=["tokens"])


def token_out(info: TokenInfo) -> TokenOut:
    return TokenOut(
        id=info.id,
        username=info.username,
        name=info.name,
        prefix=info.prefix,
        created=info.created,
        expires=info.expires,
        last_used=info.last_used,
        revoked=info.revoked,
        active=info.active,
    )


@router.get("/tokens", response_model=TokenList, responses=errors(404), summary="list API tokens")
def list_tokens(
    who: CallerDep,
    username: Annotated[str | None, Query(min_length=1, max_length=128)] = None,
    limit: Annotated[int, Query(ge=1, le=C.API_PAGE_MAX)] = C.API_PAGE_DEFAULT,
    after: AfterQuery = None,
) -> TokenList:
    with who.read_transaction() as session:
        page = tokens.list_tokens(session, who.actor, username=username, limit=limit, after=after)
    return TokenList(items=[token_out(info) for info in page.items], next=page.next)


@router.post(
    "/tokens",
    status_code=201,
    response_model=NewTokenOut,
    responses=errors(400, 404),
    summary="make an API token (the answer is the only time it is shown)",
)
def create_token(who: CallerDep, body: TokenCreate) -> NewTokenOut:
    with who.transaction() as session:
        new = tokens.create_token(
            session,
            who.actor,
            username=body.username,
            name=body.name,
            expires_days=body.expires_days,
        )
    return NewTokenOut(**token_out(new.info).model_dump(), token=new.token)


@router.post(
    "/tokens/{token_id}/revoke",
    response_model=TokenOut,
    responses=errors(404),
    summary="revoke an API token (it stops working at once)",
)
def revoke_token(who: CallerDep, token_id: Annotated[int, Path(ge=1, le=C.ROW_ID_MAX)]) -> TokenOut:
    with who.transaction() as session:
        return token_out(tokens.revoke_token(session, who.actor, token_id))
