"""A VM's life on the lab through the REST API only, as a script would drive it with an
admin's token: create (queued at once), wait on the task, the VM answers ping, a
snapshot, a VNC console grant that answers from the internet, delete. A real worker
process runs the tasks; the API is the application in-process (httpx)."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from baadal import constants as C
from baadal.api.app import create_app
from baadal.auth.roles import add_membership_db
from baadal.db.models import Organisation, User
from baadal.db.session import dispose_engines, session_scope
from baadal.lab import layout
from baadal.services import tokens
from baadal.services.policy import SYSTEM
from tests.e2e.conftest import Lab, rfb_greeting, wait_ping
from tests.support.workers import start_worker

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

API = C.API_PREFIX
TASK_TIMEOUT_S = 300
PING_TIMEOUT_S = 120


class Script:
    """What a script holds: a client and a token."""

    def __init__(self, client: TestClient, token: str) -> None:
        self.client = client
        self.headers = {"Authorization": f"Bearer {token}"}

    def call(self, method: str, path: str, status: int, **kwargs: object) -> dict:
        response = self.client.request(method, f"{API}{path}", headers=self.headers, **kwargs)
        assert response.status_code == status, f"{method} {path}: {response.text}"
        return response.json() if response.content else {}

    def wait(self, task_id: int) -> dict:
        """Poll the task until it ends; it must have succeeded."""
        deadline = time.monotonic() + TASK_TIMEOUT_S
        while time.monotonic() < deadline:
            task = self.call("GET", f"/tasks/{task_id}", 200)
            if task["ended"]:
                assert task["status"] == "success", task
                return task
            time.sleep(0.5)
        raise AssertionError(f"task {task_id} did not end in {TASK_TIMEOUT_S} s")

    def queued(self, method: str, path: str, **kwargs: object) -> dict:
        """A 202: follow its Location to the task's end."""
        response = self.client.request(method, f"{API}{path}", headers=self.headers, **kwargs)
        assert response.status_code == 202, f"{method} {path}: {response.text}"
        assert response.headers["location"] == f"{API}/tasks/{response.json()['task_id']}"
        return self.wait(response.json()["task_id"])


@pytest.fixture
def script(lab: Lab) -> Iterator[Script]:
    db_url = f"sqlite:///{lab.home / 'baadal.db'}"
    with session_scope(lab.engine) as s:
        org = Organisation(name="APILAB")
        s.add(org)
        s.flush()
        admin = User(username="apiadmin", organisation_id=org.id, email="apiadmin@example.org")
        s.add(admin)
        s.flush()
        add_membership_db(s, admin.id, (C.Role.ADMIN, C.Role.USER))
        token = tokens.create_token(s, SYSTEM, username="apiadmin", expires_days=1).token
    settings = lab.settings.model_copy(deep=True)
    settings.database.url = db_url
    worker: subprocess.Popen[bytes] = start_worker(db_url, lab.home, "e2e-api", until_idle=False)
    try:
        with TestClient(create_app(settings), raise_server_exceptions=False) as client:
            yield Script(client, token)
    finally:
        worker.send_signal(signal.SIGTERM)
        out, _ = worker.communicate(timeout=120)
        print(out.decode(errors="replace")[-2000:])
        dispose_engines()


def test_a_vm_s_life_through_the_api(script: Script) -> None:
    t0 = time.monotonic()
    body = {
        "name": "apivm",
        "template": layout.TEMPLATE_NAME,
        "security_domain": layout.VLANS[0].domain,
        "purpose": "driven by the REST API",
    }
    made = script.call("POST", "/vms", 201, json=body)
    assert made["status"] == "in_queue" and made["task_id"], made
    vm_id = script.wait(made["task_id"])["vm_id"]
    vm = script.call("GET", f"/vms/{vm_id}", 200)
    assert (vm["name"], vm["status"], vm["owner"]) == ("apivm", "running", "apiadmin")
    assert vm["private_ip"].startswith("10.99.10."), vm
    assert wait_ping(vm["private_ip"], PING_TIMEOUT_S)
    created = time.monotonic() - t0

    script.queued("POST", f"/vms/{vm_id}/actions/snapshot")
    snapshots = script.call("GET", f"/vms/{vm_id}/snapshots", 200)["items"]
    assert [s["type"] for s in snapshots] == ["user"]

    grant = script.call("POST", f"/vms/{vm_id}/vnc", 201, json={"duration_s": 300})
    assert grant["password"] and grant["port"] > 0
    assert rfb_greeting(grant["vnc_ip"], grant["port"]).stdout.startswith("RFB ")

    script.queued("POST", f"/vms/{vm_id}/actions/delete")
    script.call("GET", f"/vms/{vm_id}", 404)
    assert "apivm" not in {v["name"] for v in script.call("GET", "/vms", 200)["items"]}
    print(
        f"\nAPI: create -> answers ping {created:.1f} s; whole life {time.monotonic() - t0:.1f} s"
    )
