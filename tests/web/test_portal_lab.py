"""The main path of the portal on the lab, in Chromium, for each role: a student requests
a VM through the form, the faculty member verifies it, the orgadmin and the admin approve
it (the admin on the admin pages), the worker creates it on a lab host while the admin's
task list shows its progress; the student opens the VM's page and sees its IP (which
answers ping), takes a snapshot, opens the console (noVNC draws the guest's text, as in
test_console_lab) and deletes the VM. Every page passed is saved as a screenshot in the
artifacts; the VM's page is docs/vm-page.png.

Run it alone, under the lab lock:
``flock /tmp/baadal-lab.lock pytest tests/web/test_portal_lab.py``.
"""

from __future__ import annotations

import re
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from baadal import constants as C
from baadal.auth.accounts import hash_password
from baadal.auth.roles import add_membership_db
from baadal.db.models import VM, Organisation, User
from baadal.db.session import session_scope
from baadal.lab import layout
from baadal.lab.guest import console_line
from baadal.services import measurements
from baadal.services.policy import SYSTEM
from baadal.vm import storage
from tests.e2e.conftest import Lab, lab, wait_ping  # noqa: F401 - the lab fixture
from tests.support.workers import start_worker
from tests.web.test_admin_browser import log_in
from tests.web.test_console_lab import DRAW_TIMEOUT_S, MIN_LIT_PIXELS, _lit_pixels

pytestmark = [pytest.mark.web, pytest.mark.e2e, pytest.mark.slow]

DOCS = Path(__file__).resolve().parents[2] / "docs"
PASSWORD = "portal lab password"
ORG = "LABWEB"
#: username -> its roles besides user; the student first (on SQLite its id is 0)
PEOPLE = {"sam": (), "fred": (C.Role.FACULTY,), "olga": (C.Role.ORGADMIN,), "ada": (C.Role.ADMIN,)}
VM_NAME = "webvm"
TASK_TIMEOUT_S = 300
BOOT_TIMEOUT_S = 120
PING_TIMEOUT_S = 120
#: how many of the images were drawn (loaded, with a width)
ALL_DRAWN = "imgs => imgs.filter(i => i.complete && i.naturalWidth > 0).length"


@pytest.fixture
def people(lab: Lab) -> None:  # noqa: F811 - the imported fixture
    with session_scope(lab.engine) as s:
        org = Organisation(name=ORG, details="the portal's university")
        s.add(org)
        s.flush()
        for name, roles in PEOPLE.items():
            user = User(
                username=name,
                first_name=name.capitalize(),
                email=f"{name}@lab.example.org",
                organisation_id=org.id,
                password=hash_password(PASSWORD),
                registration_key=C.RegistrationKey.ACTIVE,
            )
            s.add(user)
            s.flush()
            add_membership_db(s, user.id, (*roles, C.Role.USER))


@pytest.fixture
def worker(lab: Lab) -> Iterator[None]:  # noqa: F811 - the imported fixture
    process = start_worker(
        f"sqlite:///{lab.home / 'baadal.db'}", lab.home, "web-lab", until_idle=False
    )
    yield
    process.send_signal(signal.SIGTERM)
    out, _ = process.communicate(timeout=120)
    print(out.decode(errors="replace")[-2000:])


def until(page: Any, found: Any, timeout_s: float, path: str | None = None) -> None:
    """Reload ``path`` (or the page) until ``found`` is on it: for what a worker does
    meanwhile on pages that do not poll."""
    deadline = time.monotonic() + timeout_s
    while found.count() == 0:
        assert time.monotonic() < deadline, f"not seen on {page.url} in {timeout_s} s"
        page.wait_for_timeout(1000)
        if path:
            page.goto(path)
        else:
            page.reload()


def test_a_vm_from_request_to_console_to_deletion(
    lab: Lab,  # noqa: F811 - the imported fixture
    people: None,
    worker: None,
    serve: Any,
    new_page: Any,
    artifacts: Path,
) -> None:
    base = serve(lab.home)
    shot = lambda page, name: page.screenshot(path=str(artifacts / f"{name}.png"), full_page=True)  # noqa: E731

    # the student asks for a VM, naming their faculty member
    student = new_page(base)
    log_in(student, "sam", PASSWORD)
    student.get_by_role("link", name="Request a VM").click()
    student.get_by_label("Name of the VM").fill(VM_NAME)
    student.get_by_label("Template").select_option(layout.TEMPLATE_NAME)
    student.get_by_label("Security domain").select_option(layout.VLANS[0].domain)
    student.get_by_label("Faculty approver (username)").fill("fred")
    student.locator("#approver-check").filter(has_text="fred").wait_for()
    student.get_by_label("Purpose").fill("operating systems lab")
    shot(student, "1-student-request-form")
    student.get_by_role("button", name="Send the request").click()
    student.get_by_role("cell", name=VM_NAME, exact=True).wait_for()
    shot(student, "2-student-requests")

    # the faculty member verifies, the orgadmin approves
    faculty = new_page(base)
    log_in(faculty, "fred", PASSWORD)
    faculty.get_by_role("link", name="To verify").click()
    faculty.get_by_role("cell", name=VM_NAME, exact=True).wait_for()
    shot(faculty, "3-faculty-to-verify")
    faculty.get_by_role("button", name="Verify").click()
    faculty.locator(".flash.ok").wait_for()
    orgadmin = new_page(base)
    log_in(orgadmin, "olga", PASSWORD)
    orgadmin.get_by_role("link", name="Organisation").click()
    orgadmin.get_by_role("cell", name=VM_NAME, exact=True).wait_for()
    shot(orgadmin, "4-orgadmin-to-approve")
    orgadmin.get_by_role("button", name="Approve").click()
    orgadmin.locator(".flash.ok").wait_for()

    # the admin approves on the admin pages; the creation's progress shows live
    admin = new_page(base)
    log_in(admin, "ada", PASSWORD)
    admin.goto("/admin/requests")
    admin.locator("article", has_text=VM_NAME).get_by_role("button", name="Approve").click()
    flash = admin.locator(".flash.ok").inner_text()
    shot(admin, "5-admin-approved")
    task_id = re.search(r"\(task (\d+)\)", flash)
    assert task_id is not None, flash
    admin.goto("/admin/tasks")
    shot(admin, "6-admin-tasks-running")
    # the row of a task that ended before the page loaded, or its live progress row
    done = admin.locator(
        f"#task-{task_id[1]} .state.success, #progress-task-{task_id[1]} .state.success"
    )
    done.first.wait_for(timeout=TASK_TIMEOUT_S * 1000)
    shot(admin, "7-admin-tasks-done")

    # the student's VM page: its IP answers ping; a snapshot
    with session_scope(lab.engine) as s:
        vm = s.scalars(select(VM).where(VM.vm_name == VM_NAME)).one()
        vm_id, ip = vm.id, vm.private_ip.private_ip
        log = storage.console_log_path(lab.settings, vm.datastore, vm.vm_identity)
    student.goto("/")
    student.get_by_role("link", name=VM_NAME).click()
    student.get_by_role("heading", name=f"VM {VM_NAME}").wait_for()
    assert student.locator("dl.facts dd").filter(has_text=ip).count() == 1
    assert wait_ping(ip, PING_TIMEOUT_S)
    student.get_by_role("button", name="Take a snapshot").click()
    student.locator(".flash.ok").wait_for()
    until(student, student.locator("form[action$='/revert']"), TASK_TIMEOUT_S)
    measurements.collect(lab.engine, SYSTEM, lab.settings)  # the graphs have a point
    student.reload()
    shot(student, "8-student-vm-page")
    shutil.copyfile(artifacts / "8-student-vm-page.png", DOCS / "vm-page.png")

    # the admin's hosts page and the VM's host with its graphs
    admin.goto("/admin/hosts")
    shot(admin, "9-admin-hosts")
    admin.goto("/admin/vms?owner=fred")  # the faculty approver owns it
    admin.locator("td", has_text=VM_NAME).first.wait_for()
    admin.locator("tr", has_text=VM_NAME).locator("a[href^='/admin/hosts/']").click()
    admin.get_by_role("heading", name="VMs on it").wait_for()
    admin.wait_for_load_state("networkidle")
    assert admin.locator(".graphs img").evaluate_all(ALL_DRAWN) == 4  # from the RRD data
    shot(admin, "10-admin-host")
    measurements.measure_network(lab.engine, SYSTEM, lab.settings)  # the hosts' picture
    admin.goto("/admin/monitor?period=hour")
    admin.wait_for_load_state("networkidle")
    controller = admin.locator(".graphs img[src^='/admin/graphs/controller']")
    assert controller.evaluate_all(ALL_DRAWN) == 4
    assert admin.locator("img[src='/admin/network.svg']").evaluate_all(ALL_DRAWN) == 1
    shot(admin, "10-admin-graphs")

    # the console shows the guest
    assert console_line(log, "TINY-READY", BOOT_TIMEOUT_S) is not None
    student.get_by_role("button", name="Console").click()
    student.locator('#console-status[data-state="connected"]').wait_for(
        timeout=DRAW_TIMEOUT_S * 1000
    )
    deadline = time.monotonic() + DRAW_TIMEOUT_S
    seen = _lit_pixels(student)
    while seen["lit"] < MIN_LIT_PIXELS and time.monotonic() < deadline:
        student.wait_for_timeout(500)
        seen = _lit_pixels(student)
    shot(student, "11-student-console")
    assert seen["lit"] >= MIN_LIT_PIXELS, seen

    # the student deletes the VM; it leaves their dashboard
    student.goto(f"/vms/{vm_id}")
    student.get_by_text("Delete the VM…").click()
    student.get_by_label(f"Delete VM {VM_NAME}").check()
    student.get_by_role("button", name="Delete the VM").click()
    student.locator(".flash.ok").wait_for()
    shot(student, "12-student-deleting")
    until(student, student.get_by_text("No VMs yet."), TASK_TIMEOUT_S, "/")
    shot(student, "13-student-dashboard")
