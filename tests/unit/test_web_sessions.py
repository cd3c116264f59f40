"""Portal logins: the session cookie (signed, HttpOnly, SameSite, expiring), the rows
behind it (logout, blocking and a password change end them), throttling per name and
per address, and the API taking the cookie (with the CSRF header for changes)."""

from __future__ import annotations

import hashlib
import logging
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from baadal import constants as C
from baadal.config import Settings
from baadal.db.models import User, WebSession
from baadal.db.session import session_scope
from baadal.services import users
from baadal.services.policy import SYSTEM
from tests.unit.test_authorization import world_engine, world_template  # noqa: F401
from tests.unit.web_support import PASSWORD, Portal, portal_fixture  # noqa: F401

pytestmark = pytest.mark.unit


def _rows(portal: Portal, who: str) -> list[WebSession]:
    with session_scope(portal.engine) as s:
        uid = s.scalar(select(User.id).where(User.username == who))
        return list(s.scalars(select(WebSession).where(WebSession.user_id == uid)))


def test_login_sets_a_signed_httponly_cookie_and_a_session_row(portal: Portal) -> None:
    client = portal.client()
    answer = portal.try_login(client, "stu")
    assert answer.status_code == 303 and answer.headers["location"] == "/"
    header = next(
        h for h in answer.headers.get_list("set-cookie") if h.startswith(C.WEB_SESSION_COOKIE)
    )
    assert "HttpOnly" in header and "SameSite=lax" in header and "Max-Age=43200" in header
    assert "Secure" not in header  # plain http in the test; https sets it (below)
    cookie = client.cookies[C.WEB_SESSION_COOKIE]
    session_id, _, signature = cookie.partition(".")
    assert len(signature) == 64
    (row,) = _rows(portal, "stu")
    assert row.id_hash == hashlib.sha256(session_id.encode()).hexdigest()
    assert session_id not in (row.id_hash, row.csrf_secret)
    assert row.expires - row.created == timedelta(hours=12)
    page = client.get("/")
    assert page.status_code == 200 and "My VMs" in page.text and "stu" in page.text


def test_the_cookie_is_secure_over_tls(portal: Portal) -> None:
    client = portal.client()
    client.base_url = client.base_url.copy_with(scheme="https")
    answer = portal.try_login(client, "stu")
    assert answer.status_code == 303
    assert any(
        h.startswith(C.WEB_SESSION_COOKIE) and "Secure" in h
        for h in answer.headers.get_list("set-cookie")
    )


def test_a_forged_or_mangled_cookie_is_no_session(portal: Portal) -> None:
    client = portal.login("stu")
    cookie = client.cookies[C.WEB_SESSION_COOKIE]
    session_id, _, signature = cookie.partition(".")
    for bad in (f"{session_id}.{'0' * 64}", f"{session_id}x.{signature}", session_id, "x" * 300):
        other = portal.client()
        other.cookies.set(C.WEB_SESSION_COOKIE, bad)
        answer = other.get("/")
        assert answer.status_code == 303 and answer.headers["location"].startswith("/login")


def test_without_a_session_pages_send_to_the_login(portal: Portal) -> None:
    client = portal.client()
    answer = client.get("/tokens")
    assert answer.status_code == 303
    assert answer.headers["location"] == "/login?next=/tokens"
    assert "log in again" in portal.flash(answer)
    fragment = client.get("/tokens", headers={"HX-Request": "true"})
    assert fragment.status_code == 401 and fragment.headers["HX-Redirect"] == "/login"


def test_login_goes_back_only_to_a_local_page(portal: Portal) -> None:
    client = portal.client()
    token = portal.login_page(client)
    for target, expected in (
        ("/tokens", "/tokens"),
        ("//evil.example/x", "/"),
        ("https://e.x", "/"),
    ):
        client.cookies.clear()
        token = portal.login_page(client)
        answer = client.post(
            "/login",
            data={"username": "stu", "password": PASSWORD, "next": target, "csrf_token": token},
        )
        assert answer.headers["location"] == expected


def test_wrong_password_is_401_one_line_and_logged_without_it(
    portal: Portal, caplog: pytest.LogCaptureFixture
) -> None:
    client = portal.client()
    with caplog.at_level(logging.WARNING, "baadal"):
        answer = portal.try_login(client, "stu", "not the password")
    assert answer.status_code == 401
    assert "wrong username or password" in answer.text
    assert C.WEB_SESSION_COOKIE not in client.cookies
    assert "failed login of 'stu' from testclient" in caplog.text
    assert "not the password" not in caplog.text
    blocked = portal.try_login(portal.client(), "blk")
    assert blocked.status_code == 401 and "blocked" in blocked.text


def test_failed_logins_are_throttled_per_name(portal: Portal) -> None:
    for i in range(C.LOGIN_USER_MAX_FAILURES):
        answer = portal.try_login(portal.client(f"10.0.0.{i + 1}"), "stu", "wrong password")
        assert answer.status_code == 401
    throttled = portal.try_login(portal.client("10.0.1.1"), "stu")  # the right password
    assert throttled.status_code == 429 and "try again in" in throttled.text
    assert int(throttled.headers["Retry-After"]) >= 1
    assert portal.try_login(portal.client("10.0.1.1"), "eve").status_code == 303


def test_failed_logins_are_throttled_per_address(portal: Portal) -> None:
    names = [f"nobody{i}" for i in range(C.LOGIN_SOURCE_MAX_FAILURES)]
    for name in names:
        assert portal.try_login(portal.client("10.9.9.9"), name, "guess").status_code == 401
    refused = portal.try_login(portal.client("10.9.9.9"), "eve")  # right password, same address
    assert refused.status_code == 429
    assert portal.try_login(portal.client("10.9.9.10"), "eve").status_code == 303


def test_logout_ends_the_session_at_once(portal: Portal) -> None:
    client = portal.login("stu")
    stolen = client.cookies[C.WEB_SESSION_COOKIE]
    answer = portal.post(client, "/logout")
    assert answer.status_code == 303 and answer.headers["location"] == "/login"
    assert _rows(portal, "stu") == []
    thief = portal.client()
    thief.cookies.set(C.WEB_SESSION_COOKIE, stolen)
    assert thief.get("/").status_code == 303


def test_a_session_expires(portal: Portal) -> None:
    client = portal.login("stu")
    with session_scope(portal.engine) as s:
        s.execute(update(WebSession).values(expires=WebSession.created))
    assert client.get("/").status_code == 303
    assert _rows(portal, "stu") == []


def test_an_unused_session_ends(portal: Portal) -> None:
    client = portal.login("stu")
    with session_scope(portal.engine) as s:
        row = s.scalars(select(WebSession)).one()
        row.last_seen = row.created - timedelta(minutes=121)
    assert client.get("/").status_code == 303


def test_blocking_a_user_ends_their_sessions_at_once(portal: Portal) -> None:
    client = portal.login("stu")
    assert client.get("/").status_code == 200
    with session_scope(portal.engine) as s:
        users.set_blocked(s, SYSTEM, "stu", True)
    assert _rows(portal, "stu") == []
    assert client.get("/").status_code == 303


def test_a_block_set_elsewhere_ends_the_session_on_its_next_request(portal: Portal) -> None:
    client = portal.login("stu")
    with session_scope(portal.engine) as s:  # not through the service: no rows deleted
        s.execute(update(User).where(User.username == "stu").values(block_user=True))
    answer = client.get("/")
    assert answer.status_code == 303 and "blocked" in portal.flash(answer)
    assert _rows(portal, "stu") == []


def test_the_api_takes_the_session_cookie_and_wants_csrf_for_changes(portal: Portal) -> None:
    client = portal.login("stu")
    me = client.get(f"{C.API_PREFIX}/me")
    assert me.status_code == 200 and me.json()["username"] == "stu"
    before = portal.state()
    refused = client.post(f"{C.API_PREFIX}/tokens", json={"name": "x"})
    assert refused.status_code == 403 and C.WEB_CSRF_HEADER in refused.json()["detail"]
    wrong = client.post(
        f"{C.API_PREFIX}/tokens", json={"name": "x"}, headers={C.WEB_CSRF_HEADER: "nope"}
    )
    assert wrong.status_code == 403
    assert portal.state() == before
    made = client.post(
        f"{C.API_PREFIX}/tokens",
        json={"name": "x"},
        headers={C.WEB_CSRF_HEADER: portal.csrf(client)},
    )
    assert made.status_code == 201
    token = made.json()["token"]
    bearer = portal.client()
    assert (
        bearer.get(f"{C.API_PREFIX}/me", headers={"Authorization": f"Bearer {token}"}).json()[
            "username"
        ]
        == "stu"
    )


def test_a_password_change_wants_the_old_one_and_ends_every_session(portal: Portal) -> None:
    phone = portal.login("stu")
    laptop = portal.login("stu")
    before = portal.state()
    wrong = portal.post(
        laptop,
        "/account/password",
        {"current": "nope", "new": "a new pass", "new_again": "a new pass"},
    )
    assert wrong.status_code == 303 and "wrong username or password" in portal.flash(wrong)
    differ = portal.post(
        laptop, "/account/password", {"current": PASSWORD, "new": "a new pass", "new_again": "b"}
    )
    assert "differ" in portal.flash(differ)
    done = portal.post(
        laptop,
        "/account/password",
        {"current": PASSWORD, "new": "a new pass", "new_again": "a new pass"},
    )
    assert done.headers["location"] == "/login" and before != portal.state()
    assert phone.get("/").status_code == 303 and _rows(portal, "stu") == []
    assert portal.try_login(portal.client(), "stu", "a new pass").status_code == 303


def test_the_signing_key_leaves_a_lab_home_searchable(settings: Settings) -> None:
    """QEMU (another user) reaches the lab's disks through the home: making the key must
    not close it (a portal started before the first VM broke every VM after it)."""
    from baadal import home as baadal_home
    from baadal.services import web_sessions

    (settings.home / baadal_home.LAB_ENTRY).mkdir(parents=True)
    settings.home.chmod(0o755)
    web_sessions._key(settings)
    assert settings.home.stat().st_mode & 0o777 == baadal_home.LAB_HOME_MODE
    assert (settings.home / C.WEB_SESSION_KEY_FILE).stat().st_mode & 0o777 == 0o600


def test_the_signing_key_is_private_and_kept(portal: Portal) -> None:
    portal.login("stu")
    settings = portal.app.state.settings
    key = settings.home / C.WEB_SESSION_KEY_FILE
    assert key.stat().st_mode & 0o777 == 0o600 and len(bytes.fromhex(key.read_text())) == 32
    client = portal.login("eve")  # a second login signs with the same key
    assert client.get("/").status_code == 200


def test_log_out_everywhere_else(portal: Portal) -> None:
    phone = portal.login("stu")
    laptop = portal.login("stu")
    page = laptop.get("/account").text
    assert page.count("<tr><td>") == 2 and "this one" in page
    assert "Log out everywhere else" in page
    done = portal.post(laptop, "/account/sessions/end")
    assert "1 other session(s) ended" in portal.flash(done)
    assert phone.get("/").status_code == 303
    assert laptop.get("/").status_code == 200 and len(_rows(portal, "stu")) == 1
    assert "Log out everywhere else" not in laptop.get("/account").text
