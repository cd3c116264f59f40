"""The admin pages over HTTP (TestClient, the authorization world): each renders for an
admin and is 403 for every other role; every admin form refuses a missing or wrong CSRF
token and changes nothing; a sample of changes goes through the services."""

from __future__ import annotations

import re

import pytest
from fastapi.routing import APIRoute
from sqlalchemy import select

from baadal import constants as C
from baadal.db.models import Host, Task, User
from baadal.db.session import session_scope
from baadal.web import admin_pages
from baadal.web.portal import ROUTERS
from tests.unit.test_api_lists import more_of_everything
from tests.unit.test_authorization import world_engine, world_template  # noqa: F401
from tests.unit.web_support import Portal, portal_fixture  # noqa: F401

pytestmark = pytest.mark.unit


#: every admin page (GET) with what it must show in the authorization world
PAGES = {
    "/admin": "Cloud status",
    "/admin/vms": "web",
    "/admin/vms?status=running&owner=fac": "web",
    "/admin/requests": "Pending requests",
    "/admin/tasks": "Start VM",
    "/admin/sanity": "Run the check now",
    "/admin/hosts": "host1",
    "/admin/monitor": "The NAT box",
    "/admin/templates": "tiny",
    "/admin/datastores": "ds1",
    "/admin/domains": "hidden",
    "/admin/pools": "VNC ports",
    "/admin/users": "stu",
    "/admin/quotas?user=stu": "stu",
    "/admin/audit": "Audit log",
    "/admin/progress?ids=1": "Progress",
}
NOT_ADMINS = ("oa", "ob", "fac", "stu", "col", "eve")


def _admin_posts() -> list[str]:
    """Every POST route of the admin pages, with its path parameters filled in."""
    paths = []
    for route in admin_pages.router.routes:
        if isinstance(route, APIRoute) and "POST" in route.methods:
            path = route.path.replace("{username}", "stu")
            paths.append(re.sub(r"\{\w+\}", "1", path))
    return sorted(paths)


def test_every_admin_page_renders_for_an_admin(portal: Portal) -> None:
    admin = portal.login("admin")
    for path, shown in PAGES.items():
        page = admin.get(path)
        assert page.status_code == 200, (path, page.text[:300])
        assert shown in page.text, path
        assert 'href="/admin/hosts"' in page.text or path.startswith("/admin/progress")
    host_id = portal_host_id(portal)
    page = admin.get(f"/admin/hosts/{host_id}")
    assert page.status_code == 200 and "Maintenance" in page.text, page.text[-800:]
    assert "/admin/graphs/host.png?name=host1&amp;graph=cpu" in page.text


def portal_host_id(portal: Portal) -> int:
    with session_scope(portal.engine) as s:
        return s.scalar(select(Host.id).where(Host.host_name == "host1")) or 0


@pytest.mark.parametrize("who", NOT_ADMINS)
def test_other_roles_get_403_on_every_admin_page_and_form(portal: Portal, who: str) -> None:
    client = portal.login(who)
    before = portal.state()
    for path in [
        *PAGES,
        "/admin/hosts/1",
        "/admin/graphs/host.png?name=host1",
        "/admin/network.svg",
    ]:
        page = client.get(path)
        assert page.status_code == 403, (who, path, page.status_code)
        assert "for administrators" in page.text
        assert "ds1" not in page.text and "test:///" not in page.text  # nothing leaked
    for path in _admin_posts():
        answer = portal.post(client, path, {"reason": "x", "name": "x", "status": "up"})
        assert answer.status_code == 403, (who, path)
    assert portal.state() == before


def test_the_csrf_walk_covers_the_admin_forms() -> None:
    """tests/unit/test_web_csrf.py tries a missing, empty, forged and another session's
    token on every POST route of the portal's routers: the admin forms are among them."""
    assert admin_pages.router in ROUTERS
    assert len(_admin_posts()) >= 25


def test_the_admin_link_is_shown_to_admins_only(portal: Portal) -> None:
    assert 'href="/admin"' in portal.login("admin").get("/").text
    assert 'href="/admin"' not in portal.login("stu").get("/").text


def test_blocking_and_unblocking_a_user_goes_through_the_service(portal: Portal) -> None:
    admin = portal.login("admin")
    answer = portal.post(admin, "/admin/users/eve/block", {"blocked": "true"})
    assert answer.status_code == 303 and answer.headers["location"] == "/admin/users"
    assert portal.flash(answer) == "account eve blocked"
    with session_scope(portal.engine) as s:
        assert s.scalar(select(User.block_user).where(User.username == "eve"))
    portal.post(admin, "/admin/users/eve/block")
    with session_scope(portal.engine) as s:
        assert not s.scalar(select(User.block_user).where(User.username == "eve"))


def test_roles_are_set_from_the_checkboxes(portal: Portal) -> None:
    admin = portal.login("admin")
    answer = portal.post(admin, "/admin/users/eve/roles", {"role": ["faculty", "orgadmin"]})
    assert portal.flash(answer) == "account eve: faculty, orgadmin, user"
    page = admin.get("/admin/users")
    row = page.text.split('id="user-eve"')[1].split("</tr>")[0]
    assert 'value="faculty" checked' in row and 'value="admin" checked' not in row


def test_a_refused_change_is_one_line_and_changes_nothing(portal: Portal) -> None:
    admin = portal.login("admin")
    before = portal.state()
    answer = portal.post(
        admin, "/admin/hosts", {"name": "bad name!", "address": "x", "cpus": "1", "ram_gb": "1"}
    )
    assert answer.status_code == 303 and answer.headers["location"] == "/admin/hosts"
    message = portal.flash(answer)
    assert "host name" in message and "\n" not in message
    answer = portal.post(
        admin, "/admin/hosts", {"name": "h9", "address": "x", "cpus": "many", "ram_gb": "1"}
    )
    assert answer.status_code == 422 and "cpus" in answer.text
    assert portal.state() == before


def test_retry_and_ignore_a_failed_task(portal: Portal) -> None:
    admin = portal.login("admin")
    with session_scope(portal.engine) as s:
        task_id = s.scalar(select(Task.id).where(Task.status == C.TaskStatus.FAILED))
    page = admin.get("/admin/tasks?status=failed")
    assert f'action="/admin/tasks/{task_id}/retry"' in page.text
    answer = portal.post(admin, f"/admin/tasks/{task_id}/retry")
    assert portal.flash(answer) == f"task {task_id} queued again"
    progress = admin.get(f"/admin/progress?ids={task_id}")
    assert 'hx-trigger="every 2s"' in progress.text and "0 of 1 task(s) ended" in progress.text
    answer = portal.post(admin, f"/admin/tasks/{task_id}/ignore")
    assert portal.flash(answer) == f"task {task_id} ignored"
    progress = admin.get(f"/admin/progress?ids={task_id}")
    assert "hx-trigger" not in progress.text and "1 of 1 task(s) ended" in progress.text


def test_the_vm_list_is_paged_by_keyset(portal: Portal) -> None:
    admin = portal.login("admin")
    page = admin.get("/admin/vms?after=0")
    assert "web" in page.text and 'rel="next"' not in page.text
    later = admin.get("/admin/vms?after=100000")
    assert "No VM matches." in later.text
    assert admin.get("/admin/vms?status=flying").status_code == 422
    assert admin.get("/admin/vms?colour=red").status_code == 422


#: the admin tables paged like the API's lists, and a row of each that only the
#: second page shows (the world's rows have lower ids)
TABLES = {
    "/admin/hosts": "more24",
    "/admin/templates": "t-more24",
    "/admin/datastores": "ds-more24",
    "/admin/domains": "d-more24",
    "/admin/pools": "VLAN d-more24-vlan84 (84)",
    "/admin/users": "u-more24",
}


def test_the_admin_tables_come_in_pages(portal: Portal) -> None:
    """A page of twenty rows with a link to the next; that page links back to the first."""
    with session_scope(portal.engine) as s:
        more_of_everything(s, 25)
    admin = portal.login("admin")
    for path, late in TABLES.items():
        first = admin.get(path)
        assert first.status_code == 200 and late not in first.text, path
        found = re.search(r'<a rel="next" href="([^"]+)">Next page</a>', first.text)
        assert found is not None and "First page" not in first.text, path
        second = admin.get(found.group(1).replace("&amp;", "&"))
        assert second.status_code == 200 and late in second.text, path
        assert f'<a href="{path}">First page</a>' in second.text
        assert admin.get(f"{path}?after=-1").status_code == 422
    pools = admin.get("/admin/pools").text
    assert "<option>d-more24-vlan84</option>" in pools  # the form offers every VLAN


def test_maintenance_queues_and_shows_progress(portal: Portal) -> None:
    admin = portal.login("admin")
    host_id = portal_host_id(portal)
    answer = portal.post(admin, f"/admin/hosts/{host_id}/maintenance")
    assert answer.status_code == 303
    location = answer.headers["location"]
    assert location.startswith(f"/admin/hosts/{host_id}?tasks=")
    assert "maintenance: 1 task(s) queued" in portal.flash(answer)
    page = admin.get(location)
    assert "maintenance" in page.text and 'hx-get="/admin/progress?ids=' in page.text
    with session_scope(portal.engine) as s:
        assert s.scalar(select(Host.status).where(Host.id == host_id)) == C.HostStatus.MAINTENANCE


def test_the_network_picture_is_404_before_a_measurement(portal: Portal) -> None:
    admin = portal.login("admin")
    assert "Not measured yet" in admin.get("/admin/monitor").text
    assert admin.get("/admin/network.svg").status_code == 404
