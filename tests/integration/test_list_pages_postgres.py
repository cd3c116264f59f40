"""The one-query pages of the admin lists (correlated counts, the roles aggregated per
account), the VM page the database writes as JSON and the registration count run on
PostgreSQL as on SQLite."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import Engine, insert, text

from baadal.api.schemas import VM_OUT_FIELDS
from baadal.auth import throttle
from baadal.config import Settings
from baadal.db.models import VM
from baadal.db.session import session_scope
from baadal.errors import RegistrationThrottled
from baadal.services import inventory, networks, organisations, pools, users, vms
from baadal.services.policy import SYSTEM, actor_for
from baadal.services.rows import Page
from baadal.timeutil import utcnow
from tests.unit.test_api_lists import MORE, more_of_everything
from tests.unit.test_api_routes import json_pages_match
from tests.unit.test_authorization import build_world

pytestmark = [pytest.mark.integration, pytest.mark.postgres]

LISTS: list[Callable[..., Page]] = [
    inventory.list_hosts,
    inventory.list_datastores,
    inventory.list_templates,
    networks.list_security_domains,
    pools.list_vlans,
    users.list_accounts,
    organisations.list_organisations,
]


def test_every_list_pages_on_postgres(
    pg_engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    build_world(pg_engine, settings, tmp_path)
    with session_scope(pg_engine) as s:
        more_of_everything(s)
    with session_scope(pg_engine) as s:
        admin = actor_for(s, "admin")
        for listing in LISTS:
            whole = listing(s, admin).items
            assert len(whole) >= MORE, listing.__name__
            seen, after = [], None
            while True:
                page = listing(s, admin, after=after, limit=2)
                seen += page.items
                if page.next is None:
                    break
                after = page.next
            assert seen == whole and [i.id for i in seen] == sorted(i.id for i in seen)
        accounts = {a.username: a for a in users.list_accounts(s, admin).items}
        assert [r.value for r in accounts["u-more0"].roles] == ["faculty", "user"]
        domain = next(d for d in networks.list_security_domains(s, admin).items if d.vlan_tag == 64)
        assert (domain.pool_size, domain.pool_used, domain.vms) == (3, 0, 1)


def test_the_registration_count_on_postgres(pg_engine: Engine) -> None:
    for _ in range(2):
        with session_scope(pg_engine) as s:
            throttle.count_registration(s, "192.0.2.1", 2, 600, utcnow())
    with pytest.raises(RegistrationThrottled), session_scope(pg_engine) as s:
        throttle.count_registration(s, "192.0.2.1", 2, 600, utcnow())
    with session_scope(pg_engine) as s:
        throttle.count_registration(s, "192.0.2.2", 2, 600, utcnow())


def test_the_vm_page_as_json_on_postgres(
    pg_engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    build_world(pg_engine, settings, tmp_path)
    json_pages_match(pg_engine)


def test_postgres_plans_the_vm_page_once_not_at_every_call(pg_engine: Engine) -> None:
    """With the page's row count bound, PostgreSQL took a tenth of 25,000 VMs for it,
    judged its plan for any value dearer than one for the values at hand, and planned
    the page anew at every call (more than twice its CPU): the count is in the SQL."""
    with session_scope(pg_engine) as s:
        s.execute(
            insert(VM),
            [
                {"vm_name": f"v{i}", "vm_identity": f"V_{i}", "RAM": 256, "vCPU": 1}
                for i in range(25_000)
            ],
        )
        s.execute(text("ANALYZE"))
    with session_scope(pg_engine, read=True) as s:
        afters = [0, 24_000, *range(1_000, 21_000, 2_000)]
        for after in afters:
            page = vms.list_vm_page_json(s, SYSTEM, VM_OUT_FIELDS, after=after, limit=100)
            assert page.next == (after + 100 if after + 100 < 25_000 else None)
        plans = s.execute(
            text(
                "SELECT generic_plans, custom_plans FROM pg_prepared_statements"
                " WHERE statement LIKE '%FROM vm_data%'"
            )
        ).one()
    # psycopg prepares a statement at its sixth call; PostgreSQL plans it for the values
    # five times, then keeps one plan for any value
    assert plans.generic_plans >= len(afters) - 10 and plans.custom_plans <= 5, plans
