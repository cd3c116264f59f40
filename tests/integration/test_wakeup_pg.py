"""Wake-ups on PostgreSQL follow ``[worker] listen``: an enqueue sends NOTIFY while
workers listen, and none when they do not (nobody would hear it)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from baadal.config import Settings
from baadal.db.schema import upgrade
from baadal.db.session import dispose_engines, make_engine, session_scope
from baadal.services import runtime
from baadal.tasks import queue
from tests.support import handlers as H
from tests.support.statements import counted

pytestmark = [pytest.mark.integration, pytest.mark.postgres]


@pytest.fixture
def pg_settings(settings: Settings, pg_url: str) -> Iterator[Settings]:
    """Settings whose database is a migrated PostgreSQL one (the doors' engine)."""
    engine = make_engine(pg_url)
    upgrade(engine)
    engine.dispose()
    settings.database.url = pg_url
    yield settings
    dispose_engines()


def _notifies(engine: Engine) -> int:
    """How many NOTIFY statements one enqueue ran."""
    with counted(engine) as seen, session_scope(engine) as s:
        queue.enqueue(s, H.ECHO)
    return sum(1 for statement in seen if statement.startswith("NOTIFY"))


def test_notify_only_while_workers_listen(pg_settings: Settings) -> None:
    pg_settings.worker.listen = False
    engine = runtime.checked_engine(pg_settings)
    assert _notifies(engine) == 0
    pg_settings.worker.listen = True
    assert runtime.checked_engine(pg_settings) is engine
    assert _notifies(engine) == 1
