"""Every POST route of the portal refuses a missing or wrong CSRF token: 403, one line,
nothing changed, even for an admin who could otherwise do it. The routes are found by
walking the portal's routers, so a new form cannot be forgotten."""

from __future__ import annotations

import re

import pytest
from fastapi.routing import APIRoute
from sqlalchemy import select

from baadal import constants as C
from baadal.db.models import VM, ApiToken, Host, RequestQueue, Snapshot, Task, Template
from baadal.db.session import session_scope
from baadal.web.portal import ROUTERS
from tests.unit.test_authorization import world_engine, world_template  # noqa: F401
from tests.unit.web_support import PASSWORD, Portal, portal_fixture  # noqa: F401

pytestmark = pytest.mark.unit

#: routes before a login: a double-submit token (cookie and field) guards them
ANONYMOUS = {"/login", "/register"}


def _post_paths() -> list[str]:
    return sorted(
        route.path
        for router in ROUTERS
        for route in router.routes
        if isinstance(route, APIRoute) and "POST" in route.methods
    )


def _filled(portal: Portal, path: str) -> str:
    """The route with real objects' ids, so only the token stands in the way."""
    with session_scope(portal.engine) as s:
        ids = {
            "vm_id": s.scalar(select(VM.id).where(VM.vm_name == "web")),
            "snapshot_id": s.scalar(select(Snapshot.id)),
            "token_id": s.scalar(select(ApiToken.id)),
            "request_id": s.scalar(select(RequestQueue.id)) or 1,
            "action": "stop",
            "username": "col",
            "host_id": s.scalar(select(Host.id)),
            "task_id": s.scalar(select(Task.id)),
            "template_id": s.scalar(select(Template.id)),
        }
    return re.sub(r"\{(\w+)\}", lambda m: str(ids[m.group(1)]), path)


def test_the_walk_finds_the_forms() -> None:
    paths = _post_paths()
    assert len(paths) >= 20
    assert {"/logout", "/vms/{vm_id}/actions/{action}", "/requests/{request_id}/approve"} <= set(
        paths
    )


@pytest.mark.parametrize("path", [p for p in _post_paths() if p not in ANONYMOUS])
def test_every_form_refuses_a_missing_or_wrong_token(portal: Portal, path: str) -> None:
    admin = portal.login("admin")
    others = portal.csrf(portal.login("stu"))
    url = _filled(portal, path)
    before = portal.state()
    for sent in (
        {},
        {C.WEB_CSRF_FIELD: ""},
        {C.WEB_CSRF_FIELD: "forged"},
        {C.WEB_CSRF_FIELD: others},  # another session's token
    ):
        answer = admin.post(url, data={"username": "col", "reason": "r", **sent})
        assert answer.status_code == 403, (path, sent, answer.status_code)
        assert "security token is missing or wrong" in answer.text
        assert "Traceback" not in answer.text
    wrong_header = admin.post(url, headers={C.WEB_CSRF_HEADER: "forged"})
    assert wrong_header.status_code == 403
    assert portal.state() == before


@pytest.mark.parametrize("path", sorted(ANONYMOUS))
def test_the_login_and_registration_forms_refuse_a_missing_or_wrong_token(
    portal: Portal, path: str
) -> None:
    assert path in _post_paths()
    fields = {"username": "stu", "password": PASSWORD, "password_again": PASSWORD}
    before = portal.state()
    client = portal.client()
    assert client.post(path, data=fields).status_code == 403  # no cookie, no field
    portal.login_page(client)  # the cookie is set now
    assert client.post(path, data=fields).status_code == 403
    assert client.post(path, data={**fields, C.WEB_CSRF_FIELD: "forged"}).status_code == 403
    assert C.WEB_SESSION_COOKIE not in client.cookies
    assert portal.state() == before


def test_the_header_token_is_accepted_as_htmx_sends_it(portal: Portal) -> None:
    stu = portal.login("stu")
    answer = stu.post("/account/mails", headers={C.WEB_CSRF_HEADER: portal.csrf(stu)})
    assert answer.status_code == 303


def test_a_token_or_cookie_of_any_text_is_refused_not_a_crash(portal: Portal) -> None:
    stu = portal.login("stu")
    before = portal.state()
    assert stu.post("/account/mails", data={C.WEB_CSRF_FIELD: "é" * 43}).status_code == 403
    header = {C.WEB_CSRF_HEADER: "é".encode("latin-1")}
    assert stu.post("/account/mails", headers=header).status_code == 403
    assert stu.post(f"{C.API_PREFIX}/tokens", json={}, headers=header).status_code == 403
    assert portal.state() == before
    other = portal.client()
    session_id = stu.cookies[C.WEB_SESSION_COOKIE].partition(".")[0]
    cookie = {"cookie": f"{C.WEB_SESSION_COOKIE}={session_id}.{'é' * 64}".encode("latin-1")}
    assert other.get("/", headers=cookie).status_code == 303
    assert other.get(f"{C.API_PREFIX}/me", headers=cookie).status_code == 401
