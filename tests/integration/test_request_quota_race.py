"""Requests racing on PostgreSQL.

Approvals racing for the last quota units: the owner's and the organisation's quota rows
are locked (SELECT ... FOR UPDATE) before the usage is counted, so however many approvals
run at once, exactly the quota's worth is queued.

Two submissions of one request: both pass the service's twin check (each sees only
committed rows), and the partial unique index lets exactly one in; the other is the same
one-line conflict a later twin gets."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from baadal.config import Settings
from baadal.db.models import VM, RequestQueue
from baadal.db.session import session_scope
from baadal.drivers import fake
from baadal.errors import ConflictError
from baadal.services import vm_requests
from baadal.services.policy import actor_for
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


def test_two_racing_twins_make_one_request_on_postgres(
    pg_people: Engine, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    both_checked = threading.Barrier(2)
    checked_once = threading.local()
    no_twin = vm_requests._no_twin

    def check_then_wait(session, req) -> None:  # type: ignore[no-untyped-def]
        """The check as it is, then wait until the other submission has passed it too
        (only the first time: the re-check after the index's refusal goes straight on)."""
        no_twin(session, req)
        if not getattr(checked_once, "done", False):
            checked_once.done = True
            both_checked.wait(timeout=60)

    monkeypatch.setattr(vm_requests, "_no_twin", check_then_wait)

    def submit(_: int) -> int | str:
        try:
            with session_scope(pg_people) as s:
                return vm_requests.request_create(
                    s,
                    actor_for(s, "stu"),
                    settings,
                    vm_name="twin",
                    template="tiny",
                    security_domain="research",
                    approver="fac",
                )
        except ConflictError as exc:
            return str(exc)

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(submit, range(2)))
    made = [r for r in results if isinstance(r, int)]
    refused = [r for r in results if isinstance(r, str)]
    assert len(made) == 1 and len(refused) == 1, results
    assert refused[0] == (
        f"there is already a pending request for a VM named 'twin' (request {made[0]})"
    )
    with session_scope(pg_people) as s:
        assert s.scalar(select(func.count()).select_from(RequestQueue)) == 1
