"""The admin side of the API over HTTP, on the authorization world: hosts, datastores,
templates, security domains, pools, users, quotas, organisations, the cloud, the host
network graph and /metrics. For each route a happy path, bad input (422, nothing
changed), a missing object (404), no token (401) and the wrong person (403, nothing
changed)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pydantic
import pytest
from fastapi.testclient import TestClient
from httpx import Response
from sqlalchemy import select

from baadal import constants as C
from baadal.config import Settings
from baadal.db.models import Host, HostEventLog, LoginThrottle, Organisation, Task, User
from baadal.db.session import session_scope
from baadal.errors import RemoteCommandError
from baadal.host import network_graph, power, resources
from baadal.host.network_graph import NetworkGraph, Node
from baadal.host.power import HostPowerResult
from baadal.monitor import rrd
from baadal.tasks.params import HostPowerParams
from baadal.tasks.registry import TaskContext
from tests.unit.test_api_routes import (  # noqa: F401 (api_world: the fixture)
    Api,
    api_world,
    assert_problem,
    refused_unchanged,
)
from tests.unit.test_authorization import world_engine, world_template  # noqa: F401
from tests.unit.test_monitor import STEP, last_step, stats

pytestmark = pytest.mark.unit

#: every route this file covers that needs a token, with a body that passes the schema
ROUTES: list[tuple[str, str, dict | None]] = [
    ("POST", "/hosts", {"name": "h9", "address": "10.0.0.9", "cpus": 4, "ram_gb": 8}),
    ("POST", "/hosts/1/maintenance", None),
    ("DELETE", "/hosts/1/maintenance", None),
    ("POST", "/hosts/1/evacuate", None),
    ("POST", "/hosts/1/power/cycle", None),
    ("GET", "/hosts/1/resources", None),
    ("GET", "/hosts/1/utilization", None),
    ("GET", "/hosts/1/graphs/cpu", None),
    ("GET", "/hosts/1/events", None),
    ("GET", "/datastores", None),
    ("GET", "/datastores/1", None),
    ("POST", "/datastores", {"name": "ds9", "mount_point": "/nonexistent", "capacity_gb": 1}),
    ("GET", "/templates", None),
    ("GET", "/templates/1", None),
    (
        "POST",
        "/templates",
        {"name": "t9", "datastore": "ds1", "image": "base.qcow2", "os_version": "1", "hdd_gb": 1},
    ),
    ("POST", "/templates/1/deactivate", None),
    ("GET", "/security-domains", None),
    ("POST", "/security-domains", {"name": "d9", "vlan_tag": 99, "cidr": "10.98.0.0/24"}),
    ("DELETE", "/security-domains/1", None),
    ("GET", "/pools", None),
    ("GET", "/vlans", None),
    ("POST", "/vlans", {"name": "v9", "tag": 99, "cidr": "10.98.0.0/24"}),
    (
        "POST",
        "/pools/private",
        {"vlan": "vlan10", "ip_from": "10.99.10.70", "ip_to": "10.99.10.71"},
    ),
    ("DELETE", "/pools/private?ip_from=10.99.10.59&ip_to=10.99.10.60", None),
    ("POST", "/pools/public", {"ip_from": "192.0.2.30", "ip_to": "192.0.2.31"}),
    ("DELETE", "/pools/public?ip_from=192.0.2.19&ip_to=192.0.2.20", None),
    ("GET", "/users", None),
    ("GET", "/users/eve", None),
    ("POST", "/users/eve/approve", None),
    ("POST", "/users/eve/block", None),
    ("POST", "/users/eve/unblock", None),
    ("POST", "/users/eve/roles", {"roles": ["faculty"]}),
    ("GET", "/quotas", None),
    ("PATCH", "/quotas", {"user": "eve", "limits": {"vms": 3}}),
    ("GET", "/organisations", None),
    ("GET", "/organisations/ORG_A", None),
    ("POST", "/organisations", {"name": "ORG_C"}),
    ("PATCH", "/organisations/ORG_A", {"registration": True}),
    ("GET", "/cloud", None),
    ("POST", "/cloud/shutdown", None),
    ("POST", "/cloud/bootup", None),
    ("POST", "/cloud/finish", {"after": "shutdown"}),
    ("GET", "/network-graph", None),
    ("POST", "/network-graph", None),
    ("GET", "/metrics", None),
]
#: what an orgadmin may do here, for their own organisation (tested one by one below)
FOR_ORGADMINS = {
    ("GET", "/templates"),
    ("GET", "/templates/1"),
    ("GET", "/security-domains"),
    ("GET", "/users"),
    ("GET", "/users/eve"),
    ("POST", "/users/eve/approve"),
    ("POST", "/users/eve/block"),
    ("POST", "/users/eve/unblock"),
    ("GET", "/quotas"),
    ("GET", "/organisations/ORG_A"),
}
#: the rest is for admins only
ADMIN_ONLY = [r for r in ROUTES if r[:2] not in FOR_ORGADMINS]


def test_without_a_token_every_route_is_401(api: Api) -> None:
    before = api.state()
    for method, path, body in ROUTES:
        assert_problem(api.call(method, path, None, json=body), 401, "API token")
    assert api.state() == before


def test_an_orgadmin_is_refused_what_is_for_admins_and_nothing_changes(api: Api) -> None:
    for method, path, body in ADMIN_ONLY:
        refused_unchanged(api, method, path, "oa", json=body)


def _host_id(api: Api, name: str = "host1") -> int:
    with session_scope(api.engine) as s:
        return s.scalar(select(Host.id).where(Host.host_name == name))


# --- hosts ---------------------------------------------------------------------------------


def test_add_a_host(api: Api) -> None:
    body = {
        "name": "h9",
        "address": "10.0.0.9",
        "cpus": 4,
        "ram_gb": 8,
        "mac_addr": "52:54:00:00:00:09",
    }
    response = api.call("POST", "/hosts", "admin", json=body)
    assert response.status_code == 201, response.text
    made = response.json()
    assert made["name"] == "h9" and made["status"] == "down" and made["cpus"] == 4
    assert response.headers["location"] == f"{C.API_PREFIX}/hosts/{made['id']}"
    assert api.call("GET", f"/hosts/{made['id']}", "admin").json() == made
    before = api.state()
    assert_problem(api.call("POST", "/hosts", "admin", json=body), 409, "h9")
    for bad in (
        {**body, "name": "h 8"},
        {**body, "cpus": 0},
        {**body, "ram_gb": "8"},
        {**body, "type": "Martian"},
        {**body, "surprise": 1},
    ):
        assert_problem(api.call("POST", "/hosts", "admin", json=bad), 422)
    assert api.state() == before


def test_maintenance_migrates_the_vms_away_and_ends(api: Api) -> None:
    host_id = _host_id(api)
    assert_problem(api.call("POST", "/hosts/999999/maintenance", "admin"), 404)
    response = api.call("POST", f"/hosts/{host_id}/maintenance", "admin")
    assert response.status_code == 202, response.text
    queued = response.json()
    assert len(queued["task_ids"]) == 1 and queued["skipped"] == []
    vm_id = api.vm_id()
    with session_scope(api.engine) as s:
        task = s.get(Task, queued["task_ids"][0])
        assert task.task_type == C.TaskType.MIGRATE_VM_HOST and task.vm_id == vm_id
    assert api.call("GET", f"/hosts/{host_id}", "admin").json()["status"] == "maintenance"
    left = api.call("DELETE", f"/hosts/{host_id}/maintenance", "admin")
    assert left.status_code == 200 and left.json()["status"] == "up"
    assert_problem(api.call("DELETE", "/hosts/999999/maintenance", "admin"), 404)


def test_evacuate(api: Api) -> None:
    response = api.call("POST", f"/hosts/{_host_id(api)}/evacuate", "admin")
    assert response.status_code == 202 and len(response.json()["task_ids"]) == 1
    empty = api.call("POST", f"/hosts/{_host_id(api, 'host2')}/evacuate", "admin")
    assert empty.status_code == 202 and empty.json() == {"task_ids": [], "skipped": []}
    assert_problem(api.call("POST", "/hosts/999999/evacuate", "admin"), 404)


def test_power_is_a_task_one_at_a_time(api: Api) -> None:
    host_id = _host_id(api, "host2")
    response = api.call("POST", f"/hosts/{host_id}/power/cycle", "admin")
    assert response.status_code == 202, response.text
    task_id = response.json()["task_id"]
    assert response.headers["location"] == f"{C.API_PREFIX}/tasks/{task_id}"
    with session_scope(api.engine) as s:
        task = s.get(Task, task_id)
        assert task.task_type == C.TaskType.HOST_POWER
        assert task.parameters == {"vm_id": None, "host_id": host_id, "action": "cycle"}
    before = api.state()
    assert_problem(api.call("POST", f"/hosts/{host_id}/power/on", "admin"), 409, "already queued")
    assert_problem(api.call("POST", f"/hosts/{host_id}/power/reboot", "admin"), 422, "action")
    assert_problem(api.call("POST", "/hosts/999999/power/on", "admin"), 404)
    assert api.state() == before
    # host1 runs the VM 'web': it may be powered on, not off
    host1 = _host_id(api)
    assert_problem(api.call("POST", f"/hosts/{host1}/power/off", "admin"), 409, "web (RUNNING)")
    assert api.state() == before
    assert api.call("POST", f"/hosts/{host1}/power/on", "admin").status_code == 202


@pytest.mark.parametrize(
    ("action", "calls"), [("on", ["up"]), ("off", ["down"]), ("cycle", ["down", "up"])]
)
def test_the_power_task_powers_down_then_up(
    monkeypatch: pytest.MonkeyPatch, settings: Settings, action: str, calls: list[str]
) -> None:
    made: list[str] = []

    def fake(direction: str) -> Callable[..., HostPowerResult]:
        def run(_engine: object, _settings: object, host_id: int, **_kw: object) -> HostPowerResult:
            made.append(direction)
            return HostPowerResult(
                host_id, "h", direction, "IPMI", True, C.HostStatus.UP, 1.0, f"{direction} done"
            )

        return run

    monkeypatch.setattr(power, "host_power_down", fake("down"))
    monkeypatch.setattr(power, "host_power_up", fake("up"))
    params = HostPowerParams(host_id=7, action=action)
    ctx = TaskContext(1, C.TaskType.HOST_POWER, None, None, params, 1, "w", None, settings)  # type: ignore[arg-type]
    result = power.host_power_task(ctx)
    assert made == calls
    assert result.status == C.TaskStatus.SUCCESS
    assert result.message == "; ".join(f"{c} done" for c in calls)


def test_resources_are_asked_from_the_host_and_its_failure_is_502(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    host_id = _host_id(api)
    monkeypatch.setattr(
        resources, "host_resource_details", lambda *_a, **_k: resources.HostResources(8, 16, 100)
    )
    monkeypatch.setattr(resources, "get_host_mac_address", lambda *_a: "52:54:00:00:00:01")
    monkeypatch.setattr(resources, "get_host_type", lambda *_a: C.HostType.PHYSICAL)
    response = api.call("GET", f"/hosts/{host_id}/resources", "admin")
    assert response.status_code == 200, response.text
    assert response.json() == {
        "id": host_id,
        "name": "host1",
        "cpus": 8,
        "ram_gb": 16,
        "disk_gb": 100,
        "mac": "52:54:00:00:00:01",
        "type": "Physical",
    }

    def unreachable(*_args: object) -> str:
        raise RemoteCommandError("host1", ["ip", "link"], "connection refused")

    monkeypatch.setattr(resources, "get_host_mac_address", unreachable)
    assert_problem(api.call("GET", f"/hosts/{host_id}/resources", "admin"), 502, "on host1 failed")
    assert_problem(api.call("GET", "/hosts/999999/resources", "admin"), 404)


def test_utilization_and_graphs_from_the_recorded_history(api: Api, settings: Settings) -> None:
    host_id = _host_id(api)
    assert_problem(api.call("GET", f"/hosts/{host_id}/utilization", "admin"), 404, "no monitoring")
    identity = rrd.host_identity("127.0.0.1")
    end = last_step()
    for i in range(4):
        rrd.update_vm_rrd(settings, identity, stats(100 * i, io=1000 * i), end - STEP * (3 - i))
    used = api.call("GET", f"/hosts/{host_id}/utilization?period=hour", "admin")
    assert used.status_code == 200, used.text
    assert used.json()["period"] == "hour" and used.json()["cpu_percent"] is not None
    png = api.call("GET", f"/hosts/{host_id}/graphs/nw?period=week", "admin")
    assert png.status_code == 200, png.text
    assert png.headers["content-type"] == "image/png" and png.content[:4] == b"\x89PNG"
    assert_problem(api.call("GET", f"/hosts/{host_id}/graphs/gpu", "admin"), 422, "graph")
    assert_problem(api.call("GET", f"/hosts/{host_id}/graphs/cpu?period=aeon", "admin"), 422)
    assert_problem(api.call("GET", f"/hosts/{host_id}/utilization?period=aeon", "admin"), 422)
    assert_problem(api.call("GET", "/hosts/999999/graphs/cpu", "admin"), 404)
    assert_problem(api.call("GET", "/hosts/999999/utilization", "admin"), 404)


def test_host_events(api: Api) -> None:
    host_id = _host_id(api)
    with session_scope(api.engine) as s:
        for n in range(3):
            s.add(
                HostEventLog(
                    host_id=host_id,
                    attribute="status",
                    old_value=str(n),
                    new_value=str(n + 1),
                    message="ping",
                )
            )
    events = api.call("GET", f"/hosts/{host_id}/events?limit=2", "admin").json()["items"]
    assert [(e["name"], e["new_value"]) for e in events] == [("status", "2"), ("status", "3")]
    assert_problem(api.call("GET", f"/hosts/{host_id}/events?limit=0", "admin"), 422)
    assert_problem(api.call("GET", "/hosts/999999/events", "admin"), 404)


# --- datastores and templates -----------------------------------------------------------


def test_datastores(api: Api, tmp_path: Path, settings: Settings) -> None:
    listed = api.call("GET", "/datastores", "admin").json()
    assert [d["name"] for d in listed["items"]] == ["ds1"] and listed["next"] is None
    first = listed["items"][0]
    assert api.call("GET", f"/datastores/{first['id']}", "admin").json() == first
    assert_problem(api.call("GET", "/datastores/999999", "admin"), 404)
    mount = tmp_path / "mnt"
    mount.mkdir()
    body = {"name": "ds2", "mount_point": str(mount), "capacity_gb": 50}
    before = api.state()
    for bad in (
        {**body, "mount_point": "relative"},
        {**body, "capacity_gb": 0},
        {**body, "mount_point": str(mount / "absent")},
    ):
        assert_problem(api.call("POST", "/datastores", "admin", json=bad), 422)
    assert api.state() == before and not any(mount.iterdir())
    made = api.call("POST", "/datastores", "admin", json=body)
    assert made.status_code == 201, made.text
    assert made.json()["mount_point"] == str(mount) and made.json()["capacity_gb"] == 50
    assert (mount / settings.paths.templates_dir.strip("/")).is_dir()
    assert_problem(api.call("POST", "/datastores", "admin", json=body), 409)


def test_templates_each_their_own(api: Api) -> None:
    def names(who: str) -> set[str]:
        return {t["name"] for t in api.call("GET", "/templates", who).json()["items"]}

    assert names("admin") == {"tiny", "private"}
    assert names("fac") == {"tiny", "private"} and names("stu") == {"tiny"}
    private = next(
        t for t in api.call("GET", "/templates", "admin").json()["items"] if t["name"] == "private"
    )
    assert api.call("GET", f"/templates/{private['id']}", "fac").json()["image"] == "base.qcow2"
    refused_unchanged(api, "GET", f"/templates/{private['id']}", "stu")
    assert_problem(api.call("GET", "/templates/999999", "admin"), 404)
    assert_problem(api.call("GET", "/templates?active_only=maybe", "admin"), 422)


def test_add_and_deactivate_a_template(api: Api) -> None:
    body = {
        "name": "t9",
        "datastore": "ds1",
        "image": "base.qcow2",
        "os_version": "22.04",
        "hdd_gb": 1,
    }
    before = api.state()
    assert_problem(
        api.call("POST", "/templates", "admin", json={**body, "image": "none.qcow2"}),
        404,
        "none.qcow2",
    )
    assert_problem(api.call("POST", "/templates", "admin", json={**body, "datastore": "ds7"}), 404)
    for bad in (
        {**body, "image": "/etc/passwd"},
        {**body, "hdd_gb": 0},
        {**body, "os": "Plan9"},
        {**body, "image": "../../x"},
    ):
        assert_problem(api.call("POST", "/templates", "admin", json=bad), 422)
    assert api.state() == before
    made = api.call("POST", "/templates", "admin", json=body)
    assert made.status_code == 201, made.text
    template_id = made.json()["id"]
    assert made.json()["active"] is True and made.json()["os_version"] == "22.04"
    gone = api.call("POST", f"/templates/{template_id}/deactivate", "admin")
    assert gone.status_code == 200 and gone.json()["active"] is False
    active = api.call("GET", "/templates?active_only=true", "admin").json()["items"]
    assert "t9" not in {t["name"] for t in active}
    assert_problem(api.call("POST", "/templates/999999/deactivate", "admin"), 404)


# --- security domains and pools ---------------------------------------------------------


def test_security_domains(api: Api) -> None:
    def names(who: str) -> set[str]:
        return {d["name"] for d in api.call("GET", "/security-domains", who).json()["items"]}

    assert names("admin") == {"research", "hidden"}
    assert names("oa") == {"research"} and names("col") == {"research", "hidden"}
    body = {
        "name": "lab",
        "vlan_tag": 77,
        "cidr": "10.77.0.0/24",
        "ip_from": "10.77.0.10",
        "ip_to": "10.77.0.12",
    }
    before = api.state()
    assert_problem(
        api.call("POST", "/security-domains", "admin", json={**body, "cidr": "10.99.10.0/25"}), 409
    )
    assert_problem(
        api.call("POST", "/security-domains", "admin", json={**body, "vlan_tag": 5000}), 422
    )
    assert_problem(
        api.call("POST", "/security-domains", "admin", json={**body, "ip_to": "10.78.0.1"}), 422
    )
    assert api.state() == before
    made = api.call("POST", "/security-domains", "admin", json=body)
    assert made.status_code == 201, made.text
    assert made.json()["pool_size"] == 3 and made.json()["vlan_tag"] == 77
    assert api.call("DELETE", f"/security-domains/{made.json()['id']}", "admin").status_code == 204
    assert "lab" not in names("admin")
    assert_problem(api.call("DELETE", "/security-domains/999999", "admin"), 404)


def test_pools(api: Api) -> None:
    assert api.call("GET", "/pools", "admin").json()["public_total"] == 11
    vlans = api.call("GET", "/vlans", "admin").json()
    assert [v["name"] for v in vlans["items"]] == ["vlan10", "hidden-vlan55"]
    assert vlans["next"] is None
    vlan = api.call(
        "POST", "/vlans", "admin", json={"name": "v20", "tag": 20, "cidr": "10.20.0.0/24"}
    )
    assert vlan.status_code == 201 and vlan.json()["network"] == "10.20.0.0/24"
    added = api.call(
        "POST",
        "/pools/private",
        "admin",
        json={"vlan": "v20", "ip_from": "10.20.0.5", "ip_to": "10.20.0.9"},
    )
    assert added.status_code == 201 and added.json() == {"count": 5}
    removed = api.call("DELETE", "/pools/private?ip_from=10.20.0.5&ip_to=10.20.0.6", "admin")
    assert removed.status_code == 200 and removed.json() == {"count": 2}
    public = api.call(
        "POST", "/pools/public", "admin", json={"ip_from": "192.0.2.40", "ip_to": "192.0.2.41"}
    )
    assert public.json() == {"count": 2}
    assert api.call(
        "DELETE", "/pools/public?ip_from=192.0.2.40&ip_to=192.0.2.41", "admin"
    ).json() == {"count": 2}
    before = api.state()
    assert_problem(
        api.call(
            "POST", "/vlans", "admin", json={"name": "v21", "tag": 21, "cidr": "10.20.0.0/16"}
        ),
        409,
    )
    assert_problem(
        api.call(
            "POST",
            "/pools/private",
            "admin",
            json={"vlan": "v99", "ip_from": "10.20.0.5", "ip_to": "10.20.0.9"},
        ),
        404,
    )
    assert_problem(
        api.call(
            "POST", "/pools/public", "admin", json={"ip_from": "192.0.2.41", "ip_to": "192.0.2.40"}
        ),
        422,
    )
    assert_problem(
        api.call(
            "POST", "/pools/public", "admin", json={"ip_from": "999.0.2.1", "ip_to": "999.0.2.2"}
        ),
        422,
    )
    assert_problem(api.call("DELETE", "/pools/public?ip_from=192.0.2.1", "admin"), 422, "ip_to")
    assert api.state() == before


# --- users -------------------------------------------------------------------------------


def test_registration_is_open_where_the_organisation_takes_it(api: Api) -> None:
    body = {
        "username": "newbie",
        "password": "a long pass phrase",
        "organisation": "ORG_A",
        "email": "newbie@example.org",
        "first_name": "New",
    }
    before = api.state()
    assert_problem(
        api.client.post(f"{C.API_PREFIX}/users", json=body), 422, "does not take self-registrations"
    )
    assert_problem(api.client.post(f"{C.API_PREFIX}/users", json={**body, "username": "a b"}), 422)
    assert api.state() == before
    opened = api.call("PATCH", "/organisations/ORG_A", "admin", json={"registration": True})
    assert opened.status_code == 200 and opened.json()["allows_registration"] is True
    made = api.client.post(f"{C.API_PREFIX}/users", json=body)
    assert made.status_code == 201, made.text
    account = made.json()
    assert account["name"] == "newbie" and account["roles"] == ["user"]
    assert account["state"] == "awaiting approval" and "password" not in made.text
    assert_problem(api.client.post(f"{C.API_PREFIX}/users", json=body), 409)
    # its orgadmin approves it; the other organisation's may not
    refused_unchanged(api, "POST", "/users/newbie/approve", "ob")
    approved = api.call("POST", "/users/newbie/approve", "oa")
    assert approved.status_code == 200 and approved.json()["state"] == "active"


def test_registrations_from_one_address_are_bounded_per_window(api: Api) -> None:
    """[auth] registrations_per_address a window from one client address; more are 429
    with Retry-After and change nothing; failed ones do not count; other addresses and
    the next window may register again."""
    settings: Settings = api.client.app.state.settings
    settings.auth.registrations_per_address = 2
    settings.auth.registration_window_s = 600
    opened = api.call("PATCH", "/organisations/ORG_A", "admin", json={"registration": True})
    assert opened.status_code == 200
    body = {"password": "a long pass phrase", "organisation": "ORG_A"}

    def register(name: str, client: TestClient = api.client) -> Response:
        return client.post(f"{C.API_PREFIX}/users", json={**body, "username": name})

    assert register("r1").status_code == 201
    assert_problem(register("r1"), 409)  # failed: not counted
    assert register("r2").status_code == 201
    before = api.state()
    refused = register("r3")
    assert_problem(refused, 429, "too many registrations from this address")
    assert 0 < int(refused.headers["Retry-After"]) <= 600
    assert api.state() == before
    elsewhere = TestClient(api.client.app, client=("192.0.2.77", 50000))
    assert register("r3", elsewhere).status_code == 201
    with session_scope(api.engine) as s:  # the window began an hour ago: it is over
        row = s.get(LoginThrottle, "register:testclient")
        row.first_failure -= timedelta(hours=1)
    assert register("r4").status_code == 201
    with session_scope(api.engine) as s:
        made = s.scalars(select(User.username).where(User.username.like("r_"))).all()
    assert sorted(made) == ["r1", "r2", "r3", "r4"]


@pytest.mark.parametrize(
    "auth", [{"registrations_per_address": 0}, {"registration_window_s": 10**9}]
)
def test_registration_limits_are_bounded_settings(auth: dict) -> None:
    with pytest.raises(pydantic.ValidationError):
        Settings(auth=auth)


def test_accounts_each_their_share(api: Api) -> None:
    every = {a["name"] for a in api.call("GET", "/users", "admin").json()["items"]}
    assert every >= {"admin", "oa", "ob", "fac", "stu", "col", "eve", "blk"}
    assert {a["name"] for a in api.call("GET", "/users", "ob").json()["items"]} == {"ob", "col"}
    assert {a["name"] for a in api.call("GET", "/users", "eve").json()["items"]} == {"eve"}
    me = api.call("GET", "/users/eve", "eve").json()
    assert me["organisation"] == "ORG_A" and isinstance(me["id"], int)
    refused_unchanged(api, "GET", "/users/col", "oa")
    refused_unchanged(api, "GET", "/users/stu", "eve")
    assert_problem(api.call("GET", "/users/nobody", "admin"), 404)


def test_block_unblock_and_roles(api: Api) -> None:
    blocked = api.call("POST", "/users/eve/block", "oa")
    assert blocked.status_code == 200 and blocked.json()["state"] == "blocked"
    assert_problem(api.call("GET", "/me", "eve"), 403, "blocked")
    assert api.call("POST", "/users/eve/unblock", "oa").json()["state"] == "active"
    assert api.call("GET", "/me", "eve").status_code == 200
    refused_unchanged(api, "POST", "/users/col/block", "oa")
    refused_unchanged(api, "POST", "/users/eve/block", "fac")
    roles = api.call("POST", "/users/eve/roles", "admin", json={"roles": ["faculty"]})
    assert roles.status_code == 200 and set(roles.json()["roles"]) == {"faculty", "user"}
    before = api.state()
    assert_problem(api.call("POST", "/users/eve/roles", "admin", json={"roles": ["king"]}), 422)
    assert_problem(api.call("POST", "/users/eve/roles", "admin", json={"roles": "admin"}), 422)
    assert_problem(api.call("POST", "/users/nobody/roles", "admin", json={"roles": []}), 404)
    assert_problem(api.call("POST", "/users/nobody/block", "admin"), 404)
    assert api.state() == before


# --- quotas and organisations ----------------------------------------------------------


def test_quotas(api: Api) -> None:
    mine = api.call("GET", "/quotas", "stu").json()
    assert mine["whose"] == "user stu" and {i["name"] for i in mine["lines"]} == {
        q.value for q in C.QuotaItem
    }
    assert api.call("GET", "/quotas?org=ORG_A", "oa").json()["whose"] == "organisation ORG_A"
    refused_unchanged(api, "GET", "/quotas?org=ORG_B", "oa")
    refused_unchanged(api, "GET", "/quotas?user=stu", "eve")
    assert_problem(api.call("GET", "/quotas?user=nobody", "admin"), 404)
    assert_problem(api.call("GET", "/quotas?user=stu&org=ORG_A", "admin"), 422, "not both")
    changed = api.call("PATCH", "/quotas", "admin", json={"user": "stu", "limits": {"vms": 3}})
    assert changed.status_code == 200, changed.text
    vms = next(i for i in changed.json()["lines"] if i["name"] == "vms")
    assert vms["limit"] == 3 and vms["override"] is True
    before = api.state()
    for bad in (
        {"user": "stu", "limits": {"gpus": 1}},
        {"user": "stu", "limits": {}},
        {"user": "stu", "limits": {"vms": -1}},
        {"limits": {"vms": 1}},
    ):
        assert_problem(api.call("PATCH", "/quotas", "admin", json=bad), 422)
    assert_problem(
        api.call("PATCH", "/quotas", "admin", json={"org": "ORG_Z", "limits": {"vms": 1}}), 404
    )
    assert api.state() == before


def test_organisations(api: Api) -> None:
    listed = api.call("GET", "/organisations", "admin").json()["items"]
    assert {"ORG_A", "ORG_B"} <= {o["name"] for o in listed}
    own = api.call("GET", "/organisations/ORG_A", "oa").json()
    assert own["orgadmins"] == ["oa"] and own["users"] >= 5
    refused_unchanged(api, "GET", "/organisations/ORG_B", "oa")
    assert_problem(api.call("GET", "/organisations/ORG_Z", "admin"), 404)
    made = api.call("POST", "/organisations", "admin", json={"name": "ORG_C", "details": "new"})
    assert made.status_code == 201 and made.json()["details"] == "new"
    assert_problem(api.call("POST", "/organisations", "admin", json={"name": "ORG_C"}), 409)
    change = {"name": "ORG_D", "registration": True, "add_security_domains": ["hidden"]}
    changed = api.call("PATCH", "/organisations/ORG_C", "admin", json=change)
    assert changed.status_code == 200, changed.text
    assert changed.json()["name"] == "ORG_D" and changed.json()["security_domains"] == ["hidden"]
    before = api.state()
    assert_problem(api.call("PATCH", "/organisations/ORG_D", "admin", json={}), 422, "nothing")
    assert_problem(
        api.call(
            "PATCH",
            "/organisations/ORG_D",
            "admin",
            json={"details": "x", "add_security_domains": ["nowhere"]},
        ),
        404,
    )
    assert_problem(
        api.call("PATCH", "/organisations/ORG_D", "admin", json={"registration": "yes"}), 422
    )
    assert_problem(api.call("POST", "/organisations", "admin", json={"name": "a/b"}), 422)
    assert_problem(api.call("PATCH", "/organisations/ORG_Z", "admin", json={"details": "x"}), 404)
    refused_unchanged(api, "PATCH", "/organisations/ORG_A", "oa", json={"details": "mine"})
    assert api.state() == before
    with session_scope(api.engine) as s:
        assert s.scalar(select(Organisation.details).where(Organisation.name == "ORG_D")) == "new"


# --- the cloud, the network graph, metrics -----------------------------------------------


def test_cloud_shutdown_and_bootup(api: Api) -> None:
    status = api.call("GET", "/cloud", "admin").json()
    assert status["status"] == "up" and "hosts" in {i["name"] for i in status["lines"]}
    down = api.call("POST", "/cloud/shutdown", "admin")
    assert down.status_code == 202 and len(down.json()["task_ids"]) == 1
    assert api.call("GET", "/cloud", "admin").json()["status"] == "down-progress"
    finished = api.call("POST", "/cloud/finish", "admin", json={"after": "shutdown"})
    assert finished.status_code == 200 and finished.json()["status"] == "down"
    up = api.call("POST", "/cloud/bootup", "admin")
    assert up.status_code == 202 and up.json()["task_ids"] == []  # nothing was snapshotted yet
    before = api.state()
    assert_problem(api.call("POST", "/cloud/finish", "admin", json={"after": "lunch"}), 422)
    assert api.state() == before
    refused_unchanged(api, "POST", "/cloud/shutdown", "fac")


def test_network_graph(api: Api, settings: Settings) -> None:
    assert_problem(api.call("GET", "/network-graph", "admin"), 404, "not been measured")
    nodes = [Node(1, "host1", "127.0.0.1", "1 Gbit/s", 10.0, 10.0)]
    network_graph.save_graph(NetworkGraph(nodes, []), settings)
    svg = api.call("GET", "/network-graph", "admin")
    assert svg.status_code == 200 and svg.headers["content-type"].startswith("image/svg+xml")
    assert "<svg" in svg.text and "host1" in svg.text
    data = api.call("GET", "/network-graph?form=json", "admin")
    assert data.json()["nodes"][0]["name"] == "host1"
    assert_problem(api.call("GET", "/network-graph?form=png", "admin"), 422)
    measured = api.call("POST", "/network-graph", "admin")
    assert measured.status_code == 202
    assert measured.headers["location"].endswith(f"/tasks/{measured.json()['task_id']}")
    before = api.state()
    assert_problem(api.call("POST", "/network-graph", "admin"), 409, "already queued")
    assert api.state() == before
    refused_unchanged(api, "GET", "/network-graph", "oa")


def test_metrics_for_admins(api: Api) -> None:
    response = api.call("GET", "/metrics", "admin")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert "baadal_" in response.text
    refused_unchanged(api, "GET", "/metrics", "stu")
    assert_problem(api.call("GET", "/metrics?format=json", "admin"), 422, "unknown parameter")


def test_a_missing_host_is_403_for_non_admins(api: Api) -> None:
    """The policy comes before the lookup: a non-admin learns nothing of the ids."""
    refused_unchanged(api, "POST", "/hosts/999999/power/on", "eve")
    refused_unchanged(api, "GET", "/hosts/999999/events", "fac")
