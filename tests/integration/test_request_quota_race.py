"""Approvals racing for the last quota units on PostgreSQL: the owner's and the
organisation's quota rows are locked (SELECT ... FOR UPDATE) before the usage is counted,
so however many approvals run at once, exactly the quota's worth is queued."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from baadal.config import Settings
from baadal.db.models import VM
from baadal.db.session import session_scope
from baadal.drivers import fake
from tests.support.people import people_cloud, race_approvals

pytestmark = [pytest.mark.integration, pytest.mark.postgres]


@pytest.fixture
def pg_people(pg_engine: Engine, settings: Settings, tmp_path: Path) -> Iterator[Engine]:
    people_cloud(pg_engine, settings, tmp_path)
    yield pg_engine
    fake.reset()


@pytest.mark.parametrize("org", [False, True], ids=["user", "organisation"])
def test_racing_approvals_never_pass_the_quota_on_postgres(
    pg_people: Engine, settings: Settings, org: bool
) -> None:
    assert race_approvals(pg_people, settings, requests=8, vm_limit=3, org=org) == 3
    with session_scope(pg_people) as s:
        assert s.scalar(select(func.count()).select_from(VM)) == 3
