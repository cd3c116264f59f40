"""The portal on the API's application: its routers, its static files (HTMX and one
style sheet, vendored: nothing is loaded from elsewhere), and errors as pages.

The API's error handlers stay in charge under the API prefix; elsewhere their answer
is turned into a page with the same status and the same one-line message, and a
request without a (live) session goes to the login page.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles

from baadal import constants as C
from baadal.web import (
    account_pages,
    admin_pages,
    console_pages,
    console_relay,
    pages,
    review_pages,
    vm_pages,
)

Handler = Callable[[Request, Exception], Any]
#: every router of the portal (a test walks their POST routes for the CSRF check)
ROUTERS = (
    account_pages.router,
    vm_pages.router,
    review_pages.router,
    console_pages.router,
    admin_pages.router,
)


def _detail(response: Response) -> str:
    try:
        return str(json.loads(bytes(response.body))["detail"])
    except (ValueError, KeyError, TypeError):
        return "the request failed"


def _as_page(api_handler: Handler) -> Callable[[Request, Exception], Awaitable[Response]]:
    async def handle(request: Request, exc: Exception) -> Response:
        answer = api_handler(request, exc)
        if isinstance(answer, Awaitable):
            answer = await answer
        if request.url.path.startswith(C.API_PREFIX + "/") or request.url.path == C.API_PREFIX:
            return answer
        status, detail = answer.status_code, _detail(answer)
        if status == 401:
            if request.headers.get("HX-Request"):  # a fragment cannot show a login page
                return Response(status_code=401, headers={"HX-Redirect": "/login"})
            back = request.url.path if request.method == "GET" else "/"
            return pages.redirect(request, f"/login?next={quote(back)}", detail, error=True)
        visitor = await pages.visitor_or_none(request)
        return pages.render(request, "error.html", visitor, status, message=detail)

    return handle


def install(app: FastAPI) -> None:
    """Add the portal's pages under ``/`` (after the API's routes and handlers)."""
    for router in ROUTERS:
        app.include_router(router)
    console_relay.install(app)
    app.mount("/static", StaticFiles(packages=[("baadal.web", "static")]), name="static")
    for kind, handler in list(app.exception_handlers.items()):
        app.add_exception_handler(kind, _as_page(handler))
