"""The admin side's lists over HTTP come in keyset pages (``after``/``limit``, oldest id
first, ``next`` the last id shown) that cost the same few SQL statements however many
rows a page holds; the portal's admin tables page the same way."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from baadal import constants as C
from baadal.db.models import VM, Datastore, Organisation, Template, UserVMMap
from baadal.db.session import session_scope
from baadal.services import inventory, networks
from baadal.services.policy import SYSTEM
from tests.support.statements import count_statements  # noqa: F401 (the fixture)
from tests.unit.test_api_routes import (  # noqa: F401 (api_world: the fixture)
    Api,
    api_world,
    assert_problem,
)
from tests.unit.test_authorization import _user, world_engine, world_template  # noqa: F401

pytestmark = pytest.mark.unit

#: each list, and the field its items are named by in the world
LISTS = ["/hosts", "/datastores", "/templates", "/security-domains", "/vlans", "/users"]
LISTS.append("/organisations")
#: how many rows of each the test adds to the world's
MORE = 5


def more_of_everything(s: Session, count: int = MORE) -> None:
    """``count`` more rows of each list's kind, with what each item shows filled in (a
    domain's pool and VMs, an account's roles, an organisation's people)."""
    store = s.scalars(select(Datastore)).first()
    assert store is not None
    web = s.scalars(select(VM)).one()
    for k in range(count):
        inventory.add_host(s, SYSTEM, name=f"more{k}", address=f"10.0.9.{k + 1}", cpus=2, ram_gb=4)
        s.add(Datastore(ds_name=f"ds-more{k}", capacity=10, path="/x", system_mount_point="/m"))
        s.add(
            Template(
                name=f"t-more{k}", os_version="1", hdd=1, hdfile="b.qcow2", datastore_id=store.id
            )
        )
        domain = networks.add_security_domain(
            s,
            SYSTEM,
            f"d-more{k}",
            vlan_tag=60 + k,
            cidr=f"10.{60 + k}.0.0/24",
            ip_from=f"10.{60 + k}.0.10",
            ip_to=f"10.{60 + k}.0.12",
            visible_to_all=True,
        )
        org = Organisation(name=f"ORG_more{k}")
        s.add(org)
        s.flush()
        person = _user(s, f"u-more{k}", org, C.Role.FACULTY)
        s.add(UserVMMap(user_id=person.id, vm_id=web.id))
        web.security_domain_id = domain.id
    s.flush()


def _walk(api: Api, path: str, limit: int) -> list[list[dict]]:
    """Every page of a list, following ``next``."""
    pages: list[list[dict]] = []
    query: dict[str, object] = {"limit": limit}
    while True:
        response = api.call("GET", path, "admin", params=query)
        assert response.status_code == 200, response.text
        body = response.json()
        pages.append(body["items"])
        if body["next"] is None:
            return pages
        assert body["next"] == pages[-1][-1]["id"]
        query["after"] = body["next"]


@pytest.mark.parametrize("path", LISTS)
def test_each_list_comes_in_keyset_pages_at_a_fixed_cost(
    api: Api, statements: Callable[[], int], path: str
) -> None:
    whole = api.call("GET", path, "admin").json()
    assert whole["next"] is None
    with session_scope(api.engine) as s:
        more_of_everything(s)
    everything = api.call("GET", path, "admin").json()["items"]
    assert len(everything) == len(whole["items"]) + MORE
    ids = [item["id"] for item in everything]
    assert ids == sorted(ids) and all(item["name"] for item in everything)
    pages = _walk(api, path, 2)
    assert [item for page in pages for item in page] == everything
    assert [len(page) for page in pages[:-1]] == [2] * (len(pages) - 1)
    costs = []
    for limit in (1, len(everything)):
        start = statements()
        assert api.call("GET", path, "admin", params={"limit": limit}).status_code == 200
        costs.append(statements() - start)
    assert costs[0] == costs[1], costs
    assert api.call("GET", path, "admin", params={"after": ids[-1]}).json() == {
        "items": [],
        "next": None,
    }
    assert_problem(api.call("GET", path, "admin", params={"after": -1}), 422, "query.after")
    assert_problem(api.call("GET", path, "admin", params={"limit": 0}), 422, "query.limit")
    too_many = {"limit": C.API_PAGE_MAX + 1}
    assert_problem(api.call("GET", path, "admin", params=too_many), 422, "query.limit")


def test_a_page_shows_what_the_whole_list_did(api: Api) -> None:
    """The one-query pages keep each item's details: a domain's pool and VMs, an
    account's roles and organisation, a VLAN's addresses, an organisation's people."""
    with session_scope(api.engine) as s:
        more_of_everything(s)
    domain = api.call("GET", "/security-domains", "stu", params={"limit": 1000}).json()["items"]
    last = next(d for d in domain if d["name"] == "d-more4")
    assert (last["pool_size"], last["pool_used"], last["vms"], last["vlan_tag"]) == (3, 0, 1, 64)
    assert "hidden" not in {d["name"] for d in domain}  # stu's share only
    people = api.call("GET", "/users", "admin", params={"limit": 1000}).json()["items"]
    shown = {p["name"]: (p["organisation"], p["roles"]) for p in people}
    assert shown["u-more0"] == ("ORG_more0", ["faculty", "user"])
    assert shown["admin"] == ("ORG_A", ["admin", "user"])
    vlans = api.call("GET", "/vlans", "admin", params={"limit": 1000}).json()["items"]
    assert {(v["name"], v["total"], v["free"]) for v in vlans if v["tag"] == 62} == {
        ("d-more2-vlan62", 3, 3)
    }
    orgs = api.call("GET", "/organisations", "admin", params={"limit": 1000}).json()["items"]
    assert next(o for o in orgs if o["name"] == "ORG_more0")["users"] == 1
