"""The portal in Chromium without the lab: ``baadal serve`` on a copy of the authorization
world (fake test:/// hosts, SQLite). A student requests a VM through the form, the faculty
member sees it in their list, and the admin walks every admin page (each one rendered,
its screenshot saved to the artifacts); the dashboard at a phone's width (390x844) fits
the screen. The faculty list and the admin's hosts page are also the docs' pictures."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, update

from baadal import constants as C
from baadal.db.models import User
from baadal.db.session import session_scope
from tests.unit.test_authorization import world_engine, world_template  # noqa: F401
from tests.unit.web_support import PASSWORD, password_hash

DOCS = Path(__file__).resolve().parents[2] / "docs"
PHONE = {"width": 390, "height": 844}
#: each admin page and the heading it must show
ADMIN_PAGES = {
    "cloud": ("/admin", "Cloud status"),
    "vms": ("/admin/vms", "All VMs"),
    "requests": ("/admin/requests", "Pending requests"),
    "tasks": ("/admin/tasks", "Tasks"),
    "sanity": ("/admin/sanity", "VM sanity"),
    "hosts": ("/admin/hosts", "Hosts"),
    "graphs": ("/admin/monitor", "Controller, NAT box and host network"),
    "templates": ("/admin/templates", "Templates"),
    "datastores": ("/admin/datastores", "Datastores"),
    "domains": ("/admin/domains", "Security domains"),
    "pools": ("/admin/pools", "IP pools"),
    "users": ("/admin/users", "Users"),
    "quotas": ("/admin/quotas?user=stu", "Quotas"),
    "audit": ("/admin/audit", "Audit log"),
}


def log_in(page: Any, who: str, password: str = PASSWORD) -> None:
    page.goto("/login")
    page.get_by_label("Username").fill(who)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    page.locator('a[href="/account"]').filter(has_text=who).wait_for()


@pytest.fixture
def portal_url(
    world_engine: tuple[Engine, Path],  # noqa: F811 - the imported fixture
    serve: Any,
    tmp_path: Path,
) -> str:
    engine, _root = world_engine
    with session_scope(engine) as s:
        s.execute(update(User).where(User.id != C.SYSTEM_USER_ID).values(password=password_hash()))
    url = engine.url.render_as_string(hide_password=False)
    return serve(tmp_path / "serve-home", BAADAL_DATABASE__URL=url)


def test_request_review_and_every_admin_page(
    portal_url: str, new_page: Any, artifacts: Path
) -> None:
    student = new_page(portal_url)
    log_in(student, "stu")
    student.get_by_role("link", name="Request a VM").click()
    student.get_by_label("Name of the VM").fill("thesis")
    student.get_by_label("Security domain").select_option("research")
    student.get_by_label("Faculty approver (username)").fill("fac")
    student.locator("#approver-check").filter(has_text="fac").wait_for()
    student.get_by_label("Purpose").fill("experiments for my thesis")
    student.get_by_role("button", name="Send the request").click()
    student.get_by_role("cell", name="thesis", exact=True).wait_for()
    student.screenshot(path=str(artifacts / "student-requests.png"), full_page=True)

    faculty = new_page(portal_url)
    log_in(faculty, "fac")
    faculty.get_by_role("link", name="To verify").click()
    faculty.get_by_role("cell", name="thesis", exact=True).wait_for()
    faculty.screenshot(path=str(artifacts / "faculty-approvals.png"), full_page=True)
    shutil.copyfile(artifacts / "faculty-approvals.png", DOCS / "faculty-approvals.png")

    admin = new_page(portal_url)
    log_in(admin, "admin")
    admin.get_by_role("link", name="Admin", exact=True).click()
    for name, (path, heading) in ADMIN_PAGES.items():
        admin.goto(path)
        assert admin.get_by_role("heading", level=1).inner_text().startswith(heading), path
        assert admin.locator(".flash.error").count() == 0, (path, admin.content()[:500])
        admin.screenshot(path=str(artifacts / f"admin-{name}.png"), full_page=True)
    shutil.copyfile(artifacts / "admin-hosts.png", DOCS / "admin-hosts.png")
    admin.goto("/admin/hosts")
    admin.get_by_role("link", name="host1").click()
    admin.get_by_role("heading", name="VMs on it").wait_for()
    admin.screenshot(path=str(artifacts / "admin-host1.png"), full_page=True)

    # every pending request is on the admins' list, its state saying whose turn it is
    admin.goto("/admin/requests")
    assert admin.locator("article h2", has_text="thesis").count() == 1


def test_the_dashboard_fits_a_phone(portal_url: str, new_page: Any, artifacts: Path) -> None:
    page = new_page(portal_url)
    page.set_viewport_size(PHONE)
    log_in(page, "stu")
    page.get_by_role("heading", name="My VMs").wait_for()
    page.screenshot(path=str(artifacts / "dashboard-phone.png"), full_page=True)
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"the page is {width} px wide on a {PHONE['width']} px phone"
    admin = new_page(portal_url)
    admin.set_viewport_size(PHONE)
    log_in(admin, "admin")
    admin.goto("/admin/hosts")
    admin.screenshot(path=str(artifacts / "admin-hosts-phone.png"), full_page=True)
    assert admin.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
