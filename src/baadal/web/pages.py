"""What every portal page shares: the templates, who is visiting (their session), the
CSRF check every POST meets, one-line messages carried to the next page, redirects."""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, unquote

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from baadal import constants as C
from baadal.config import Settings
from baadal.errors import (
    BaadalError,
    ConflictError,
    NoMeasurements,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    ValidationError,
)
from baadal.services import runtime, web_sessions
from baadal.services.policy import Actor

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=str(HERE / "templates"))


def status_name(status: int) -> str:
    """'running', 'in queue' for a VM's stored status."""
    try:
        return C.VMStatus(status).name.lower().replace("_", " ")
    except ValueError:
        return "unknown"


def task_status(status: int) -> str:
    try:
        return C.TaskStatus(status).name.lower().replace("_", " ")
    except ValueError:
        return "unknown"


def snapshot_kind(kind: int) -> str:
    try:
        return C.SnapshotType(kind).name.lower()
    except ValueError:
        return "unknown"


templates.env.globals.update(
    C=C,
    task_status=task_status,
    snapshot_kind=snapshot_kind,
    csrf_field=C.WEB_CSRF_FIELD,
    csrf_header=C.WEB_CSRF_HEADER,
    status_name=status_name,
)

#: what a graph's <img> shows for a host or VM not measured yet
NO_MEASUREMENTS_IMAGE = HERE / "static" / "no-data.svg"


def graph_response(draw: Callable[[], Path], cache_control: str) -> Response:
    """A usage graph's PNG, or the "no measurements yet" picture for a host or VM the
    collector has not measured yet (an <img> would show its alt text as if broken)."""
    try:
        return FileResponse(
            draw(), media_type="image/png", headers={"Cache-Control": cache_control}
        )
    except NoMeasurements:
        return FileResponse(
            NO_MEASUREMENTS_IMAGE, media_type="image/svg+xml", headers={"Cache-Control": "no-store"}
        )


BAD_CSRF = "the form's security token is missing or wrong: reload the page and try again"
#: a message longer than this is cut (it travels in a cookie)
FLASH_MAX = 300
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: what a page may load and who may frame it: this site only (nothing from elsewhere,
#: no inline script; another site cannot frame a page to trick clicks on its buttons)
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'self'"
    ),
    "X-Frame-Options": "SAMEORIGIN",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


@dataclass(frozen=True)
class Visitor:
    """A logged-in person at the portal, with their session's CSRF token."""

    actor: Actor
    csrf: str
    settings: Settings

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        with runtime.transaction(self.settings) as session:
            yield session

    def has(self, role: C.Role) -> bool:
        return self.actor.has(role)


def settings_of(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def client_address(request: Request) -> str | None:
    """The address failed logins are counted against (uvicorn puts a trusted proxy's
    X-Forwarded-For here)."""
    return request.client.host if request.client else None


def tokens_match(given: object, expected: str) -> bool:
    """In constant time; any text (compare_digest refuses non-ASCII str, so bytes)."""
    return (
        isinstance(given, str)
        and bool(given)
        and hmac.compare_digest(given.encode(), expected.encode())
    )


async def _sent_token(request: Request) -> object:
    """The CSRF token of a POST: the header (HTMX, scripts) or the form's hidden field."""
    header = request.headers.get(C.WEB_CSRF_HEADER)
    if header is not None:
        return header
    form = await request.form()
    return form.get(C.WEB_CSRF_FIELD)


def _identify(settings: Settings, cookie: str) -> web_sessions.WebIdentity:
    return web_sessions.identify(runtime.checked_engine(settings), settings, cookie)


async def _visitor(request: Request) -> Visitor:
    """The session's person; every unsafe method must show the session's CSRF token,
    checked before the route runs (a refusal changes nothing)."""
    settings = settings_of(request)
    cookie = request.cookies.get(C.WEB_SESSION_COOKIE)
    if not cookie:
        raise Unauthenticated(web_sessions.ENDED)
    identity = await run_in_threadpool(_identify, settings, cookie)
    if request.method not in SAFE_METHODS and not tokens_match(
        await _sent_token(request), identity.csrf
    ):
        raise PermissionDenied(BAD_CSRF)
    return Visitor(identity.actor, identity.csrf, settings)


VisitorDep = Annotated[Visitor, Depends(_visitor)]


async def visitor_or_none(request: Request) -> Visitor | None:
    """Who is visiting, if anyone (an error page keeps their navigation); never raises."""
    cookie = request.cookies.get(C.WEB_SESSION_COOKIE)
    if not cookie:
        return None
    settings = settings_of(request)
    try:
        identity = await run_in_threadpool(_identify, settings, cookie)
    except (BaadalError, SQLAlchemyError):  # the error being shown may be the database's
        return None
    return Visitor(identity.actor, identity.csrf, settings)


def form_token(request: Request) -> str:
    """The anonymous forms' (login, registration) CSRF token: the cookie's, or a new one
    that :func:`render` sets (double submit: a forged form cannot know it)."""
    return request.cookies.get(C.WEB_FORM_COOKIE) or secrets.token_urlsafe(C.WEB_SESSION_BYTES)


async def check_form_token(request: Request) -> None:
    cookie = request.cookies.get(C.WEB_FORM_COOKIE)
    if cookie is None or not tokens_match(await _sent_token(request), cookie):
        raise PermissionDenied(BAD_CSRF)


def secure(request: Request) -> bool:
    """Cookies are Secure when the portal is reached over TLS."""
    return request.url.scheme == "https" or settings_of(request).web.public_url.startswith("https:")


def set_cookie(
    request: Request, response: Response, name: str, value: str, max_age: int | None = None
) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        httponly=True,
        samesite="lax",
        secure=secure(request),
        path="/",
    )


def flash(request: Request, response: Response, message: str, *, error: bool = False) -> None:
    """One line for the next page the browser shows."""
    line = " ".join(message.split())[:FLASH_MAX]
    set_cookie(request, response, C.WEB_FLASH_COOKIE, quote(("!" if error else ":") + line))


def redirect(request: Request, to: str, message: str = "", *, error: bool = False) -> Response:
    """After a POST: 303 to a page (which then shows ``message``)."""
    response = RedirectResponse(to, status_code=303)
    if message:
        flash(request, response, message, error=error)
    return response


def _taken_flash(request: Request) -> tuple[str, bool] | None:
    raw = request.cookies.get(C.WEB_FLASH_COOKIE)
    if not raw:
        return None
    text = unquote(raw)
    return text[1:][:FLASH_MAX], text.startswith("!")


def render(
    request: Request,
    template: str,
    visitor: Visitor | None = None,
    status: int = 200,
    **context: Any,
) -> HTMLResponse:
    """A page (or an HTMX fragment) with the visitor, their CSRF token and the message
    left for it; the message is then cleared."""
    taken = _taken_flash(request)
    token = visitor.csrf if visitor else form_token(request)
    response = templates.TemplateResponse(
        request,
        template,
        {
            "visitor": visitor,
            "actor": visitor.actor if visitor else None,
            "csrf": token,
            "flash": taken,
            "Role": C.Role,
            **context,
        },
        status_code=status,
    )
    response.headers.update(PAGE_HEADERS)
    if taken is not None:
        response.delete_cookie(C.WEB_FLASH_COOKIE, path="/")
    if visitor is None and request.cookies.get(C.WEB_FORM_COOKIE) != token:
        set_cookie(request, response, C.WEB_FORM_COOKIE, token)
    return response


def local_path(target: str | None, default: str = "/") -> str:
    """A redirect target from a form or query: only a path on this site (never
    ``//elsewhere`` or ``https://elsewhere``)."""
    if (
        not target
        or not target.startswith("/")
        or target.startswith("//")
        or "\\" in target
        or any(ord(ch) < 0x20 for ch in target)
        or len(target) > 512
    ):
        return default
    return target


#: the mistakes a person corrects on the page they came from (refusals are pages)
MISTAKES = (ValidationError, ConflictError, ResourceExhausted)


def perform(
    request: Request, visitor: Visitor, back: str, work: Callable[[Session], str]
) -> Response:
    """Run ``work`` in one transaction and go back to ``back`` saying what it did, or
    what was wrong (nothing changed then)."""

    def in_one_transaction() -> str:
        with visitor.transaction() as session:
            return work(session)

    return perform_alone(request, visitor, back, in_one_transaction)


def perform_alone(
    request: Request, visitor: Visitor, back: str, work: Callable[[], str]
) -> Response:
    """:func:`perform` for services that open their own transactions (a host's power, an
    orphan domain): they talk to hosts, which no transaction of ours may wait for."""
    try:
        said = work()
    except MISTAKES as exc:
        return redirect(request, back, str(exc), error=True)
    return redirect(request, back, said)


def optional_int(value: str, what: str) -> int | None:
    """A number from a select that may be left at 'unchanged' (empty)."""
    if not value.strip():
        return None
    if not value.strip().isdigit():
        raise ValidationError(f"{what} must be a whole number")
    return int(value)
