"""Connections racing for one console token on PostgreSQL: claiming is one conditional
UPDATE (``used_at IS NULL``), so however many redeem it at once, exactly one gets the
console (the others' UPDATE, run after the winner's commit, matches no row)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import Engine

from baadal import constants as C
from baadal.config import Settings
from baadal.drivers import fake
from baadal.services import consoles
from baadal.services.policy import SYSTEM
from tests.support.cloud import make_cloud
from tests.unit.test_vm_lifecycle import create

pytestmark = [pytest.mark.integration, pytest.mark.postgres]

RACERS = 8


@pytest.fixture
def pg_vm(pg_engine: Engine, settings: Settings, tmp_path: Path) -> Iterator[int]:
    fake.reset()
    make_cloud(pg_engine, settings, tmp_path, ["fake:///h1"])
    yield create(pg_engine, settings)
    fake.reset()


def test_one_console_token_opens_exactly_one_connection_on_postgres(
    pg_engine: Engine, settings: Settings, pg_vm: int
) -> None:
    ticket = consoles.open_console(pg_engine, SYSTEM, settings, pg_vm)
    start = threading.Barrier(RACERS)

    def redeem(_: int) -> consoles.ConsoleTarget | None:
        start.wait()
        return consoles.redeem_console_token(pg_engine, ticket.token, C.SYSTEM_USER_ID)

    with ThreadPoolExecutor(RACERS) as pool:
        results = list(pool.map(redeem, range(RACERS)))
    winners = [r for r in results if r is not None]
    assert len(winners) == 1 and winners[0].vm_id == pg_vm
