"""The console through ``baadal serve``: ``POST /api/v1/vms/{id}/console`` makes the token,
the WebSocket route relays to a real websockify process (started as ``baadal serve``
starts it) whose token plugin redeems the token in the database, and a fake VNC server
stands in for the VM's console. A refused token never opens the browser's WebSocket."""

from __future__ import annotations

import json
import logging
import re
import socketserver
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select, update
from starlette.websockets import WebSocketDisconnect
from websockets.exceptions import InvalidHandshake
from websockets.sync.client import connect

from baadal import constants as C
from baadal.api.app import create_app
from baadal.cli.serve_command import websockify
from baadal.config import Settings
from baadal.db.models import VM, ConsoleToken, Host, User
from baadal.db.session import session_scope
from baadal.services import tokens
from baadal.services.policy import SYSTEM
from baadal.web import websockify_tokens
from tests.support.sshd import free_port
from tests.unit.test_console_tokens import (  # noqa: F401 - fixtures
    cloud_settings,
    fake_cloud,
    web,
)
from tests.unit.web_support import Portal, password_hash

pytestmark = pytest.mark.unit

GREETING = b"RFB 003.008\n"


class _FakeVnc(socketserver.BaseRequestHandler):
    """Greets like a VNC server, then echoes what it gets."""

    def handle(self) -> None:
        self.request.sendall(GREETING)
        while data := self.request.recv(4096):
            self.request.sendall(data)


@pytest.fixture
def vnc_server() -> Iterator[int]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _FakeVnc)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@dataclass
class Site:
    client: TestClient
    engine: Engine
    vm_id: int
    api_tokens: dict[str, str]

    def console(self, who: str = "stu") -> dict[str, str]:
        response = self.client.post(
            f"{C.API_PREFIX}/vms/{self.vm_id}/console", headers=self.auth(who)
        )
        assert response.status_code == 201, response.text
        return response.json()

    def auth(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_tokens[who]}"}


@pytest.fixture
def site(
    sqlite_engine: Engine,
    cloud_settings: Settings,  # noqa: F811 - the imported fixture
    web: int,  # noqa: F811 - the imported fixture
    vnc_server: int,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Site]:
    url = sqlite_engine.url.render_as_string(hide_password=False)
    monkeypatch.setenv("BAADAL_DATABASE__URL", url)  # websockify's process reads it
    cloud_settings.database.url = url
    cloud_settings.novnc.port = free_port()
    with session_scope(sqlite_engine) as s:  # the VM's console is the fake VNC server
        vm = s.get(VM, web)
        s.execute(update(Host).where(Host.id == vm.host_id).values(address="127.0.0.1"))
        vm.vnc_port = vnc_server
        api_tokens = {
            who: tokens.create_token(s, SYSTEM, username=who).token for who in ("stu", "eve")
        }
    app = create_app(cloud_settings)
    with websockify(cloud_settings), TestClient(app) as client:
        yield Site(client, sqlite_engine, web, api_tokens)


def test_the_console_opens_once_through_the_relay(site: Site) -> None:
    ticket = site.console()
    assert set(ticket) == {"vm_id", "token", "password", "path", "expires", "grant_expires"}
    assert ticket["path"] == f"{C.CONSOLE_WEBSOCKET_PATH}?token={ticket['token']}"
    assert len(ticket["password"]) == 8 and ticket["password"] not in ticket["path"]
    with site.client.websocket_connect(ticket["path"], headers=site.auth("stu")) as ws:
        assert ws.receive_bytes() == GREETING
        ws.send_bytes(b"\x01\x02")
        assert ws.receive_bytes() == b"\x01\x02"
    # the second use of the same token is refused before the WebSocket opens
    with (
        pytest.raises(WebSocketDisconnect) as refused,
        site.client.websocket_connect(ticket["path"], headers=site.auth("stu")),
    ):
        pass
    assert refused.value.code == 1008


def _refused(site: Site, path: str, headers: dict[str, str]) -> bool:
    return _refused_for(site.client, path, headers)


def test_bad_tokens_and_callers_are_refused_before_the_websocket_opens(site: Site) -> None:
    ticket = site.console()
    path, stu = ticket["path"], site.auth("stu")
    other_site = {**stu, "Origin": "https://elsewhere.example"}
    for where, headers in [
        (path, {}),  # nobody logged in
        (path, {"Authorization": "Bearer bdl_" + "x" * 43}),  # an invalid API token
        (path, site.auth("eve")),  # another user
        (path, other_site),  # another site's page
        (f"{C.CONSOLE_WEBSOCKET_PATH}?token={'A' * 43}", stu),  # unknown
        (f"{C.CONSOLE_WEBSOCKET_PATH}?token=short", stu),
        (C.CONSOLE_WEBSOCKET_PATH, stu),
    ]:
        assert _refused(site, where, headers), (where, headers)
    # none of those used the token up
    assert not _refused(site, path, {**stu, "Origin": "http://testserver"})

    expired = site.console()
    with session_scope(site.engine) as s:
        s.execute(update(ConsoleToken).values(expires=ConsoleToken.created))
    assert _refused(site, expired["path"], stu)


def test_websockify_refuses_a_bad_token_before_the_upgrade(
    site: Site,
    cloud_settings: Settings,  # noqa: F811 - the imported fixture
) -> None:
    """Straight to websockify (loopback): no 101, so no WebSocket, for a bad token."""
    ticket = site.console()
    with session_scope(site.engine) as s:
        stu_id = s.scalar(select(User.id).where(User.username == "stu"))
    base = f"ws://127.0.0.1:{cloud_settings.novnc.port}/websockify?token="
    for param in ("A" * 43, f"{stu_id}.{'A' * 43}", f"{stu_id + 1}.{ticket['token']}"):
        with pytest.raises((InvalidHandshake, OSError)):
            connect(base + param, open_timeout=10, proxy=None).close()
    with connect(base + websockify_tokens.param(stu_id, ticket["token"]), proxy=None) as ws:
        assert ws.recv(timeout=10) == GREETING


_TICKET = re.compile(r'<script type="application/json" id="console-ticket">(.*?)</script>')


def test_the_portal_console_page_opens_its_websocket_for_its_user_only(site: Site) -> None:
    with session_scope(site.engine) as s:
        s.execute(
            update(User).where(User.username.in_(["stu", "eve"])).values(password=password_hash())
        )
    portal = Portal(site.client.app, site.engine, Path("."))
    try:
        stu, eve = portal.login("stu"), portal.login("eve")
        path = f"/vms/{site.vm_id}/console"
        # a POST without the session's CSRF token, or by someone else, makes nothing
        assert stu.post(path).status_code == 403
        assert portal.post(eve, path).status_code == 403
        with session_scope(site.engine) as s:
            assert s.scalar(select(func.count()).select_from(ConsoleToken)) == 0
        page = portal.post(stu, path)
        assert page.status_code == 200 and page.headers["cache-control"] == "no-store"
        ticket = json.loads(_TICKET.search(page.text).group(1))
        assert len(ticket["password"]) == 8 and ticket["password"] not in ticket["path"]
        assert '<script type="module" src="/static/console.js">' in page.text
        # another session cannot use it (nor use it up); its own session can, once
        assert _refused_for(eve, ticket["path"])
        with stu.websocket_connect(ticket["path"]) as ws:
            assert ws.receive_bytes() == GREETING
        assert _refused_for(stu, ticket["path"])
    finally:
        for client in portal.clients:
            client.__exit__(None, None, None)


def _refused_for(client: TestClient, path: str, headers: dict[str, str] | None = None) -> bool:
    """True when the WebSocket is closed before it opens (the server answers 403)."""
    try:
        with client.websocket_connect(path, headers=dict(headers or {})):
            return False
    except WebSocketDisconnect:
        return True


def test_websockify_log_lines_never_show_a_token() -> None:
    token = "Ab" * 21 + "C"
    for message, args in [
        ("127.0.0.1: Token '%s' not found", (f"5.{token}",)),
        ("%s: Path: '%s'", ("127.0.0.1", f"/websockify?token=5.{token}")),
    ]:
        record = logging.LogRecord("websockify", logging.INFO, __file__, 1, message, args, None)
        assert websockify_tokens._hide_tokens(record)
        assert token not in record.getMessage() and "<token>" in record.getMessage()


def test_the_plugin_refuses_what_the_relay_would_never_send(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    handler = logging.NullHandler()
    monkeypatch.setattr(logging.getLogger(), "handlers", [handler])  # not pytest's own
    plugin = websockify_tokens.DatabaseTokens(None)
    assert websockify_tokens._hide_tokens in handler.filters
    for param in ("", "A" * 43, "x." + "A" * 43, "1." + "A" * 42, "1.." + "A" * 43, None):
        assert plugin.lookup(param) is None  # before any database is opened
