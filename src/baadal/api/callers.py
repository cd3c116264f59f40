"""Who is calling (their API token, or the portal's session cookie) and the errors each
route documents."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import hmac
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Annotated, Any, TypeVar

from anyio import to_thread
from fastapi import Depends, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from baadal import constants as C
from baadal.api.schemas import Accepted, Problem
from baadal.config import Settings
from baadal.errors import PermissionDenied, Unauthenticated
from baadal.services import runtime, tokens, web_sessions
from baadal.services.policy import Actor

T = TypeVar("T")
#: the methods that change nothing: their caller is checked in the route's transaction
_READS = frozenset({"GET", "HEAD"})

_bearer = HTTPBearer(
    auto_error=False,
    description="a personal API token: `baadal token create` prints one",
)

_MEANINGS = {
    400: "the body is not JSON, or the server's settings do not allow this (the message says why)",
    401: "no API token, or an invalid, expired or revoked one",
    403: "the caller may not do this (the message says what)",
    404: "no such object",
    409: "the object's state does not allow this now",
    422: "invalid input: nothing was changed",
    500: "a bug: details are in the server's log",
    502: "a host or another machine Baadal drives failed the command (the message says which)",
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


class Caller:
    """Who calls, checked against the database on every request, in the route's first
    transaction (one connection and one BEGIN for the check and the route's reads; a
    revoked token is refused at once). ``actor`` outside a transaction checks on its own."""

    def __init__(
        self, settings: Settings, token: str | None, portal: Callable[[], Actor] | None = None
    ) -> None:
        self.settings = settings
        self._token = token
        #: the portal's session check (its own transactions: a refusal ends the session)
        self._portal = portal
        self._actor: Actor | None = None
        self._stale_token: int | None = None

    @property
    def actor(self) -> Actor:
        if self._actor is None:
            with self.read_transaction():
                pass
        assert self._actor is not None
        return self._actor

    def _check_portal(self) -> None:
        if self._actor is None and self._portal is not None:
            self._actor = self._portal()

    def _check_token(self, session: Session) -> None:
        if self._actor is not None or self._token is None:
            return
        holder = tokens.token_holder(session, self._token)
        self._actor = holder.actor
        if holder.stale:
            self._stale_token = holder.token_id

    def _record_use(self, session: Session | None = None) -> None:
        """The token's last_used, at most once a minute: in the route's session when it
        may write, else in a short one of its own after the reads."""
        token_id, self._stale_token = self._stale_token, None
        if token_id is None:
            return
        if session is not None:
            tokens.record_use(session, token_id)
            return
        with runtime.transaction(self.settings) as own:
            tokens.record_use(own, token_id)

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """One transaction for the route's service call (rolled back when it raises)."""
        self._check_portal()  # in its own read, before the route's write lock
        with runtime.transaction(self.settings) as session:
            self._check_token(session)
            self._record_use(session)
            yield session

    @contextmanager
    def read_transaction(self) -> Iterator[Session]:
        """For routes that only read: they never make a write wait."""
        self._check_portal()
        try:
            with self._reading() as session:
                yield session
        finally:
            self._record_use()

    @contextmanager
    def _reading(self) -> Iterator[Session]:
        with runtime.read_transaction(self.settings) as session:
            self._check_token(session)
            yield session

    async def read(self, reads: Callable[[Session], T]) -> T:
        """``reads`` in a read transaction. A token's read of SQLite runs on the event
        loop: it is a millisecond of CPU that never waits for a lock, and handing it to
        a thread cost a third more (``bench/api.py``); the token's last use, a write,
        is recorded on a thread. Anything else runs on one of a few reading threads:
        spread over the thread pool's forty, reads contend for the interpreter's lock;
        handed over by asyncio rather than anyio, a PostgreSQL page cost the server a
        tenth less CPU (``bench/api.py``)."""
        if self._portal is None and runtime.reads_are_local(self.settings):
            try:
                with self._reading() as session:
                    return reads(session)
            finally:
                if self._stale_token is not None:
                    await to_thread.run_sync(self._record_use)

        def run() -> T:
            with self.read_transaction() as session:
                return reads(session)

        context = contextvars.copy_context()  # as the caller's, and nothing left behind
        return await asyncio.get_running_loop().run_in_executor(
            _reading_threads(), context.run, run
        )

    def engine(self) -> Engine:
        """For the services that open their own transactions (a VNC grant)."""
        return runtime.checked_engine(self.settings)


@functools.cache
def _reading_threads() -> ThreadPoolExecutor:
    """This process's reading threads (see :meth:`Caller.read`), made at the first read
    (in a server's worker process, not before it starts)."""
    return ThreadPoolExecutor(C.API_READ_THREADS, thread_name_prefix="baadal-read")


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


async def _caller(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Caller:
    """A Bearer token, else the portal's session cookie. A read's is checked when the
    route opens its transaction (``async``: no thread pool hop, no transaction of its
    own); a change's at once, so a body is looked at only for a valid caller."""
    settings: Settings = request.app.state.settings
    if credentials is not None:
        caller = Caller(settings, credentials.credentials)
    elif cookie := request.cookies.get(C.WEB_SESSION_COOKIE):
        caller = Caller(settings, None, lambda: _cookie_actor(request, settings, cookie))
    else:
        raise Unauthenticated("an API token is needed: Authorization: Bearer <token>")
    if request.method not in _READS:
        await run_in_threadpool(lambda: caller.actor)
    return caller


CallerDep = Annotated[Caller, Depends(_caller)]
#: where a newest-first list's page starts: the previous page's ``next``
BeforeQuery = Annotated[
    int | None, Query(ge=1, le=C.ROW_ID_MAX, description="the previous page's next")
]
#: where an oldest-first list's page starts: the previous page's ``next``
AfterQuery = Annotated[
    int | None, Query(ge=0, le=C.ROW_ID_MAX, description="the previous page's next")
]


def accepted(task_id: int, response: Response) -> Accepted:
    """A 202 answer for queued work: the task's id, and where to poll it."""
    response.headers["Location"] = f"{C.API_PREFIX}/tasks/{task_id}"
    return Accepted(task_id=task_id)
