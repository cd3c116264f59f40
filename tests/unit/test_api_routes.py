"""Every route over HTTP against the authorization world (tests/unit/test_authorization):
a happy path, bad input (422, nothing changed), a missing object (404), no token (401)
and the wrong person (403, nothing changed)."""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest
from fastapi.testclient import TestClient
from httpx import Response
from pydantic_core import to_json
from sqlalchemy import Engine, event, func, select, update

from baadal import constants as C
from baadal.api import callers as callers_module
from baadal.api.app import create_app
from baadal.api.callers import Caller
from baadal.api.schemas import VM_OUT_FIELDS, VMOut, vm_out
from baadal.config import Settings
from baadal.db.models import VM, ApiToken, RequestQueue, Snapshot, Task, User, VncAccess
from baadal.db.session import session_scope
from baadal.services import runtime, tokens, vms
from baadal.services.policy import SYSTEM, actor_for
from baadal.vm import console as vm_console
from tests.support.statements import watch
from tests.unit.test_authorization import (  # noqa: F401 (fixtures)
    ACTORS,
    fingerprint,
    world_engine,
    world_template,
)

pytestmark = pytest.mark.unit

API = C.API_PREFIX


#: only a safety net against a hung test: the assertions use the order of events
_SAFETY_S = 60


@dataclass
class Api:
    client: TestClient
    engine: Engine
    root: Path
    tokens: dict[str, str]

    def call(self, method: str, path: str, who: str | None, **kwargs: object) -> Response:
        headers = {"Authorization": f"Bearer {self.tokens[who]}"} if who else {}
        return self.client.request(method, f"{API}{path}", headers=headers, **kwargs)

    def state(self) -> str:
        return fingerprint(self.engine, self.root)

    def vm_id(self, name: str = "web") -> int:
        with session_scope(self.engine) as s:
            return s.scalar(select(VM.id).where(VM.vm_name == name))


@pytest.fixture(name="api")
def api_world(world_engine: tuple[Engine, Path], settings: Settings) -> Iterator[Api]:  # noqa: F811
    engine, root = world_engine
    settings.database.url = engine.url.render_as_string(hide_password=False)
    with session_scope(engine) as s:
        made = {who: tokens.create_token(s, SYSTEM, username=who).token for who in ACTORS}
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        world = Api(client, engine, root, made)
        for who in ACTORS:  # each token's first use records it; later calls change nothing
            world.call("GET", "/me", who)
        yield world


def assert_problem(response: Response, status: int, detail: str = "") -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert set(body) == {"type", "title", "status", "detail"}
    assert body["status"] == status
    assert "\n" not in body["detail"] and "Traceback" not in body["detail"]
    assert detail in body["detail"], body["detail"]


def refused_unchanged(api: Api, method: str, path: str, who: str, **kwargs: object) -> None:
    before = api.state()
    assert_problem(api.call(method, path, who, **kwargs), 403, who)
    assert api.state() == before


ROUTES = [
    ("GET", "/me"),
    ("GET", "/vms"),
    ("GET", "/vms/1"),
    ("POST", "/vms"),
    ("POST", "/vms/1/actions/start"),
    ("GET", "/vms/1/snapshots"),
    ("POST", "/vms/1/snapshots/1/revert"),
    ("DELETE", "/vms/1/snapshots/1"),
    ("POST", "/vms/1/vnc"),
    ("GET", "/vms/1/users"),
    ("POST", "/vms/1/users"),
    ("DELETE", "/vms/1/users/col"),
    ("GET", "/tasks"),
    ("GET", "/tasks/1"),
    ("GET", "/tasks/1/events"),
    ("POST", "/tasks/1/retry"),
    ("POST", "/tasks/1/ignore"),
    ("GET", "/requests"),
    ("POST", "/requests"),
    ("GET", "/requests/1"),
    ("POST", "/requests/1/verify"),
    ("POST", "/requests/1/approve"),
    ("POST", "/requests/1/reject"),
    ("POST", "/requests/1/withdraw"),
    ("GET", "/tokens"),
    ("POST", "/tokens"),
    ("POST", "/tokens/1/revoke"),
    ("GET", "/hosts"),
    ("GET", "/hosts/1"),
    ("GET", "/audit"),
]


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_without_a_valid_token_every_route_is_401(api: Api, method: str, path: str) -> None:
    before = api.state()
    for headers in ({}, {"Authorization": "Bearer bdl_" + "x" * 43}, {"Authorization": "Basic x"}):
        response = api.client.request(method, f"{API}{path}", headers=headers, json={})
        assert_problem(response, 401, "API token")
        assert response.headers["www-authenticate"].startswith("Bearer")
    assert api.state() == before


def test_me(api: Api) -> None:
    body = api.call("GET", "/me", "oa").json()
    assert body["username"] == "oa" and "orgadmin" in body["roles"]


def test_a_blocked_account_is_refused(api: Api) -> None:
    assert_problem(api.call("GET", "/me", "blk"), 403, "blk is blocked")


# --- VMs ---------------------------------------------------------------------------


def test_vm_list_shows_what_the_caller_may_see(api: Api) -> None:
    names = {
        who: [v["name"] for v in api.call("GET", "/vms", who).json()["items"]]
        for who in ACTORS[:-1]
    }
    assert names["stu"] == ["web"] and names["admin"] == ["web"]
    assert names["eve"] == [] and names["ob"] == []
    page = api.call("GET", "/vms", "stu", params={"status": "running", "owner": "fac"}).json()
    assert page == {"items": [page["items"][0]], "next": None}
    assert page["items"][0]["owner"] == "fac" and page["items"][0]["id"] == api.vm_id()
    assert api.call("GET", "/vms", "admin", params={"status": "shutdown"}).json()["items"] == []
    assert api.call("GET", "/vms", "admin", params={"owner": "stu"}).json()["items"] == []


@contextmanager
def database_work() -> Iterator[Counter[str]]:
    """The SQL statements (BEGIN and PRAGMAs included) and transactions run meanwhile."""
    seen: Counter[str] = Counter()

    def statement(text: str) -> None:
        seen["statements"] += 1

    def transaction(*_args: object) -> None:
        seen["transactions"] += 1

    stop = watch(Engine, statement)
    event.listen(Engine, "begin", transaction)
    try:
        yield seen
    finally:
        stop()
        event.remove(Engine, "begin", transaction)


@pytest.mark.parametrize(
    ("who", "path", "statements"),
    [
        # BEGIN (a snapshot, no lock), the token with its holder's roles, the page
        ("admin", "/vms?limit=100", 3),
        ("stu", "/vms?limit=100", 3),
        # ... or the VM, the policy's filter in its query
        ("admin", "/vms/{id}", 3),
        ("stu", "/vms/{id}", 3),
    ],
)
def test_a_vm_read_is_one_transaction_of_few_statements(
    api: Api, who: str, path: str, statements: int
) -> None:
    """The busiest reads: the token is checked in the route's own read transaction (the
    counts show a regression: a second transaction, a query per row, a write)."""
    path = path.format(id=api.vm_id())
    with database_work() as seen:
        assert api.call("GET", path, who).status_code == 200
    assert seen == {"statements": statements, "transactions": 1}


def test_a_stale_tokens_use_is_recorded_after_the_read(api: Api) -> None:
    """A read session cannot write: last_used, due once a minute, is a write of its own."""
    unused = select(func.count()).select_from(ApiToken).where(ApiToken.last_used.is_(None))
    with session_scope(api.engine) as s:
        s.execute(update(ApiToken).values(last_used=None))
        before = s.scalar(unused)
    with database_work() as seen:
        assert api.call("GET", "/vms", "stu").status_code == 200
    assert seen["transactions"] == 2
    with session_scope(api.engine) as s:
        assert s.scalar(unused) == before - 1


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 0},
        {"limit": C.API_PAGE_MAX + 1},
        {"after": -1},
        {"status": "sleeping"},
        {"after": "x"},
    ],
)
def test_vm_list_bad_input_is_422(api: Api, params: dict[str, object]) -> None:
    assert_problem(api.call("GET", "/vms", "stu", params=params), 422, "query.")


def test_a_tokens_read_of_sqlite_runs_on_the_event_loop_and_its_use_on_a_thread(
    api: Api, settings: Settings
) -> None:
    """A read of a local database runs on the loop's own thread; recording the token's
    last use (a write, which may wait for the write lock) does not."""
    threads: dict[str, int] = {}
    record_use = tokens.record_use

    def recording(session: object, token_id: int) -> None:
        threads["record"] = threading.get_ident()
        record_use(session, token_id)

    def read(session: object) -> int:
        threads["read"] = threading.get_ident()
        return 1

    async def main() -> None:
        threads["loop"] = threading.get_ident()
        with session_scope(api.engine) as s:  # the token's last use is due again
            s.execute(update(ApiToken).values(last_used=None))
        assert await Caller(settings, api.tokens["stu"]).read(read) == 1

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tokens, "record_use", recording)
        anyio.run(main)
    assert threads["read"] == threads["loop"] != threads["record"]
    with session_scope(api.engine) as s:
        used = s.scalars(select(ApiToken.id).where(ApiToken.last_used.is_not(None))).all()
        assert used == [tokens.token_holder(s, api.tokens["stu"]).token_id]


def test_busy_reads_run_on_a_few_threads_off_the_event_loop(
    api: Api, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Six reads at once of a database server: API_READ_THREADS of them run, on threads
    other than the event loop's, and the others wait for a reading thread (not for the
    pool's forty)."""
    monkeypatch.setattr(runtime, "reads_are_local", lambda settings: False)
    lock, release = threading.Lock(), threading.Event()
    running: list[int] = []
    peak = [0]

    def read(_session: object) -> int:
        with lock:
            running.append(threading.get_ident())
            peak[0] = max(peak[0], len(running))
        release.wait(_SAFETY_S)
        with lock:
            running.remove(threading.get_ident())
        return threading.get_ident()

    async def main() -> None:
        loop_thread = threading.get_ident()
        callers = [Caller(settings, api.tokens["admin"]) for _ in range(6)]
        async with anyio.create_task_group() as group:
            for who in callers:
                group.start_soon(who.read, read)
            queue = callers_module._reading_threads()._work_queue
            try:  # the reading threads first check the token: wait until they read
                with anyio.fail_after(_SAFETY_S):
                    while (
                        queue.qsize() < 6 - C.API_READ_THREADS or len(running) < C.API_READ_THREADS
                    ):
                        await anyio.sleep(0.01)
                assert len(running) == C.API_READ_THREADS
                assert loop_thread not in running
            finally:
                release.set()
        assert peak[0] == C.API_READ_THREADS

    anyio.run(main)


def test_vm_out_is_what_the_model_says(api: Api) -> None:
    """The busiest reads build their bodies without the model: they must say the same."""
    with session_scope(api.engine) as s:
        rows = vms.list_vm_page(s, SYSTEM, limit=C.API_PAGE_MAX).items
    assert rows
    for row in rows:
        wire = json.loads(to_json(vm_out(row)))
        assert wire == VMOut.model_validate(wire).model_dump(mode="json")
        assert set(wire) == set(VMOut.model_fields)
        assert wire["status"] == row.status.name.lower()


def test_the_databases_json_page_is_what_vm_out_makes(api: Api) -> None:
    """The VM list's items are written by the database (PostgreSQL:
    tests/integration/test_list_pages_postgres.py)."""
    json_pages_match(api.engine)


def json_pages_match(engine: Engine) -> None:
    """The database's JSON page has the objects :func:`vm_out` makes of the Python page,
    in the same order, over every page size, filter and actor, with the same ``next``."""
    with session_scope(engine) as s:
        stu = s.scalar(select(User.id).where(User.username == "stu"))
        for i, status in enumerate((C.VMStatus.SHUTDOWN, C.VMStatus.RUNNING, C.VMStatus.SUSPENDED)):
            s.add(VM(vm_name=f"json{i}", vm_identity=f"x~stu~json{i}", RAM=512, vCPU=2,
                     extra_HDD=i, owner_id=stu, status=status))  # fmt: skip
    with session_scope(engine) as s:
        everything = vms.list_vm_page(s, SYSTEM, limit=C.API_PAGE_MAX).items
        locked = everything[0].id
        s.execute(update(VM).where(VM.id == locked).values(locked=True))
    with session_scope(engine) as s:
        cases = [{"limit": n} for n in range(1, len(everything) + 2)]
        cases += [
            {"after": everything[1].id, "limit": 1},
            {"owner": "fac"},
            {"status": C.VMStatus.RUNNING},
        ]
        cases += [{"owner": "nobody"}, {"after": C.ROW_ID_MAX}]
        for args in cases:
            for actor in (SYSTEM, actor_for(s, "stu"), actor_for(s, "oa")):
                page = vms.list_vm_page(s, actor, **args)
                as_json = vms.list_vm_page_json(s, actor, VM_OUT_FIELDS, **args)
                assert json.loads(as_json.items) == [
                    json.loads(to_json(vm_out(vm))) for vm in page.items
                ]
                assert as_json.next == page.next, args
        first = json.loads(vms.list_vm_page_json(s, SYSTEM, VM_OUT_FIELDS).items)[0]
    assert first["locked"] is True and first["id"] == locked


def test_show_a_vm(api: Api) -> None:
    vm_id = api.vm_id()
    body = api.call("GET", f"/vms/{vm_id}", "col").json()
    assert body["name"] == "web" and body["owner"] == "fac" and body["status"] == "running"
    refused_unchanged(api, "GET", f"/vms/{vm_id}", "eve")
    refused_unchanged(api, "GET", f"/vms/{vm_id}", "ob")
    assert_problem(api.call("GET", "/vms/999999", "admin"), 404, "999999")
    assert_problem(api.call("GET", "/vms/web", "admin"), 422, "path.vm_id")
    assert_problem(api.call("GET", f"/vms/{2**40}", "admin"), 422, "path.vm_id")


def test_vm_actions_queue_a_task(api: Api) -> None:
    vm_id = api.vm_id()
    response = api.call("POST", f"/vms/{vm_id}/actions/stop", "stu")
    assert response.status_code == 202, response.text
    task_id = response.json()["task_id"]
    assert response.headers["location"] == f"{API}/tasks/{task_id}"
    task = api.call("GET", f"/tasks/{task_id}", "stu").json()
    assert task["type"] == C.TaskType.STOP_VM and task["status"] == "pending"
    assert task["vm_id"] == vm_id
    snap = api.call("POST", f"/vms/{vm_id}/actions/snapshot", "fac")
    assert snap.status_code == 202
    assert api.call("GET", snap.headers["location"].removeprefix(API), "fac").json()["type"] == (
        C.TaskType.SNAPSHOT_VM
    )


def test_vm_actions_refused_or_bad_change_nothing(api: Api) -> None:
    vm_id = api.vm_id()
    refused_unchanged(api, "POST", f"/vms/{vm_id}/actions/start", "eve")
    before = api.state()
    assert_problem(api.call("POST", f"/vms/{vm_id}/actions/explode", "admin"), 422, "path.action")
    assert_problem(api.call("POST", "/vms/999999/actions/start", "admin"), 404)
    assert api.state() == before


def _snapshot_id(api: Api) -> int:
    with session_scope(api.engine) as s:
        return s.scalar(select(Snapshot.id).where(Snapshot.snapshot_name == "s1"))


def test_snapshots_list_revert_and_delete(api: Api) -> None:
    vm_id, snap_id = api.vm_id(), _snapshot_id(api)
    listed = api.call("GET", f"/vms/{vm_id}/snapshots", "col").json()
    assert [(s["id"], s["name"], s["type"]) for s in listed["items"]] == [(snap_id, "s1", "user")]
    refused_unchanged(api, "GET", f"/vms/{vm_id}/snapshots", "eve")
    assert_problem(api.call("GET", "/vms/999999/snapshots", "admin"), 404)
    for method, path in (
        ("POST", f"/vms/{vm_id}/snapshots/{snap_id}/revert"),
        ("DELETE", f"/vms/{vm_id}/snapshots/{snap_id}"),
    ):
        refused_unchanged(api, method, path, "eve")
        refused_unchanged(api, method, path, "ob")
        before = api.state()
        assert_problem(api.call(method, path.replace(str(snap_id), "999999"), "stu"), 404)
        assert_problem(api.call(method, path.replace(str(snap_id), "s1"), "stu"), 422)
        assert api.state() == before
        response = api.call(method, path, "stu")
        assert response.status_code == 202, response.text
        task = api.call("GET", response.headers["location"].removeprefix(API), "stu").json()
        assert task["id"] == response.json()["task_id"]
        assert task["parameters"]["snapshot_id"] == snap_id and task["vm_id"] == vm_id
    types = [t["type"] for t in api.call("GET", "/tasks", "admin").json()["items"][:2]]
    assert types == [C.TaskType.DELETE_SNAPSHOT, C.TaskType.REVERT_TO_SNAPSHOT]


def test_vnc_grant_shows_the_password_once_and_never_logs_it(
    api: Api, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    vm_id = api.vm_id()
    refused_unchanged(api, "POST", f"/vms/{vm_id}/vnc", "eve")
    before = api.state()
    assert_problem(api.call("POST", "/vms/999999/vnc", "stu"), 404)
    body = {"duration_s": C.VNC_ACCESS_MAX_DURATION_S + 1}
    assert_problem(api.call("POST", f"/vms/{vm_id}/vnc", "stu", json=body), 422, "duration_s")
    # the world's host has no domain for the VM: the host's failure is not counted
    assert_problem(api.call("POST", f"/vms/{vm_id}/vnc", "stu"), 502, "no such domain")
    assert api.state() == before
    monkeypatch.setattr(vm_console, "set_new_password", lambda *_args: "pw-0123456789")
    with caplog.at_level("DEBUG"):
        response = api.call("POST", f"/vms/{vm_id}/vnc", "stu", json={"duration_s": 60})
    assert response.status_code == 201, response.text
    grant = response.json()
    assert grant["vm_id"] == vm_id and grant["port"] == 5901
    assert grant["password"] == "pw-0123456789" and "pw-0123456789" not in caplog.text
    with session_scope(api.engine) as s:
        assert s.scalar(select(func.count()).select_from(VncAccess)) == 1
    assert api.call("POST", f"/vms/{vm_id}/vnc", "col").status_code == 201


def test_vm_users_list_add_and_remove(api: Api) -> None:
    vm_id = api.vm_id()
    users = api.call("GET", f"/vms/{vm_id}/users", "col").json()["items"]
    assert [(u["username"], u["owner"]) for u in users] == [
        ("blk", False),
        ("col", False),
        ("fac", True),
        ("stu", False),
    ]
    refused_unchanged(api, "GET", f"/vms/{vm_id}/users", "eve")
    refused_unchanged(api, "POST", f"/vms/{vm_id}/users", "stu", json={"username": "eve"})
    refused_unchanged(api, "POST", f"/vms/{vm_id}/users", "fac", json={"username": "ob"})
    refused_unchanged(api, "DELETE", f"/vms/{vm_id}/users/col", "col")
    before = api.state()
    assert_problem(api.call("POST", f"/vms/{vm_id}/users", "fac", json={}), 422, "body.username")
    assert_problem(api.call("POST", "/vms/999999/users", "fac", json={"username": "eve"}), 404)
    assert_problem(api.call("POST", f"/vms/{vm_id}/users", "fac", json={"username": "no"}), 404)
    assert_problem(api.call("POST", f"/vms/{vm_id}/users", "fac", json={"username": "stu"}), 409)
    assert_problem(api.call("DELETE", f"/vms/{vm_id}/users/fac", "fac"), 409, "owns")
    assert_problem(api.call("DELETE", f"/vms/{vm_id}/users/eve", "fac"), 404, "eve")
    assert api.state() == before
    assert api.call("POST", f"/vms/{vm_id}/users", "fac", json={"username": "eve"}).status_code == (
        204
    )
    assert api.call("GET", f"/vms/{vm_id}", "eve").json()["name"] == "web"
    assert api.call("DELETE", f"/vms/{vm_id}/users/eve", "oa").status_code == 204
    refused_unchanged(api, "GET", f"/vms/{vm_id}", "eve")


def test_create_a_vm_is_a_request(api: Api) -> None:
    body = {"name": "new1", "template": "tiny", "approver": "fac", "security_domain": "research"}
    response = api.call("POST", "/vms", "stu", json=body)
    assert response.status_code == 201, response.text
    made = response.json()
    assert made["status"] == "requested" and made["owner"] == "fac" and made["vm_name"] == "new1"
    assert response.headers["location"] == f"{API}/requests/{made['id']}"
    assert api.call("GET", f"/requests/{made['id']}", "fac").json()["id"] == made["id"]


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ({"name": "x", "template": "tiny", "ram_mb": 0}, "body.ram_mb"),
        ({"template": "tiny"}, "body.name"),
        ({"name": "x", "template": "tiny", "colour": "red"}, "body.colour"),
        ({"name": "bad name!", "template": "tiny", "approver": "fac"}, "body.name"),
        ({"name": "x", "template": "tiny", "ram_mb": 300}, "body.ram_mb"),
        ({"name": "x", "template": "tiny", "purpose": "a\u0007"}, "body.purpose"),
        ({"name": "x", "template": "tiny", "vcpus": "many"}, "body.vcpus"),
        ({"name": "x", "template": "tiny", "extra_disk_gb": True}, "body.extra_disk_gb"),
        ({"name": "x", "template": "tiny", "extra_disk_gb": "5"}, "body.extra_disk_gb"),
    ],
)
def test_create_bad_input_is_422_and_changes_nothing(api: Api, body: dict, detail: str) -> None:
    before = api.state()
    assert_problem(api.call("POST", "/vms", "stu", json=body), 422, detail)
    assert api.state() == before


def test_create_with_a_missing_template_is_404(api: Api) -> None:
    before = api.state()
    body = {"name": "x", "template": "nonesuch", "approver": "fac"}
    assert_problem(api.call("POST", "/requests", "stu", json=body), 404, "nonesuch")
    assert api.state() == before


# --- tasks -------------------------------------------------------------------------


def test_tasks(api: Api) -> None:
    with session_scope(api.engine) as s:
        task_id = s.scalar(select(Task.id))
    listed = api.call("GET", "/tasks", "stu").json()
    assert [t["id"] for t in listed["items"]] == [task_id] and listed["next"] is None
    assert api.call("GET", "/tasks", "eve").json()["items"] == []
    failed = api.call("GET", "/tasks", "admin", params={"status": "failed"}).json()["items"]
    assert [t["message"] for t in failed] == ["failed"]
    assert api.call("GET", f"/tasks/{task_id}", "col").json()["status"] == "failed"
    refused_unchanged(api, "GET", f"/tasks/{task_id}", "eve")
    assert_problem(api.call("GET", "/tasks/999999", "admin"), 404)
    assert_problem(api.call("GET", "/tasks", "admin", params={"status": "late"}), 422)
    assert_problem(api.call("GET", "/tasks", "admin", params={"limit": 10**6}), 422)


def _failed_task(api: Api) -> int:
    with session_scope(api.engine) as s:
        return s.scalar(select(Task.id).where(Task.status == C.TaskStatus.FAILED))


def test_retry_a_task_queues_it_again_and_records_an_event(api: Api) -> None:
    task_id = _failed_task(api)
    for who in ("oa", "fac", "stu", "col", "eve"):
        refused_unchanged(api, "POST", f"/tasks/{task_id}/retry", who)
    before = api.state()
    assert_problem(api.call("POST", "/tasks/999999/retry", "admin"), 404, "999999")
    assert_problem(api.call("POST", "/tasks/0/retry", "admin"), 422, "path.task_id")
    assert api.state() == before
    response = api.call("POST", f"/tasks/{task_id}/retry", "admin")
    assert response.status_code == 202, response.text
    assert response.json() == {"task_id": task_id}
    assert response.headers["location"] == f"{API}/tasks/{task_id}"
    assert api.call("GET", f"/tasks/{task_id}", "stu").json()["status"] == "retry"
    events = api.call("GET", f"/tasks/{task_id}/events", "col").json()
    assert [e["status"] for e in events["items"]] == ["retry"] and events["next"] is None
    assert_problem(api.call("POST", f"/tasks/{task_id}/retry", "admin"), 409, "RETRY")


def test_ignore_a_task(api: Api) -> None:
    task_id = _failed_task(api)
    refused_unchanged(api, "POST", f"/tasks/{task_id}/ignore", "oa")
    refused_unchanged(api, "POST", f"/tasks/{task_id}/ignore", "stu")
    assert_problem(api.call("POST", "/tasks/999999/ignore", "admin"), 404)
    response = api.call("POST", f"/tasks/{task_id}/ignore", "admin")
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "ignore"
    events = api.call("GET", f"/tasks/{task_id}/events", "stu").json()["items"]
    assert [e["status"] for e in events] == ["ignore"] and events[0]["end_time"]
    assert_problem(api.call("POST", f"/tasks/{task_id}/ignore", "admin"), 409, "IGNORE")


def test_task_events_are_for_those_who_see_the_task(api: Api) -> None:
    task_id = _failed_task(api)
    assert api.call("GET", f"/tasks/{task_id}/events", "stu").json() == {"items": [], "next": None}
    refused_unchanged(api, "GET", f"/tasks/{task_id}/events", "eve")
    assert_problem(api.call("GET", "/tasks/999999/events", "admin"), 404)
    assert_problem(api.call("GET", "/tasks/x/events", "admin"), 422, "path.task_id")


# --- requests ----------------------------------------------------------------------


def _request(api: Api) -> int:
    body = {"name": "asked", "template": "tiny", "approver": "fac", "security_domain": "research"}
    response = api.call("POST", "/requests", "stu", json=body)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def test_the_approval_chain(api: Api) -> None:
    request_id = _request(api)
    assert [r["id"] for r in api.call("GET", "/requests", "stu").json()["items"]] == [request_id]
    assert api.call("GET", "/requests", "eve").json()["items"] == []
    # the orgadmin sees the organisation's request, but it is not one of theirs
    assert [r["id"] for r in api.call("GET", "/requests", "oa").json()["items"]] == [request_id]
    mine = {"mine": True}
    assert api.call("GET", "/requests", "oa", params=mine).json()["items"] == []
    assert [r["id"] for r in api.call("GET", "/requests", "stu", params=mine).json()["items"]] == [
        request_id
    ]
    refused_unchanged(api, "POST", f"/requests/{request_id}/verify", "eve")
    refused_unchanged(api, "POST", f"/requests/{request_id}/approve", "fac")
    verified = api.call("POST", f"/requests/{request_id}/verify", "fac")
    assert verified.json()["status"] == "verified", verified.text
    assert_problem(api.call("POST", f"/requests/{request_id}/verify", "fac"), 409, "VERIFIED")
    refused_unchanged(api, "POST", f"/requests/{request_id}/approve", "ob")
    approved = api.call("POST", f"/requests/{request_id}/approve", "oa")
    assert approved.json()["status"] == "approved", approved.text
    pending = api.call("GET", "/requests", "admin", params={"pending": True}).json()["items"]
    assert [r["id"] for r in pending] == [request_id]


def test_reject_and_withdraw(api: Api) -> None:
    request_id = _request(api)
    before = api.state()
    assert_problem(api.call("POST", f"/requests/{request_id}/reject", "fac", json={}), 422)
    assert_problem(
        api.call("POST", f"/requests/{request_id}/reject", "fac", json={"reason": ""}), 422
    )
    assert api.state() == before
    refused_unchanged(api, "POST", f"/requests/{request_id}/withdraw", "fac")
    assert api.call("POST", f"/requests/{request_id}/withdraw", "stu").status_code == 204
    assert_problem(api.call("GET", f"/requests/{request_id}", "stu"), 404)
    assert_problem(api.call("POST", f"/requests/{request_id}/withdraw", "stu"), 404)
    other = _request(api)
    rejected = api.call("POST", f"/requests/{other}/reject", "fac", json={"reason": "no"})
    assert rejected.json()["status"] == "rejected" and rejected.json()["reject_reason"] == "no"
    with session_scope(api.engine) as s:
        assert s.get(RequestQueue, other).status == C.RequestStatus.REJECTED


# --- hosts and the audit log --------------------------------------------------------


def test_hosts_are_for_admins(api: Api) -> None:
    listed = api.call("GET", "/hosts", "admin").json()
    assert [h["name"] for h in listed["items"]] == ["host1", "host2"] and listed["next"] is None
    first = listed["items"][0]
    assert api.call("GET", f"/hosts/{first['id']}", "admin").json() == first
    assert first["status"] in {"up", "down", "maintenance"}
    for who in ("oa", "fac", "stu", "eve"):
        refused_unchanged(api, "GET", "/hosts", who)
        refused_unchanged(api, "GET", f"/hosts/{first['id']}", who)
    assert_problem(api.call("GET", "/hosts/999999", "admin"), 404, "999999")
    assert_problem(api.call("GET", "/hosts/host1", "admin"), 422, "path.host_id")


def test_the_audit_log_shows_each_their_share(api: Api) -> None:
    vm_id = api.vm_id()
    assert api.call("POST", f"/vms/{vm_id}/actions/stop", "stu").status_code == 202
    refused_unchanged(api, "GET", "/hosts", "eve")
    refused_unchanged(api, "GET", "/audit", "blk")
    mine = api.call("GET", "/audit", "stu").json()
    assert mine["next"] is None and {e["actor"] for e in mine["items"]} == {"stu"}
    assert "operate" in {e["function"].rsplit(".", 1)[-1] for e in mine["items"]}
    everything = api.call("GET", "/audit", "admin", params={"user": "eve", "limit": 5}).json()
    assert [e["actor"] for e in everything["items"]] == ["eve"]
    assert everything["items"][0]["outcome"].startswith("refused")
    assert api.call("GET", "/audit", "ob", params={"user": "stu"}).json()["items"] == []
    assert api.call("GET", "/audit", "admin", params={"since": "2999-01-01"}).json() == {
        "items": [],
        "next": None,
    }
    before = api.state()
    for params in ({"limit": 0}, {"limit": C.AUDIT_LIST_MAX + 1}, {"since": "yesterday"}):
        assert_problem(api.call("GET", "/audit", "admin", params=params), 422)
    assert api.state() == before


# --- errors ------------------------------------------------------------------------


def test_an_unexpected_error_is_a_500_without_details(
    api: Api, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from baadal.services import vms

    def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("secret detail")

    monkeypatch.setattr(vms, "list_vm_page_json", broken)
    with caplog.at_level("ERROR"):
        response = api.call("GET", "/vms", "admin")
    assert_problem(response, 500, "RuntimeError")
    assert "secret" not in response.text
    assert "secret detail" in caplog.text and "GET /api/v1/vms" in caplog.text


def test_unknown_paths_and_methods_are_problems(api: Api) -> None:
    assert_problem(api.call("GET", "/nowhere", "admin"), 404)
    assert_problem(api.call("DELETE", "/vms", "admin"), 405)


def test_an_unknown_query_parameter_is_422(api: Api) -> None:
    assert_problem(api.call("GET", "/vms", "admin", params={"stauts": "running"}), 422, "stauts")


def test_a_repeated_query_parameter_is_422(api: Api) -> None:
    response = api.call("GET", "/vms?owner=fac&owner=stu", "admin")
    assert_problem(response, 422, "query.owner: given more than once")
