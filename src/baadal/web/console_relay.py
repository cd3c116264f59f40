"""The console's WebSocket on the portal's own origin: ``/console/websockify?token=T``.

The browser talks only to ``baadal serve``. This route authenticates the caller, then
opens the upstream WebSocket to the local websockify process (loopback) with the caller's
user id and the token; websockify's token plugin redeems the token in the database. Only
when websockify accepts is the browser's handshake accepted, so a bad, used, expired or
someone else's token is answered 403 and the browser's WebSocket never opens. Then
frames are relayed both ways until either side closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from urllib.parse import urlencode, urlsplit

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.websockets import WebSocket, WebSocketDisconnect
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, WebSocketException

from baadal import constants as C
from baadal.config import Settings
from baadal.errors import BaadalError
from baadal.services import runtime, tokens, web_sessions
from baadal.web import websockify_tokens

log = logging.getLogger("baadal")

_TOKEN_RE = re.compile(C.CONSOLE_TOKEN_RE)
#: policy violation: what a refused handshake is closed with (the server answers 403)
_REFUSED = 1008


def _same_origin(websocket: WebSocket) -> bool:
    """A browser names the page's origin: it must be this server (no other site may
    drive a console with the user's cookies). Non-browser clients send no Origin."""
    origin = websocket.headers.get("origin")
    if origin is None:
        return True
    return urlsplit(origin).netloc.lower() == websocket.headers.get("host", "").lower()


def _bearer_user(settings: Settings, authorization: str) -> int | None:
    scheme, _, credentials = authorization.partition(" ")
    if scheme.lower() != "bearer":
        return None
    try:
        with runtime.read_transaction(settings) as session:
            return tokens.token_holder(session, credentials.strip()).actor.user_id
    except BaadalError:
        return None


def _session_user(settings: Settings, cookie: str) -> int | None:
    try:
        return web_sessions.identify(
            runtime.checked_engine(settings), settings, cookie
        ).actor.user_id
    except BaadalError:
        return None


async def _caller_id(websocket: WebSocket, settings: Settings) -> int | None:
    """The authenticated user: an API token (``Authorization: Bearer``), else the
    portal's session cookie (the console page's WebSocket); None for neither. A
    WebSocket handshake is a GET, so no CSRF token: the Origin check and the one-time
    token stand in for it."""
    authorization = websocket.headers.get("authorization")
    if authorization:
        return await run_in_threadpool(_bearer_user, settings, authorization)
    cookie = websocket.cookies.get(C.WEB_SESSION_COOKIE)
    if cookie:
        return await run_in_threadpool(_session_user, settings, cookie)
    return None


async def _open_upstream(
    settings: Settings, user_id: int, token: str, subprotocols: list[str]
) -> ClientConnection | None:
    """The WebSocket to websockify, or None when it refuses (or is not there)."""
    query = urlencode({"token": websockify_tokens.param(user_id, token)})
    url = f"ws://127.0.0.1:{settings.novnc.port}/websockify?{query}"
    try:
        return await connect(
            url,
            subprotocols=subprotocols or None,  # type: ignore[arg-type]
            open_timeout=C.WEBSOCKIFY_HANDSHAKE_S,
            max_size=None,
            compression=None,
            proxy=None,
        )
    except (OSError, TimeoutError, WebSocketException) as exc:
        log.info("console connection refused by websockify (%s)", type(exc).__name__)
        return None


async def _browser_to_vnc(websocket: WebSocket, upstream: ClientConnection) -> None:
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        data = message.get("bytes")
        await upstream.send(data if data is not None else message.get("text", ""))


async def _vnc_to_browser(websocket: WebSocket, upstream: ClientConnection) -> None:
    async for data in upstream:
        if isinstance(data, bytes):
            await websocket.send_bytes(data)
        else:
            await websocket.send_text(data)


async def console_websocket(websocket: WebSocket) -> None:
    """Relay the browser's console WebSocket to websockify once it accepted the token."""
    settings: Settings = websocket.app.state.settings
    token = websocket.query_params.get("token", "")
    user_id = await _caller_id(websocket, settings)
    if user_id is None or not _TOKEN_RE.fullmatch(token) or not _same_origin(websocket):
        await websocket.close(_REFUSED)
        return
    upstream = await _open_upstream(settings, user_id, token, websocket.scope["subprotocols"])
    if upstream is None:
        await websocket.close(_REFUSED)
        return
    async with upstream:
        await websocket.accept(subprotocol=upstream.subprotocol)
        relays = [
            asyncio.create_task(_browser_to_vnc(websocket, upstream)),
            asyncio.create_task(_vnc_to_browser(websocket, upstream)),
        ]
        _done, pending = await asyncio.wait(relays, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        for task in relays:
            with contextlib.suppress(
                asyncio.CancelledError, ConnectionClosed, WebSocketDisconnect, RuntimeError
            ):
                await task
    with contextlib.suppress(RuntimeError, WebSocketDisconnect):  # the browser may be gone
        await websocket.close()


def install(app: Starlette) -> None:
    """Add the console's WebSocket route (a plain Starlette route: the API's dependencies,
    its query checks, are for HTTP calls)."""
    app.router.add_websocket_route(C.CONSOLE_WEBSOCKET_PATH, console_websocket)
