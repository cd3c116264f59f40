"""The portal over HTTP against the authorization world (tests/unit/test_authorization):
every account has the password ``PASSWORD``; :meth:`Portal.login` gives a client with
that person's session cookie."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from httpx import Response
from sqlalchemy import Engine, update

from baadal import constants as C
from baadal.api.app import create_app
from baadal.auth.accounts import hash_password
from baadal.config import Settings
from baadal.db.models import User
from baadal.db.session import session_scope
from tests.unit.test_authorization import fingerprint

PASSWORD = "correct horse battery"
_HASH: list[str] = []
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def password_hash() -> str:
    """One argon2 hash for every account of every test (hashing costs a quarter second)."""
    if not _HASH:
        _HASH.append(hash_password(PASSWORD))
    return _HASH[0]


def csrf_of(page: Response) -> str:
    found = _CSRF.search(page.text)
    assert found, page.text[:500]
    return found.group(1)


@dataclass
class Portal:
    app: FastAPI
    engine: Engine
    root: Path
    clients: list[TestClient] = field(default_factory=list)

    def client(self, address: str = "testclient") -> TestClient:
        """A browser of its own (its own cookies), from ``address``."""
        client = TestClient(
            self.app, raise_server_exceptions=False, follow_redirects=False, client=(address, 50000)
        )
        client.__enter__()
        self.clients.append(client)
        return client

    def login_page(self, client: TestClient) -> str:
        page = client.get("/login")
        assert page.status_code == 200
        return csrf_of(page)

    def try_login(self, client: TestClient, who: str, password: str = PASSWORD) -> Response:
        token = self.login_page(client)
        return client.post(
            "/login", data={"username": who, "password": password, C.WEB_CSRF_FIELD: token}
        )

    def login(self, who: str, address: str = "testclient") -> TestClient:
        client = self.client(address)
        answer = self.try_login(client, who)
        assert answer.status_code == 303, answer.text
        return client

    def csrf(self, client: TestClient, path: str = "/account") -> str:
        return csrf_of(client.get(path))

    def post(self, client: TestClient, path: str, data: dict | None = None) -> Response:
        """A form POST with the session's CSRF token."""
        return client.post(path, data={**(data or {}), C.WEB_CSRF_FIELD: self.csrf(client)})

    def state(self) -> str:
        return fingerprint(self.engine, self.root)

    def flash(self, response: Response) -> str:
        from urllib.parse import unquote

        return unquote(response.cookies.get(C.WEB_FLASH_COOKIE, ""))[1:]


def make_portal(world_engine: tuple[Engine, Path], settings: Settings) -> Iterator[Portal]:
    engine, root = world_engine
    settings.database.url = engine.url.render_as_string(hide_password=False)
    with session_scope(engine) as s:
        s.execute(update(User).where(User.id != C.SYSTEM_USER_ID).values(password=password_hash()))
    portal = Portal(create_app(settings), engine, root)
    yield portal
    for client in portal.clients:
        client.__exit__(None, None, None)


@pytest.fixture(name="portal")
def portal_fixture(world_engine: tuple[Engine, Path], settings: Settings) -> Iterator[Portal]:
    yield from make_portal(world_engine, settings)
