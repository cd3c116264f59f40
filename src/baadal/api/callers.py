"""Who is calling (their API token, or the portal's session cookie) and the errors each
route documents."""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from baadal import constants as C
from baadal.api.schemas import Accepted, Problem
from baadal.config import Settings
from baadal.errors import PermissionDenied, Unauthenticated
from baadal.services import runtime, tokens, web_sessions
from baadal.services.policy import Actor

_bearer = HTTPBearer(
    auto_error=False,
    description="a personal API token: `baadal token create` prints one",
)

_MEANINGS = {
    400: "the body is not JSON, or a host failed the command (the message says which)",
    401: "no API token, or an invalid, expired or revoked one",
    403: "the caller may not do this (the message says what)",
    404: "no such object",
    409: "the object's state does not allow this now",
    422: "invalid input: nothing was changed",
    500: "a bug: details are in the server's log",
}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI ``responses`` of the errors a route may give (401, 403, 422 and 500
    always: every route needs a token, meets the policy and may meet a bug)."""
    return {
        code: {
            "model": Problem,
            "description": _MEANINGS[code],
            "content": {"application/problem+json": {}},
        }
        for code in sorted({401, 403, 422, 500, *statuses})
    }


@dataclass(frozen=True)
class Caller:
    actor: Actor
    settings: Settings

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """One transaction for the route's service call (rolled back when it raises)."""
        with runtime.transaction(self.settings) as session:
            yield session

    def engine(self) -> Engine:
        """For the services that open their own transactions (a VNC grant)."""
        return runtime.checked_engine(self.settings)


def _cookie_actor(request: Request, settings: Settings, cookie: str) -> Actor:
    """The portal's session (its pages call the API from the browser): a change needs
    the session's CSRF token in a header, which another site's page cannot read."""
    identity = web_sessions.identify(runtime.checked_engine(settings), settings, cookie)
    if request.method not in ("GET", "HEAD", "OPTIONS"):
        sent = request.headers.get(C.WEB_CSRF_HEADER, "")
        if not sent or not hmac.compare_digest(sent.encode(), identity.csrf.encode()):
            raise PermissionDenied(
                f"a call with the portal's session cookie needs its {C.WEB_CSRF_HEADER} header"
            )
    return identity.actor


def _caller(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Caller:
    """A Bearer token, else the portal's session cookie."""
    settings: Settings = request.app.state.settings
    if credentials is not None:
        with runtime.transaction(settings) as session:
            return Caller(tokens.actor_for_token(session, credentials.credentials), settings)
    cookie = request.cookies.get(C.WEB_SESSION_COOKIE)
    if cookie:
        return Caller(_cookie_actor(request, settings, cookie), settings)
    raise Unauthenticated("an API token is needed: Authorization: Bearer <token>")


CallerDep = Annotated[Caller, Depends(_caller)]


def accepted(task_id: int, response: Response) -> Accepted:
    """A 202 answer for queued work: the task's id, and where to poll it."""
    response.headers["Location"] = f"{C.API_PREFIX}/tasks/{task_id}"
    return Accepted(task_id=task_id)
