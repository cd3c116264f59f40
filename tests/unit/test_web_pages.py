"""The portal's pages per role against the authorization world: each renders for those
it is for and is refused (nothing leaked) for the others; forms queue work through the
services and come back with one line."""

from __future__ import annotations

import re
import time
from datetime import datetime

import pytest
from sqlalchemy import func, select, update

from baadal import constants as C
from baadal.auth import ldap
from baadal.auth.accounts import UserInfo
from baadal.db.models import VM, Organisation, RequestQueue, Task, User, UserVMMap
from baadal.db.session import session_scope
from baadal.monitor import rrd
from baadal.services import vms
from tests.unit.test_authorization import world_engine, world_template  # noqa: F401
from tests.unit.web_support import PASSWORD, Portal, portal_fixture  # noqa: F401

pytestmark = pytest.mark.unit


def _vm_id(portal: Portal, name: str = "web") -> int:
    with session_scope(portal.engine) as s:
        return s.scalar(select(VM.id).where(VM.vm_name == name))


def _count(portal: Portal, model: type) -> int:
    with session_scope(portal.engine) as s:
        return s.scalar(select(func.count()).select_from(model)) or 0


def _new_vm(form: str, name: str, **more: str) -> dict[str, str]:
    """A request form's fields: its first template and security domain."""
    template = form.split('name="template"')[1].split('value="')[1].split('"')[0]
    domain = form.split('name="security_domain"')[1].split("</option><option>")[1].split("<")[0]
    return {"vm_name": name, "template": template, "security_domain": domain, **more}


def _one_line_error(page_text: str) -> str:
    assert "Traceback" not in page_text
    start = page_text.index('class="flash error"')
    return page_text[start : page_text.index("</p>", start)]


PAGES = ("/", "/account", "/tokens", "/requests", "/requests/new", "/tasks", "/quota")


@pytest.mark.parametrize("who", ["admin", "oa", "fac", "stu", "eve"])
def test_everyones_pages_render(portal: Portal, who: str) -> None:
    client = portal.login(who)
    for path in PAGES:
        page = client.get(path)
        assert page.status_code == 200, (path, page.text)
        assert f">{who}</a>" in page.text  # the navigation names the account
        assert 'hx-headers=\'{"X-CSRF-Token": "' in page.text
        assert "/static/htmx.min.js" in page.text and "/static/baadal.css" in page.text
        assert "frame-ancestors 'self'" in page.headers["content-security-policy"]
        assert "http" not in page.text.split("<body")[0]  # nothing loaded from elsewhere


def test_static_files_are_served_from_the_package(portal: Portal) -> None:
    client = portal.client()
    htmx = client.get("/static/htmx.min.js")
    assert htmx.status_code == 200 and "htmx" in htmx.text[:200]
    assert "@media" in client.get("/static/baadal.css").text


def test_navigation_follows_the_roles(portal: Portal) -> None:
    student = portal.login("stu").get("/").text
    assert 'href="/review"' not in student and 'href="/org"' not in student
    assert 'href="/admin"' not in student
    assert 'href="/review"' in portal.login("fac").get("/").text
    assert 'href="/org"' in portal.login("oa").get("/").text
    assert 'href="/admin"' in portal.login("admin").get("/").text


@pytest.mark.parametrize(("path", "allowed"), [("/review", {"fac"}), ("/org", {"oa", "ob"})])
def test_role_pages_are_refused_to_others(portal: Portal, path: str, allowed: set[str]) -> None:
    for who in ("admin", "oa", "ob", "fac", "stu", "eve"):
        page = portal.login(who).get(path)
        if who in allowed:
            assert page.status_code == 200, (who, page.text)
        else:
            assert page.status_code == 403, (who, page.status_code)
            assert "not a" in _one_line_error(page.text)


def test_the_dashboard_shows_my_vms_and_hides_the_host(portal: Portal) -> None:
    page = portal.login("stu").get("/")
    assert ">web</a>" in page.text and "running" in page.text
    assert "Host" not in page.text and "h1" not in page.text.split("<tbody>")[1]
    admin = portal.login("admin").get(f"/vms/{_vm_id(portal)}")
    assert "<dt>Host</dt>" in admin.text
    assert ">web</a>" not in portal.login("eve").get("/").text


def test_a_vm_page_shows_its_details_for_its_users(portal: Portal) -> None:
    vm_id = _vm_id(portal)
    page = portal.login("col").get(f"/vms/{vm_id}")
    assert page.status_code == 200
    for seen in (
        "VM web",
        "Take a snapshot",
        "s1",
        "Users of the VM",
        "fac",
        ": owner",
        f'action="/vms/{vm_id}/console"',
        f"/vms/{vm_id}/graphs/cpu/hour.png",
    ):
        assert seen in page.text, seen
    assert "<dt>Host</dt>" not in page.text
    assert f'action="/vms/{vm_id}/actions/stop"' in page.text  # running: stop, not start
    assert f'action="/vms/{vm_id}/actions/start"' not in page.text


def test_another_users_vm_page_is_refused_and_leaks_nothing(portal: Portal) -> None:
    vm_id = _vm_id(portal)
    eve = portal.login("eve")
    page = eve.get(f"/vms/{vm_id}")
    assert page.status_code in (403, 404)
    token = re.search(r'"X-CSRF-Token": "([^"]+)"', page.text)
    shown = page.text.replace(token.group(1), "") if token else page.text  # it may hold "s1"
    assert "ORG_A_fac_web" not in shown and "s1" not in shown and "5901" not in shown
    graph = eve.get(f"/vms/{vm_id}/graphs/cpu/hour.png")
    assert graph.status_code in (403, 404) and graph.headers["content-type"].startswith("text/html")
    assert eve.get("/vms/999999").status_code == 404
    before = portal.state()
    for path in (f"/vms/{vm_id}/actions/stop", f"/vms/{vm_id}/snapshots", f"/vms/{vm_id}/keep"):
        assert portal.post(eve, path).status_code in (403, 404)
    assert portal.state() == before


def test_a_vm_action_queues_a_task_and_says_so(portal: Portal) -> None:
    vm_id = _vm_id(portal)
    stu = portal.login("stu")
    tasks = _count(portal, Task)
    answer = portal.post(stu, f"/vms/{vm_id}/actions/stop")
    assert answer.status_code == 303 and answer.headers["location"] == f"/vms/{vm_id}"
    assert "queued as task" in portal.flash(answer)
    assert _count(portal, Task) == tasks + 1
    again = portal.post(stu, f"/vms/{vm_id}/actions/stop")  # one at a time: a conflict
    assert again.status_code == 303 and portal.flash(again)
    shown = stu.get(f"/vms/{vm_id}")  # the browser kept the message's cookie
    assert "flash error" in shown.text and C.WEB_FLASH_COOKIE in shown.headers["set-cookie"]
    assert "flash error" not in stu.get(f"/vms/{vm_id}").text  # shown once
    bad = portal.post(stu, f"/vms/{vm_id}/actions/explode")
    assert "unknown operation" in portal.flash(bad)
    assert _count(portal, Task) == tasks + 1


def test_deleting_a_vm_wants_the_box_ticked(portal: Portal) -> None:
    vm_id = _vm_id(portal)
    fac = portal.login("fac")
    page = fac.get(f"/vms/{vm_id}").text
    assert 'name="confirm" value="yes" required' in page
    before = portal.state()
    unticked = portal.post(fac, f"/vms/{vm_id}/actions/delete")
    assert unticked.headers["location"] == f"/vms/{vm_id}"
    assert "tick the box" in portal.flash(unticked) and portal.state() == before
    ticked = portal.post(fac, f"/vms/{vm_id}/actions/delete", {"confirm": "yes"})
    assert ticked.headers["location"] == "/" and "queued as task" in portal.flash(ticked)


def test_snapshot_schedule_and_sharing(portal: Portal) -> None:
    vm_id = _vm_id(portal)
    fac = portal.login("fac")
    done = portal.post(fac, f"/vms/{vm_id}/schedule", {"schedule": ["1", "4"]})
    assert "daily, monthly" in portal.flash(done)
    with session_scope(portal.engine) as s:
        assert s.get(VM, vm_id).snapshot_flag == 5
    assert "weekly" in portal.flash(portal.post(fac, f"/vms/{vm_id}/schedule", {"schedule": "2"}))
    bad = portal.post(fac, f"/vms/{vm_id}/schedule", {"schedule": "6"})
    assert "daily, weekly" in portal.flash(bad)
    shared = portal.post(fac, f"/vms/{vm_id}/users", {"username": "eve"})
    assert "eve may use" in portal.flash(shared)
    assert ">web</a>" in portal.login("eve").get("/").text
    removed = portal.post(fac, f"/vms/{vm_id}/users/eve/remove")
    assert "eve no longer" in portal.flash(removed)
    with session_scope(portal.engine) as s:
        eve = s.scalar(select(User.id).where(User.username == "eve"))
        assert s.scalar(select(UserVMMap).where(UserVMMap.user_id == eve)) is None


def test_request_a_vm_with_a_live_approver_check(portal: Portal) -> None:
    stu = portal.login("stu")
    form = stu.get("/requests/new")
    assert 'hx-get="/check/approver"' in form.text and "disk 1 GB" in form.text
    ok = stu.get("/check/approver", params={"approver": "fac"})
    assert ok.status_code == 200 and "faculty of your organisation" in ok.text
    wrong = stu.get("/check/approver", params={"approver": "eve"})
    assert "not a faculty member" in wrong.text and 'class="error"' in wrong.text
    data = _new_vm(form.text, "mine", ram_mb="512", vcpus="1", approver="fac", purpose="x")
    requests = _count(portal, RequestQueue)
    made = portal.post(stu, "/requests", data)
    assert made.status_code == 303 and made.headers["location"] == "/requests"
    assert _count(portal, RequestQueue) == requests + 1
    listed = stu.get("/requests")
    assert "mine" in listed.text and "Withdraw" in listed.text
    twin = portal.post(stu, "/requests", data)
    assert twin.status_code == 422 and "already" in _one_line_error(twin.text)
    assert 'value="mine"' in twin.text  # the form comes back filled in
    assert _count(portal, RequestQueue) == requests + 1
    with session_scope(portal.engine) as s:
        req_id = s.scalar(select(func.max(RequestQueue.id)))
    withdrawn = portal.post(stu, f"/requests/{req_id}/withdraw")
    assert "withdrawn" in portal.flash(withdrawn)
    assert _count(portal, RequestQueue) == requests


def test_faculty_verifies_and_orgadmin_approves(portal: Portal) -> None:
    stu = portal.login("stu")
    form = stu.get("/requests/new").text
    made = portal.post(stu, "/requests", _new_vm(form, "course", approver="fac"))
    assert made.status_code == 303, made.text
    with session_scope(portal.engine) as s:
        req_id = s.scalar(select(func.max(RequestQueue.id)))
    fac = portal.login("fac")
    queue = fac.get("/review")
    assert "course" in queue.text and f"/requests/{req_id}/verify" in queue.text
    oa = portal.login("oa")
    unverified = oa.get("/org").text
    assert "course" in unverified and f"/requests/{req_id}/approve" not in unverified
    reminded = portal.post(oa, f"/requests/{req_id}/remind", {"back": "/org"})
    assert reminded.headers["location"] == "/org" and "fac reminded" in portal.flash(reminded)
    resized = portal.post(fac, f"/requests/{req_id}/edit", {"ram_mb": "1024", "back": "/review"})
    assert resized.headers["location"] == "/review" and "changed" in portal.flash(resized)
    verified = portal.post(fac, f"/requests/{req_id}/verify", {"back": "/review?kind=create"})
    assert "verified" in portal.flash(verified)
    assert verified.headers["location"] == "/review?kind=create"
    assert f"/requests/{req_id}/approve" in oa.get("/org").text
    approved = portal.post(oa, f"/requests/{req_id}/approve", {"back": "https://evil.example"})
    assert approved.headers["location"] == "/requests" and "approved" in portal.flash(approved)
    with session_scope(portal.engine) as s:
        req = s.get(RequestQueue, req_id)
        assert (req.status, req.RAM) == (C.RequestStatus.APPROVED, 1024)
    eve = portal.login("eve")
    before = portal.state()
    assert portal.post(eve, f"/requests/{req_id}/reject", {"reason": "no"}).status_code == 403
    assert portal.state() == before


def test_tasks_poll_until_they_end(portal: Portal) -> None:
    stu = portal.login("stu")
    portal.post(stu, f"/vms/{_vm_id(portal)}/actions/stop")
    with session_scope(portal.engine) as s:
        running = s.scalar(select(func.max(Task.id)))
        failed = s.scalar(select(Task.id).where(Task.status == C.TaskStatus.FAILED))
    page = stu.get("/tasks").text
    assert f'hx-get="/tasks/{running}/row"' in page and 'hx-trigger="every 2s"' in page
    assert f'hx-get="/tasks/{failed}/row"' not in page  # ended: no polling
    row = stu.get(f"/tasks/{running}/row")
    assert row.status_code == 200 and row.text.lstrip().startswith("<tr")
    with session_scope(portal.engine) as s:
        s.get(Task, running).status = C.TaskStatus.SUCCESS
    assert "hx-trigger" not in stu.get(f"/tasks/{running}/row").text
    assert portal.login("eve").get(f"/tasks/{running}/row").status_code in (403, 404)


def test_quota_and_account_pages(portal: Portal) -> None:
    stu = portal.login("stu")
    quota = stu.get("/quota")
    assert "Quota of user stu" in quota.text
    account = stu.get("/account")
    assert "ORG_A" in account.text and 'name="task_mails"' in account.text
    off = portal.post(stu, "/account/mails", {})
    assert "off" in portal.flash(off)
    with session_scope(portal.engine) as s:
        assert s.scalar(select(User.mail_subscribed).where(User.username == "stu")) is False


def test_tokens_page_shows_a_new_token_once(portal: Portal) -> None:
    stu = portal.login("stu")
    made = portal.post(stu, "/tokens", {"name": "laptop", "expires_days": "30"})
    assert made.status_code == 200 and made.headers["cache-control"] == "no-store"
    token = made.text.split('id="newtoken" class="token" readonly value="')[1].split('"')[0]
    assert token.startswith(C.API_TOKEN_PREFIX)
    listed = stu.get("/tokens").text
    assert "laptop" in listed and token not in listed
    assert (
        portal.client()
        .get(f"{C.API_PREFIX}/me", headers={"Authorization": f"Bearer {token}"})
        .status_code
        == 200
    )
    bad = portal.post(stu, "/tokens", {"name": "a\nb"})
    assert bad.status_code == 422 and "token name" in bad.text
    token_id = listed.split('action="/tokens/')[-1].split("/revoke")[0]
    revoked = portal.post(stu, f"/tokens/{token_id}/revoke")
    assert "revoked" in portal.flash(revoked)


def test_registration_awaits_approval(portal: Portal) -> None:
    client = portal.client()
    form = client.get("/register")
    assert form.status_code == 200
    token = form.text.split('name="csrf_token" value="')[1].split('"')[0]
    data = {
        "username": "newbie",
        "password": "long enough",
        "password_again": "long enough",
        "csrf_token": token,
    }
    made = client.post("/register", data=data)
    assert made.status_code == 303 and "awaits" in portal.flash(made)
    again = client.post("/register", data=data)
    assert again.status_code == 422 and "taken" in again.text
    assert portal.try_login(portal.client(), "newbie", "long enough").status_code == 401
    with session_scope(portal.engine) as s:
        s.execute(
            update(Organisation)
            .where(Organisation.name == "ORG_B")
            .values(allows_registration=True)
        )
    offered = client.get("/register").text
    assert "<option>ORG_B</option>" in offered and "ORG_A" not in offered
    into = client.post("/register", data={**data, "username": "bee", "organisation": "ORG_B"})
    assert into.status_code == 303
    closed = client.post("/register", data={**data, "username": "ay", "organisation": "ORG_A"})
    assert closed.status_code == 422 and "does not take self-registrations" in closed.text
    ob = portal.login("ob")
    assert "bee" in ob.get("/org").text and "newbie" not in ob.get("/org").text
    oa = portal.login("oa")
    before = portal.state()
    assert portal.post(oa, "/accounts/bee/approve").status_code == 403
    assert portal.state() == before
    approved = portal.post(ob, "/accounts/bee/approve")
    assert "bee approved" in portal.flash(approved)
    assert portal.try_login(portal.client(), "bee", "long enough").status_code == 303
    differ = client.post("/register", data={**data, "username": "other", "password_again": "x"})
    assert differ.status_code == 422 and "differ" in differ.text


def test_the_vm_page_asks_for_linked_or_full_clones(portal: Portal) -> None:
    with session_scope(portal.engine) as s:
        web = s.scalar(select(VM.id).where(VM.vm_name == "web"))
    fac = portal.login("fac")
    assert 'name="full" value="true"' in fac.get(f"/vms/{web}").text
    for data, full in (({"count": "1"}, False), ({"count": "1", "full": "true"}, True)):
        answer = portal.post(fac, f"/vms/{web}/requests/clone", data)
        assert "clone(s) made" in portal.flash(answer), answer.text
        with session_scope(portal.engine) as s:
            newest = s.scalars(select(RequestQueue).order_by(RequestQueue.id.desc())).first()
            assert (newest.clone_count, newest.clone_full) == (1, full)
            newest.status = C.RequestStatus.REJECTED  # one pending clone request a VM


def test_registrations_from_one_address_wait_past_the_limit(portal: Portal) -> None:
    portal.app.state.settings.auth.registrations_per_address = 1
    client = portal.client()
    token = client.get("/register").text.split('name="csrf_token" value="')[1].split('"')[0]
    data = {"password": "long enough", "password_again": "long enough", "csrf_token": token}
    assert client.post("/register", data={**data, "username": "one"}).status_code == 303
    before = portal.state()
    refused = client.post("/register", data={**data, "username": "two"})
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) > 0
    assert "too many registrations from this address" in refused.text
    assert portal.state() == before


def test_unknown_pages_and_bad_input_are_pages_not_tracebacks(portal: Portal) -> None:
    stu = portal.login("stu")
    missing = stu.get("/no/such/page")
    assert missing.status_code == 404 and "text/html" in missing.headers["content-type"]
    assert ">stu</a>" in missing.text  # the error page keeps the navigation
    assert ">stu</a>" not in portal.client().get("/no/such/page").text
    bad = stu.get("/vms/notanumber")
    assert bad.status_code == 422 and "Traceback" not in bad.text
    assert stu.get("/review?kind=bogus").status_code in (403, 422)
    api = stu.get(f"{C.API_PREFIX}/vms/notanumber")
    assert api.headers["content-type"] == "application/problem+json"


def test_idle_warnings_are_answered_with_keep_it(portal: Portal) -> None:
    vm_id = _vm_id(portal)
    with session_scope(portal.engine) as s:
        s.get(VM, vm_id).shutdown_warning_date = datetime(2030, 1, 2)
    stu = portal.login("stu")
    page = stu.get("/").text
    assert "Idle warnings" in page and "to be shut down after 2030-01-02" in page
    assert f'action="/vms/{vm_id}/keep"' in page
    assert portal.post(portal.login("eve"), f"/vms/{vm_id}/keep").status_code in (403, 404)
    kept = portal.post(stu, f"/vms/{vm_id}/keep")
    assert kept.headers["location"] == "/" and "is kept" in portal.flash(kept)
    with session_scope(portal.engine) as s:
        assert s.get(VM, vm_id).shutdown_warning_date is None
    assert "Idle warnings" not in stu.get("/").text
    again = portal.post(stu, f"/vms/{vm_id}/keep")
    assert "no idle or shut-off warning" in portal.flash(again)


def test_an_ldap_login_works_through_the_portal(
    portal: Portal, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = portal.app.state.settings
    monkeypatch.setattr(settings.auth, "auth_type", C.AuthType.LDAP)

    def directory(_settings: object, username: str, password: str) -> UserInfo | None:
        return UserInfo(username, "Stu", "Dent") if password == "directory pass" else None

    monkeypatch.setattr(ldap, "ldap_authenticate", directory)
    assert portal.try_login(portal.client(), "stu", PASSWORD).status_code == 401
    client = portal.client()
    assert portal.try_login(client, "stu", "directory pass").status_code == 303
    account = client.get("/account").text
    assert "kept by the directory" in account and 'name="new"' not in account


def test_a_vm_graph_is_a_png_for_its_users_only(portal: Portal) -> None:
    vm_id = _vm_id(portal)
    stu = portal.login("stu")
    missing = stu.get(f"/vms/{vm_id}/graphs/cpu/day.png")
    assert missing.status_code == 404 and "no monitoring data" in missing.text
    settings = portal.app.state.settings
    path = rrd.get_rrd_file(settings, "ORG_A_fac_web")
    assert rrd.update_rrd_file(path, rrd.RrdSample(int(time.time()), 0, 0, 0, 0, 0, 0))
    for period in C.GRAPH_PERIODS:
        graph = stu.get(f"/vms/{vm_id}/graphs/cpu/{period}.png")
        assert graph.status_code == 200 and graph.headers["content-type"] == "image/png"
        assert graph.content.startswith(b"\x89PNG")
    assert stu.get(f"/vms/{vm_id}/graphs/gpu/day.png").status_code == 422
    assert stu.get(f"/vms/{vm_id}/graphs/cpu/decade.png").status_code == 422
    assert portal.login("eve").get(f"/vms/{vm_id}/graphs/cpu/day.png").status_code in (403, 404)


def test_a_bug_is_a_one_line_page_and_a_logged_traceback(
    portal: Portal, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*_args: object) -> None:
        raise RuntimeError("secret detail")

    stu = portal.login("stu")
    monkeypatch.setattr(vms, "vm_details", broken)
    page = stu.get(f"/vms/{_vm_id(portal)}")
    assert page.status_code == 500 and "text/html" in page.headers["content-type"]
    assert "internal error (RuntimeError); see the baadal log" in page.text
    assert "secret detail" not in page.text and "Traceback" not in page.text
    assert "secret detail" in caplog.text
