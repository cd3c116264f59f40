"""The OpenAPI document (every status each route gives is documented, errors as
problem+json, the bearer scheme on every operation), the offline docs page, and VM pages
whose cost does not grow with the number of VMs."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, select

from baadal import constants as C
from baadal.api.app import create_app
from baadal.config import Settings
from baadal.db.models import VM, User
from baadal.db.session import session_scope
from tests.support.statements import counted, queries
from tests.unit.test_api_routes import (  # noqa: F401 (api_world: the fixture)
    Api,
    api_world,
)
from tests.unit.test_authorization import world_engine, world_template  # noqa: F401

pytestmark = pytest.mark.unit

API = C.API_PREFIX


def _operations(doc: dict) -> Iterator[tuple[str, str, dict]]:
    for path, operations in doc["paths"].items():
        for method, op in operations.items():
            yield path, method, op


def test_the_document_lists_every_status_and_the_token(settings: Settings) -> None:
    doc = create_app(settings).openapi()
    assert doc["openapi"].startswith("3.")
    scheme = next(iter(doc["components"]["securitySchemes"].values()))
    assert scheme == {**scheme, "type": "http", "scheme": "bearer"}
    expected = {
        ("get", f"{API}/vms/{{vm_id}}"): {"200", "404"},
        ("post", f"{API}/vms"): {"201", "404", "409"},
        ("post", f"{API}/vms/{{vm_id}}/actions/{{action}}"): {"202", "404", "409"},
        ("post", f"{API}/requests/{{request_id}}/withdraw"): {"204", "404", "409"},
        ("get", f"{API}/tasks/{{task_id}}"): {"200", "404"},
    }
    operations = list(_operations(doc))
    assert len(operations) >= 16
    for path, method, op in operations:
        statuses = set(op["responses"])
        assert {"401", "403", "422", "500"} <= statuses, (method, path)
        assert expected.get((method, path), set()) <= statuses, (method, path, statuses)
        for status in statuses - {"200", "201", "202", "204"}:
            assert "application/problem+json" in op["responses"][status]["content"], (path, status)
        # self-registration is the one operation open to anyone
        assert op.get("security") or (method, path) == ("post", f"{API}/users"), (method, path)
        assert op.get("summary"), (method, path)
    action = doc["paths"][f"{API}/vms/{{vm_id}}/actions/{{action}}"]["post"]
    names = {p["name"]: p for p in action["parameters"]}
    enum = doc["components"]["schemas"][names["action"]["schema"]["$ref"].rsplit("/", 1)[1]]
    assert {"start", "stop", "delete", "snapshot"} <= set(enum["enum"])
    problem = doc["components"]["schemas"]["Problem"]
    assert set(problem["required"]) == {"title", "status", "detail"}


def test_docs_page_loads_nothing_from_elsewhere(api: Api) -> None:
    page = api.client.get(f"{API}/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert f"{API}/vms/{{vm_id}}/actions/{{action}}" in page.text
    assert "http://" not in page.text and "https://" not in page.text and "<script" not in page.text
    assert api.client.get(f"{API}/openapi.json").json()["info"]["title"] == "Baadal"


def _add_vms(engine: Engine, count: int, start: int) -> None:
    with session_scope(engine) as s:
        web = s.scalar(select(VM).where(VM.vm_name == "web"))
        owner = s.scalar(select(User.id).where(User.username == "fac"))
        s.add_all(
            VM(
                vm_name=f"v{i}",
                vm_identity=f"ORG_A_fac_v{i}",
                RAM=256,
                vCPU=1,
                template_id=web.template_id,
                owner_id=owner,
                host_id=web.host_id,
                status=C.VMStatus.SHUTDOWN,
            )
            for i in range(start, start + count)
        )


def _page_cost(api: Api, who: str) -> int:
    with counted() as statements:
        assert api.call("GET", "/vms", who, params={"limit": 50}).status_code == 200
    return len(queries(statements))


@pytest.mark.parametrize("who", ["admin", "oa", "fac"])
def test_a_page_costs_the_same_for_ten_or_many_vms(api: Api, who: str) -> None:
    _add_vms(api.engine, 10, 0)
    few = _page_cost(api, who)
    _add_vms(api.engine, 600, 10)
    assert _page_cost(api, who) == few
    # the page itself is one query; the others find the token's account
    with counted() as statements:
        api.call("GET", "/me", who)
    assert few - len(queries(statements)) == 1


def test_paging_walks_every_vm_once(api: Api) -> None:
    _add_vms(api.engine, 235, 0)
    seen: list[int] = []
    after = None
    while True:
        params = {"limit": 100, "owner": "fac"} | ({"after": after} if after is not None else {})
        page = api.call("GET", "/vms", "oa", params=params).json()
        seen += [vm["id"] for vm in page["items"]]
        assert len(page["items"]) <= 100
        after = page["next"]
        if after is None:
            break
    assert len(seen) == 236 and seen == sorted(set(seen))
    assert api.call("GET", "/vms", "eve", params={"limit": 100}).json() == {
        "items": [],
        "next": None,
    }
    shut = api.call("GET", "/vms", "fac", params={"status": "shutdown", "limit": 1000}).json()
    assert len(shut["items"]) == 235 and shut["next"] is None
