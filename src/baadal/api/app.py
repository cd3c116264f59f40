"""The ASGI application: :func:`create_app` builds it from the settings (nothing is
connected or read at import), with problem+json errors and a docs page that loads
nothing from the internet."""

from __future__ import annotations

import html
import logging
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException

from baadal import constants as C
from baadal.api import (
    audit_routes,
    cloud_routes,
    console_routes,
    host_routes,
    inventory_routes,
    me_routes,
    request_routes,
    task_routes,
    token_routes,
    user_routes,
    vm_routes,
)
from baadal.config import Settings, get_settings
from baadal.errors import (
    BaadalError,
    ConflictError,
    HostError,
    NotFoundError,
    PermissionDenied,
    ResourceExhausted,
    Throttled,
    Unauthenticated,
    ValidationError,
)
from baadal.web import portal

log = logging.getLogger(__name__)

PROBLEM = "application/problem+json"
#: the HTTP status of each kind of error, most specific first
STATUS_OF: tuple[tuple[type[BaadalError], int], ...] = (
    (Unauthenticated, 401),
    (Throttled, 429),
    (PermissionDenied, 403),
    (ValidationError, 422),
    (NotFoundError, 404),
    (ConflictError, 409),
    (ResourceExhausted, 409),
    (HostError, 502),
)
TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
}


def problem(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"type": "about:blank", "title": TITLES.get(status, "Error"), "status": status}
    return JSONResponse({**body, "detail": detail}, status, headers, media_type=PROBLEM)


def _baadal_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, BaadalError)
    status = next((code for kind, code in STATUS_OF if isinstance(exc, kind)), 400)
    headers = {}
    if isinstance(exc, Unauthenticated):
        headers["WWW-Authenticate"] = 'Bearer realm="baadal"'
    if isinstance(exc, Throttled):
        headers["Retry-After"] = str(exc.retry_after_s)
    return problem(status, str(exc), headers)


def _where(loc: tuple[Any, ...]) -> str:
    """'body.ram_mb' for pydantic's ('body', 'ram_mb')."""
    return ".".join(str(part) for part in loc) or "request"


def _invalid_request(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    detail = f"{_where(tuple(first.get('loc', ())))}: {first.get('msg', 'invalid')}{more}"
    return problem(422, " ".join(detail.split()))


def _http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    return problem(exc.status_code, str(exc.detail), dict(exc.headers or {}))


def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    """A bug: the traceback goes to the log, the client learns nothing of it."""
    # not inside an except block here: hand the exception to the log explicitly
    log.error("unexpected error in %s %s", request.method, request.url.path, exc_info=exc)
    return problem(500, f"internal error ({type(exc).__name__}); see the baadal log")


def _query_names(dependant: Dependant) -> set[str]:
    names = {param.alias for param in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names


async def _known_query(request: Request) -> None:
    """An unknown query parameter is a mistake (``?stauts=running`` would list every VM),
    refused like an unknown key in a body or the settings file; so is a repeated one.
    (``async``: it only reads the request, so it runs without a thread pool hop.)"""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        return
    # each route's, once: its dependencies are fixed once the app is built
    known_per_route: dict[str, frozenset[str]] = request.app.state.query_names
    known = known_per_route.get(route.unique_id)
    if known is None:
        known = known_per_route[route.unique_id] = frozenset(_query_names(route.dependant))
    query = request.query_params
    unknown = sorted(set(query) - known)
    if unknown:
        allowed = ", ".join(sorted(known)) or "none"
        raise ValidationError(f"query.{unknown[0]}: unknown parameter (known: {allowed})")
    if len(query) < len(query.multi_items()):  # no parameter takes a list: the last would win
        names = [name for name, _value in query.multi_items()]
        repeated = sorted({name for name in names if names.count(name) > 1})
        raise ValidationError(f"query.{repeated[0]}: given more than once")


def _docs_page(app: FastAPI) -> str:
    """Every operation with its parameters and statuses, as plain HTML: FastAPI's
    interactive pages load their scripts from a CDN, and this server may have no
    internet (nor should a browser fetch code from elsewhere for it)."""
    doc = app.openapi()
    parts = [
        "<!doctype html><meta charset=utf-8><title>Baadal API</title>",
        f"<h1>{html.escape(doc['info']['title'])} {html.escape(doc['info']['version'])}</h1>",
        f'<p>OpenAPI document: <a href="{C.API_PREFIX}/openapi.json">openapi.json</a>. '
        "Authenticate with <code>Authorization: Bearer TOKEN</code> "
        "(<code>baadal token create</code>).</p>",
    ]
    for path, operations in doc["paths"].items():
        for method, op in operations.items():
            params = ", ".join(p["name"] for p in op.get("parameters", []))
            statuses = ", ".join(sorted(op.get("responses", {})))
            parts.append(
                f"<h3><code>{method.upper()} {html.escape(path)}</code></h3>"
                f"<p>{html.escape(op.get('summary', ''))}</p>"
                f"<p>parameters: {html.escape(params) or '-'}; statuses: {statuses}</p>"
            )
    return "\n".join(parts)


def create_app(settings: Settings) -> FastAPI:
    """The API (under /api/v1) and the portal (under /) for ``settings``' database;
    each request opens its own transaction."""
    app = FastAPI(
        title="Baadal",
        version="1",
        description="Baadal private cloud: VMs, requests, tasks, hosts and the audit log.",
        openapi_url=f"{C.API_PREFIX}/openapi.json",
        docs_url=None,
        redoc_url=None,
        dependencies=[Depends(_known_query)],
    )
    app.state.settings = settings
    app.state.query_names = {}
    for router in (
        me_routes.router,
        vm_routes.router,
        console_routes.router,
        request_routes.router,
        task_routes.router,
        token_routes.router,
        host_routes.router,
        audit_routes.router,
        inventory_routes.router,
        user_routes.router,
        cloud_routes.router,
    ):
        app.include_router(router, prefix=C.API_PREFIX)
    app.add_exception_handler(BaadalError, _baadal_error)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)

    @app.get(f"{C.API_PREFIX}/docs", include_in_schema=False, response_class=HTMLResponse)
    def docs() -> str:
        return _docs_page(app)

    portal.install(app)
    return app


def app_from_settings() -> FastAPI:
    """The factory ``baadal serve`` names to uvicorn (by import string, which several
    worker processes need): each process reads the settings itself."""
    return create_app(get_settings())
