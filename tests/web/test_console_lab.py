"""The console in the browser on the lab: a user logs in to the portal (``baadal serve``
as a process, with its websockify), clicks Console on a running VM's page, and noVNC in
Debian's Chromium shows the guest's VGA text (its TINY-READY line and a shell prompt):
the canvas must hold far more lit pixels than a blank one. The screenshot goes to the
test's artifacts and to docs/console.png. The same token, used again from the page, is
refused before its WebSocket opens.

Run it alone, under the lab lock: ``flock /tmp/baadal-lab.lock pytest tests/web/test_console_lab.py``.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from baadal import constants as C
from baadal.auth.accounts import hash_password
from baadal.db.models import VM, User, UserVMMap
from baadal.db.session import session_scope
from baadal.lab import layout
from baadal.lab.guest import console_line
from baadal.vm import storage
from tests.e2e.conftest import Lab, create_vm, lab  # noqa: F401 - the lab fixture

pytestmark = [pytest.mark.web, pytest.mark.e2e, pytest.mark.slow]

DOCS = Path(__file__).resolve().parents[2] / "docs"
BOOT_TIMEOUT_S = 90
#: how long noVNC may take to connect and draw the guest's text
DRAW_TIMEOUT_S = 60
PASSWORD = "console test password"
#: lit pixels (any colour channel above 64) of the console's canvas: a blank (black)
#: console has none; two lines of 80x25 VGA text have thousands
LIT_PIXELS_JS = """(canvas) => {
    const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
    let lit = 0;
    for (let i = 0; i < data.length; i += 4) {
        if (data[i] > 64 || data[i + 1] > 64 || data[i + 2] > 64) lit++;
    }
    return {lit: lit, width: canvas.width, height: canvas.height};
}"""
#: opens a WebSocket to URL and tells whether it opened or was closed first
SECOND_USE_JS = """(url) => new Promise((resolve) => {
    const socket = new WebSocket(url);
    socket.onopen = () => { socket.close(); resolve("opened"); };
    socket.onclose = () => resolve("refused");
})"""
MIN_LIT_PIXELS = 1000


def _user_of_vm(cloud: Lab, vm_id: int, username: str) -> None:
    with session_scope(cloud.engine) as s:
        user = User(
            username=username,
            password=hash_password(PASSWORD),
            registration_key=C.RegistrationKey.ACTIVE,
        )
        s.add(user)
        s.flush()
        s.add(UserVMMap(user_id=user.id, vm_id=vm_id))


def _lit_pixels(page: Any) -> dict[str, int]:
    return page.locator("#console-screen canvas").evaluate(LIT_PIXELS_JS)


def test_the_console_shows_the_guest_in_chromium(
    lab: Lab,  # noqa: F811 - the imported fixture
    serve: Any,
    new_page: Any,
    artifacts: Path,
) -> None:
    vm_id = create_vm(lab, "con1", layout.VLANS[0].domain, "lab-h1")
    with session_scope(lab.engine) as s:
        vm = s.get(VM, vm_id)
        log = storage.console_log_path(lab.settings, vm.datastore, vm.vm_identity)
    assert console_line(log, "TINY-READY", BOOT_TIMEOUT_S) is not None
    _user_of_vm(lab, vm_id, "stu")

    page = new_page(serve(lab.home))
    sockets: list[str] = []
    page.on("websocket", lambda ws: sockets.append(ws.url))
    page.goto("/login")
    page.get_by_label("Username").fill("stu")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.goto(f"/vms/{vm_id}")
    page.get_by_role("button", name="Console").click()
    page.locator('#console-status[data-state="connected"]').wait_for(timeout=DRAW_TIMEOUT_S * 1000)
    assert "password" not in page.url and len(sockets) == 1
    assert sockets[0].startswith("ws://127.0.0.1:") and C.CONSOLE_WEBSOCKET_PATH in sockets[0]

    # wait for the guest's text on the canvas (noVNC draws as updates arrive)
    deadline = time.monotonic() + DRAW_TIMEOUT_S
    seen = _lit_pixels(page)
    while seen["lit"] < MIN_LIT_PIXELS and time.monotonic() < deadline:
        page.wait_for_timeout(500)
        seen = _lit_pixels(page)
    page.screenshot(path=str(artifacts / "console.png"), full_page=True)
    print(f"\nconsole canvas {seen['width']}x{seen['height']}: {seen['lit']} lit pixels")
    assert seen["lit"] >= MIN_LIT_PIXELS, seen
    shutil.copyfile(artifacts / "console.png", DOCS / "console.png")

    # the page's token was used by its connection: the same URL again is refused
    assert page.evaluate(SECOND_USE_JS, sockets[0]) == "refused"
    assert page.locator("#console-status").get_attribute("data-state") == "connected"
