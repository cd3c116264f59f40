"""The VM changes (edit, public IP, disks, clones: requests, queued at once for admins),
migration, usage averages and graphs, request edit and remind, and the keyset pages of
the task, request, token and audit lists, over HTTP against the authorization world: a
happy path, bad input (422, nothing changed), a missing object (404), no token (401) and
the wrong person (403, nothing changed)."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from httpx import Response
from sqlalchemy import select, update

from baadal import constants as C
from baadal.config import Settings
from baadal.db.models import VM, AttachedDisk, AuditLog, PublicIpPool, RequestQueue, Task
from baadal.db.session import session_scope
from baadal.drivers.base import DomainStats
from baadal.monitor import rrd
from baadal.services import tokens
from baadal.services.policy import SYSTEM
from tests.support.statements import count_statements  # noqa: F401 (the fixture)
from tests.unit.test_api_routes import API, Api, api_world, assert_problem, refused_unchanged
from tests.unit.test_authorization import world_engine, world_template  # noqa: F401

pytestmark = pytest.mark.unit

_ = api_world  # the fixture, used by name

ROUTES = [
    ("PATCH", "/vms/1"),
    ("POST", "/vms/1/public-ip"),
    ("DELETE", "/vms/1/public-ip"),
    ("GET", "/vms/1/disks"),
    ("POST", "/vms/1/disks"),
    ("POST", "/vms/1/clones"),
    ("POST", "/vms/1/migrate"),
    ("GET", "/vms/1/utilization"),
    ("GET", "/vms/1/graphs/cpu"),
    ("PATCH", "/requests/1"),
    ("POST", "/requests/1/remind"),
]


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_without_a_token_the_new_routes_are_401(api: Api, method: str, path: str) -> None:
    before = api.state()
    assert_problem(api.client.request(method, f"{API}{path}", json={}), 401, "API token")
    assert api.state() == before


def _tasks(api: Api) -> list[tuple[str, int | None, dict]]:
    """Each task's type, VM and the parameters it sets (but the VM's id again)."""
    with session_scope(api.engine) as s:
        return [
            (
                t.task_type,
                t.vm_id,
                {k: v for k, v in t.parameters.items() if v is not None and k != "vm_id"},
            )
            for t in s.scalars(select(Task).order_by(Task.id))
        ]


def _followed(api: Api, response: Response, who: str) -> dict:
    """The 202's body, checked against what its Location shows."""
    assert response.status_code == 202, response.text
    body = response.json()
    where = response.headers["location"].removeprefix(API)
    if body["task_id"] is None:
        assert where == f"/requests/{body['id']}"
    else:
        assert where == f"/tasks/{body['task_id']}"
    assert api.call("GET", where, who).status_code == 200
    return body


# --- edit and public IP -------------------------------------------------------------


def test_edit_is_queued_at_once_for_an_admin_and_a_request_for_a_student(api: Api) -> None:
    vm_id = api.vm_id()
    done = _followed(api, api.call("PATCH", f"/vms/{vm_id}", "admin", json={"vcpus": 2}), "admin")
    assert done["status"] == "in_queue" and done["vcpus"] == 2
    assert _tasks(api)[-1] == (C.TaskType.EDIT_VM_CONFIG, vm_id, {"vcpus": 2})
    task = api.call("GET", f"/tasks/{done['task_id']}", "stu").json()
    assert task["status"] == "pending" and task["message"] is None and task["ended"] is False
    failed = api.call("GET", "/tasks", "stu", params={"status": "failed"}).json()["items"]
    assert [(t["ended"], t["message"]) for t in failed] == [(True, "failed")]
    asked = _followed(
        api,
        api.call("PATCH", f"/vms/{vm_id}", "stu", json={"ram_mb": 512, "approver": "fac"}),
        "stu",
    )
    assert asked["kind"] == "edit" and asked["status"] == "requested" and asked["ram_mb"] == 512
    assert asked["task_id"] is None
    again = api.call("PATCH", f"/vms/{vm_id}", "stu", json={"ram_mb": 1024, "approver": "fac"})
    assert_problem(again, 409, "already a pending edit request")


@pytest.mark.parametrize(
    ("who", "body", "status", "detail"),
    [
        ("admin", {"ram_mb": 300}, 422, "body.ram_mb"),
        ("admin", {"vcpus": "2"}, 422, "body.vcpus"),
        ("admin", {"colour": "red"}, 422, "body.colour"),
        ("admin", {}, 422, "nothing to change"),
        ("admin", {"ram_mb": 256}, 422, "nothing to change"),
        ("stu", {"ram_mb": 512}, 422, "approver"),
        ("admin", {"security_domain": "nonesuch"}, 404, "nonesuch"),
    ],
)
def test_edit_bad_input_changes_nothing(
    api: Api, who: str, body: dict, status: int, detail: str
) -> None:
    before = api.state()
    assert_problem(api.call("PATCH", f"/vms/{api.vm_id()}", who, json=body), status, detail)
    assert api.state() == before


def test_edit_refused_or_missing_changes_nothing(api: Api) -> None:
    vm_id = api.vm_id()
    for who in ("eve", "ob"):
        refused_unchanged(api, "PATCH", f"/vms/{vm_id}", who, json={"ram_mb": 512})
    before = api.state()
    assert_problem(api.call("PATCH", "/vms/999999", "admin", json={"ram_mb": 512}), 404)
    assert_problem(api.call("PATCH", "/vms/x", "admin", json={"ram_mb": 512}), 422, "path.vm_id")
    assert api.state() == before


def test_public_ip_attach_and_detach(api: Api) -> None:
    vm_id = api.vm_id()
    refused_unchanged(api, "POST", f"/vms/{vm_id}/public-ip", "eve")
    refused_unchanged(api, "DELETE", f"/vms/{vm_id}/public-ip", "ob")
    with session_scope(api.engine) as s:
        s.execute(update(PublicIpPool).values(is_active=False))
    before = api.state()
    assert_problem(api.call("POST", f"/vms/{vm_id}/public-ip", "admin"), 409, "no public IP")
    assert_problem(api.call("DELETE", f"/vms/{vm_id}/public-ip", "admin"), 422, "nothing")
    assert_problem(api.call("POST", "/vms/999999/public-ip", "admin"), 404)
    body = {"approver": "fac", "purpose": "a\u0007"}
    assert_problem(api.call("POST", f"/vms/{vm_id}/public-ip", "stu", json=body), 422, "purpose")
    assert api.state() == before
    with session_scope(api.engine) as s:
        s.execute(update(PublicIpPool).values(is_active=True))
    done = _followed(api, api.call("POST", f"/vms/{vm_id}/public-ip", "admin"), "admin")
    assert _tasks(api)[-1] == (C.TaskType.EDIT_VM_CONFIG, vm_id, {"public_ip": True})
    assert done["status"] == "in_queue" and done["public_ip"] is True
    asked = _followed(
        api, api.call("POST", f"/vms/{vm_id}/public-ip", "stu", json={"approver": "fac"}), "stu"
    )
    assert asked["status"] == "requested" and asked["task_id"] is None


# --- disks and clones ---------------------------------------------------------------


def test_disks_list_and_attach(api: Api) -> None:
    vm_id = api.vm_id()
    assert api.call("GET", f"/vms/{vm_id}/disks", "col").json() == {"items": [], "next": None}
    with session_scope(api.engine) as s:
        vm = s.get(VM, vm_id)
        s.add(
            AttachedDisk(
                vm_id=vm_id, datastore_id=vm.datastore_id, attached_disk_name="d1", capacity=3
            )
        )
    disks = api.call("GET", f"/vms/{vm_id}/disks", "stu").json()["items"]
    assert [(d["name"], d["size_gb"], d["attached"]) for d in disks] == [("d1", 3, True)]
    refused_unchanged(api, "GET", f"/vms/{vm_id}/disks", "eve")
    refused_unchanged(api, "POST", f"/vms/{vm_id}/disks", "eve", json={"size_gb": 2})
    assert_problem(api.call("GET", "/vms/999999/disks", "admin"), 404)
    before = api.state()
    for body in ({}, {"size_gb": 0}, {"size_gb": C.EXTRA_DISK_GB_RANGE[1] + 1}, {"size_gb": "2"}):
        assert_problem(api.call("POST", f"/vms/{vm_id}/disks", "admin", json=body), 422, "size_gb")
    assert_problem(api.call("POST", "/vms/999999/disks", "admin", json={"size_gb": 2}), 404)
    assert api.state() == before
    done = _followed(
        api, api.call("POST", f"/vms/{vm_id}/disks", "admin", json={"size_gb": 2}), "admin"
    )
    assert done["status"] == "in_queue"
    assert _tasks(api)[-1] == (C.TaskType.ATTACH_DISK, vm_id, {"disk_size": 2})
    asked = _followed(
        api,
        api.call("POST", f"/vms/{vm_id}/disks", "stu", json={"size_gb": 2, "approver": "fac"}),
        "stu",
    )
    assert asked["kind"] == "attach_disk" and asked["status"] == "requested"


def test_clones_of_a_shut_off_vm(api: Api) -> None:
    vm_id = api.vm_id()
    refused_unchanged(api, "POST", f"/vms/{vm_id}/clones", "eve", json={"count": 1})
    before = api.state()
    assert_problem(api.call("POST", f"/vms/{vm_id}/clones", "admin", json={}), 409, "shut off")
    for body in ({"count": 0}, {"count": C.CLONE_COUNT_MAX + 1}, {"count": True}):
        assert_problem(api.call("POST", f"/vms/{vm_id}/clones", "admin", json=body), 422, "count")
    assert_problem(api.call("POST", "/vms/999999/clones", "admin", json={}), 404)
    assert api.state() == before
    with session_scope(api.engine) as s:
        s.execute(update(VM).where(VM.id == vm_id).values(status=C.VMStatus.SHUTDOWN))
    done = _followed(
        api, api.call("POST", f"/vms/{vm_id}/clones", "admin", json={"count": 2}), "admin"
    )
    task_type, task_vm, params = _tasks(api)[-1]
    assert (task_type, task_vm, len(params["clone_vm_id"])) == (C.TaskType.CLONE_VM, vm_id, 2)
    assert done["status"] == "in_queue"
    asked = _followed(
        api,
        api.call("POST", f"/vms/{vm_id}/clones", "stu", json={"count": 2, "approver": "fac"}),
        "stu",
    )
    assert asked["kind"] == "clone" and asked["status"] == "requested"


def test_a_clone_may_be_a_full_copy_and_the_request_keeps_it(api: Api) -> None:
    """Linked clones (overlays) by default; ``full`` asks for standalone copies, kept on
    a request until its approval queues the task."""
    vm_id = api.vm_id()
    with session_scope(api.engine) as s:
        s.execute(update(VM).where(VM.id == vm_id).values(status=C.VMStatus.SHUTDOWN))
    before = api.state()
    for full in ("yes", 1, None):
        body = {"count": 1, "full": full}
        assert_problem(api.call("POST", f"/vms/{vm_id}/clones", "admin", json=body), 422, "full")
    assert api.state() == before
    for body, full in (({"count": 1}, False), ({"count": 1, "full": True}, True)):
        done = _followed(api, api.call("POST", f"/vms/{vm_id}/clones", "admin", json=body), "admin")
        assert (done["clone_count"], done["clone_full"]) == (1, full)
        assert _tasks(api)[-1][2]["full"] is full
        with session_scope(api.engine) as s:  # done: the VM takes the next one
            s.execute(update(Task).values(status=C.TaskStatus.SUCCESS))
    body = {"count": 2, "full": True, "approver": "fac"}
    asked = _followed(api, api.call("POST", f"/vms/{vm_id}/clones", "stu", json=body), "stu")
    assert (asked["clone_count"], asked["clone_full"], asked["task_id"]) == (2, True, None)
    assert api.call("POST", f"/requests/{asked['id']}/verify", "fac").status_code == 200
    approved = api.call("POST", f"/requests/{asked['id']}/approve", "admin").json()
    assert approved["task_id"] is not None
    task_type, _vm, params = _tasks(api)[-1]
    assert (task_type, len(params["clone_vm_id"]), params["full"]) == (C.TaskType.CLONE_VM, 2, True)


# --- migration ----------------------------------------------------------------------


def test_migrate_is_for_admins(api: Api) -> None:
    vm_id = api.vm_id()
    for who in ("oa", "fac", "stu", "eve"):
        refused_unchanged(api, "POST", f"/vms/{vm_id}/migrate", who, json={"host": "host2"})
    before = api.state()
    assert_problem(api.call("POST", "/vms/999999/migrate", "admin"), 404)
    assert_problem(
        api.call("POST", f"/vms/{vm_id}/migrate", "admin", json={"host": "nonesuch"}), 404
    )
    assert_problem(
        api.call("POST", f"/vms/{vm_id}/migrate", "admin", json={"host": ""}), 422, "host"
    )
    assert_problem(
        api.call("POST", f"/vms/{vm_id}/migrate", "admin", json={"live": 1}), 422, "live"
    )
    assert api.state() == before
    response = api.call(
        "POST", f"/vms/{vm_id}/migrate", "admin", json={"host": "host2", "live": False}
    )
    assert response.status_code == 202, response.text
    task = api.call("GET", response.headers["location"].removeprefix(API), "fac").json()
    assert task["id"] == response.json()["task_id"] and task["type"] == C.TaskType.MIGRATE_VM_HOST
    assert task["vm_id"] == vm_id


# --- usage --------------------------------------------------------------------------


def _feed(settings: Settings, api: Api) -> None:
    with session_scope(api.engine) as s:
        identity = s.get(VM, api.vm_id()).vm_identity
    now = int(time.time()) // C.RRD_STEP_S * C.RRD_STEP_S
    for k in range(4):
        sample = DomainStats(int(k * C.RRD_STEP_S * 1e9), 1, 2**28, 1000 * k, 0, 0, 0)
        assert rrd.update_vm_rrd(settings, identity, sample, now - (3 - k) * C.RRD_STEP_S)


def test_utilization_and_graphs(api: Api, settings: Settings) -> None:
    vm_id = api.vm_id()
    assert_problem(api.call("GET", f"/vms/{vm_id}/utilization", "stu"), 404, "no monitoring data")
    assert_problem(api.call("GET", f"/vms/{vm_id}/graphs/cpu", "stu"), 404, "no monitoring data")
    _feed(settings, api)
    used = api.call("GET", f"/vms/{vm_id}/utilization", "col", params={"period": "hour"}).json()
    assert used["period"] == "hour" and used["ram_bytes"] == 2**28 and used["cpu_percent"] > 0
    for metric in ("cpu", "ram", "disk", "nw"):
        response = api.call(
            "GET", f"/vms/{vm_id}/graphs/{metric}", "stu", params={"period": "week"}
        )
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "image/png"
        assert response.content.startswith(b"\x89PNG")
    for path in (f"/vms/{vm_id}/utilization", f"/vms/{vm_id}/graphs/cpu"):
        refused_unchanged(api, "GET", path, "eve")
        refused_unchanged(api, "GET", path, "ob")
        assert_problem(api.call("GET", path, "stu", params={"period": "decade"}), 422, "period")
        assert_problem(api.call("GET", path.replace(str(vm_id), "999999"), "admin"), 404)
    assert_problem(api.call("GET", f"/vms/{vm_id}/graphs/temperature", "stu"), 422, "metric")


# --- requests: edit and remind ------------------------------------------------------


def _request(api: Api) -> int:
    body = {"name": "asked", "template": "tiny", "approver": "fac", "security_domain": "research"}
    response = api.call("POST", "/requests", "stu", json=body)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def test_edit_a_pending_request(api: Api) -> None:
    request_id = _request(api)
    changed = api.call(
        "PATCH", f"/requests/{request_id}", "stu", json={"ram_mb": 512, "purpose": "lab"}
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["ram_mb"] == 512 and changed.json()["purpose"] == "lab"
    assert (
        api.call("PATCH", f"/requests/{request_id}", "fac", json={"vcpus": 2}).json()["vcpus"] == 2
    )
    refused_unchanged(api, "PATCH", f"/requests/{request_id}", "fac", json={"purpose": "mine"})
    refused_unchanged(api, "PATCH", f"/requests/{request_id}", "eve", json={"ram_mb": 1024})
    refused_unchanged(api, "PATCH", f"/requests/{request_id}", "ob", json={"ram_mb": 1024})
    before = api.state()
    for body, detail in (
        ({}, "nothing to change"),
        ({"ram_mb": 3}, "body.ram_mb"),
        ({"clone_count": 2}, "no clone_count"),
        ({"ram_mb": None}, "nothing to change"),
        ({"owner": "eve"}, "body.owner"),
    ):
        assert_problem(api.call("PATCH", f"/requests/{request_id}", "stu", json=body), 422, detail)
    assert_problem(api.call("PATCH", "/requests/999999", "stu", json={"ram_mb": 512}), 404)
    assert api.state() == before
    assert api.call("POST", f"/requests/{request_id}/withdraw", "stu").status_code == 204


def test_remind_once_a_day(api: Api) -> None:
    request_id = _request(api)
    refused_unchanged(api, "POST", f"/requests/{request_id}/remind", "eve")
    assert_problem(api.call("POST", "/requests/999999/remind", "stu"), 404)
    response = api.call("POST", f"/requests/{request_id}/remind", "stu")
    assert response.status_code == 200, response.text
    assert response.json() == {"request_id": request_id, "reminded": "fac"}
    before = api.state()
    assert_problem(api.call("POST", f"/requests/{request_id}/remind", "stu"), 409, "once a day")
    assert api.state() == before


# --- pages --------------------------------------------------------------------------


def _walk(api: Api, path: str, who: str, cursor: str, **params: object) -> list[list[int]]:
    """Every page of a list, following ``next``."""
    pages: list[list[int]] = []
    query: dict[str, object] = dict(params)
    while True:
        body = api.call("GET", path, who, params=query).json()
        pages.append([item["id"] for item in body["items"]])
        if body["next"] is None:
            return pages
        assert body["next"] == pages[-1][-1]
        query[cursor] = body["next"]


def _statements_per_page(
    api: Api, statements: Callable[[], int], path: str, who: str, limit: int
) -> int:
    start = statements()
    assert api.call("GET", path, who, params={"limit": limit}).status_code == 200
    return statements() - start


def test_tasks_come_in_pages_newest_first(api: Api, statements: Callable[[], int]) -> None:
    vm_id = api.vm_id()
    for action in ("stop", "suspend", "destroy", "snapshot"):
        assert api.call("POST", f"/vms/{vm_id}/actions/{action}", "stu").status_code == 202
    everything = api.call("GET", "/tasks", "stu").json()["items"]
    assert len(everything) == 5
    pages = _walk(api, "/tasks", "stu", "before", limit=2)
    assert pages == [[t["id"] for t in everything[i : i + 2]] for i in (0, 2, 4)]
    assert _walk(api, "/tasks", "eve", "before", limit=2) == [[]]
    small = _statements_per_page(api, statements, "/tasks", "stu", 1)
    assert _statements_per_page(api, statements, "/tasks", "stu", 5) == small
    assert_problem(api.call("GET", "/tasks", "stu", params={"before": 0}), 422, "query.before")


def test_requests_come_in_pages_without_a_query_per_request(
    api: Api, statements: Callable[[], int]
) -> None:
    made = []
    for k in range(5):
        body = {"name": f"r{k}", "template": "tiny", "approver": "fac", "collaborators": ["col"]}
        body["security_domain"] = "research"
        made.append(api.call("POST", "/requests", "stu", json=body).json()["id"])
    assert _walk(api, "/requests", "fac", "before", limit=2) == [
        made[4:2:-1],
        made[2:0:-1],
        made[:1],
    ]
    small = _statements_per_page(api, statements, "/requests", "fac", 1)
    assert _statements_per_page(api, statements, "/requests", "fac", 5) == small
    page = api.call("GET", "/requests", "fac", params={"limit": 5}).json()["items"]
    assert {r["collaborators"][0] for r in page} == {"col"} and page[0]["template"] == "tiny"
    assert_problem(api.call("GET", "/requests", "fac", params={"limit": 0}), 422, "query.limit")
    with session_scope(api.engine) as s:
        assert len(s.scalars(select(RequestQueue.id)).all()) == 5


def test_tokens_come_in_pages_oldest_first(api: Api) -> None:
    with session_scope(api.engine) as s:
        for k in range(3):
            tokens.create_token(s, SYSTEM, username="stu", name=f"t{k}")
    everything = [t["id"] for t in api.call("GET", "/tokens", "stu").json()["items"]]
    assert len(everything) == 5 and everything == sorted(everything)
    assert _walk(api, "/tokens", "stu", "after", limit=2) == [
        everything[0:2],
        everything[2:4],
        everything[4:],
    ]
    assert_problem(api.call("GET", "/tokens", "stu", params={"after": -1}), 422, "query.after")


def test_the_audit_log_comes_in_pages_newest_first(api: Api) -> None:
    for _ in range(3):
        api.call("GET", f"/vms/{api.vm_id()}/disks", "eve")  # refused: an entry each
    with session_scope(api.engine) as s:
        mine = s.scalars(
            select(AuditLog.id).where(AuditLog.actor_name == "eve").order_by(AuditLog.id.desc())
        ).all()
    pages = _walk(api, "/audit", "eve", "before", limit=2)
    assert [i for page in pages for i in page] == list(mine) and len(pages[0]) == 2
    assert_problem(api.call("GET", "/audit", "eve", params={"before": "x"}), 422, "query.before")


def test_vm_pages_and_a_vm_cost_the_same_few_statements_however_many_rows(
    api: Api, statements: Callable[[], int]
) -> None:
    web = api.vm_id()
    with session_scope(api.engine) as s:
        row = s.get(VM, web)
        for k in range(5):
            s.add(
                VM(
                    vm_name=f"more{k}", vm_identity=f"ORG_A_fac_more{k}", RAM=256, vCPU=1,
                    owner_id=row.owner_id, host_id=row.host_id, status=C.VMStatus.SHUTDOWN,
                )
            )  # fmt: skip
    small = _statements_per_page(api, statements, "/vms", "admin", 1)
    assert _statements_per_page(api, statements, "/vms", "admin", 6) == small
    pages = _walk(api, "/vms", "admin", "after", limit=4)
    assert [len(page) for page in pages] == [4, 2] and pages[0][0] == web
    page = api.call("GET", "/vms", "admin", params={"host": "host1"}).json()["items"]
    assert {(v["owner"], v["host"], v["status"]) for v in page[1:]} == {
        ("fac", "host1", "shutdown")
    }
    start = statements()
    shown = api.call("GET", f"/vms/{web}", "admin").json()
    assert statements() - start <= small + 1
    assert shown == page[0]
