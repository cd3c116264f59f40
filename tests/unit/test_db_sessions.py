"""Read sessions: a write never waits for a read (SQLite WAL), and a read cannot write."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import Engine, func, select, text
from sqlalchemy.exc import DBAPIError, OperationalError

from baadal.db.models import Organisation
from baadal.db.session import dispose, session_scope
from tests.support.statements import counted

pytestmark = pytest.mark.unit

#: only a safety net against a hung test: the assertions use the order of events
_SAFETY_S = 60


def _organisations(engine: Engine) -> int:
    with session_scope(engine, read=True) as s:
        return s.scalar(select(func.count()).select_from(Organisation)) or 0


def test_a_write_commits_while_a_long_read_is_open(engine: Engine) -> None:
    before = _organisations(engine)
    reading, written, read_done = threading.Event(), threading.Event(), threading.Event()
    seen: dict[str, int] = {}

    def reader() -> None:
        with session_scope(engine, read=True) as s:
            seen["first"] = s.scalar(select(func.count()).select_from(Organisation)) or 0
            reading.set()
            # hold the read transaction open until the write has committed; if the write
            # had to wait for this read, it would not commit before the safety net ends it
            written.wait(_SAFETY_S)
            seen["again"] = s.scalar(select(func.count()).select_from(Organisation)) or 0
        read_done.set()

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        assert reading.wait(_SAFETY_S)
        with session_scope(engine) as s:
            s.add(Organisation(name="while-reading", public_ip="10.0.0.9"))
        # the write committed and the read was still open
        assert not read_done.is_set()
    finally:
        written.set()
        thread.join()
    assert seen["first"] == before
    assert _organisations(engine) == before + 1
    if engine.dialect.name == "sqlite":
        # one snapshot for the whole read transaction
        assert seen["again"] == before


def test_sqlite_runs_in_wal_mode_and_a_read_session_cannot_write(sqlite_engine: Engine) -> None:
    with session_scope(sqlite_engine, read=True) as s:
        assert s.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        with pytest.raises(OperationalError, match="readonly"):
            s.execute(text("DELETE FROM organisation"))
    # the pooled connection writes again in a writing session
    with session_scope(sqlite_engine) as s:
        s.add(Organisation(name="after-read", public_ip="10.0.0.8"))
    assert _organisations(sqlite_engine) >= 1


def test_a_read_session_cannot_write_on_either_database(engine: Engine) -> None:
    with (
        session_scope(engine, read=True) as s,
        pytest.raises(DBAPIError, match=r"(?i)read.?only"),
    ):
        s.execute(text("DELETE FROM organisation"))
    # the writer's sessions still write
    with session_scope(engine) as s:
        s.add(Organisation(name="after-refused-write", public_ip="10.0.0.7"))
    assert _organisations(engine) >= 1


def test_engines_dispatch_no_connection_event_and_dispose_their_reader(engine: Engine) -> None:
    """SQLite's BEGIN comes from the dialect: an engine with a connection event listener
    (SQLAlchemy's recipe for it) dispatches events around every statement. So the
    reader is disposed with its writer by ``dispose``, not by an ``engine_disposed``
    listener."""
    with session_scope(engine, read=True) as s:
        reader = s.get_bind()
        s.execute(text("SELECT 1"))
    # a listener on the engine marks it (a test's listener on every Engine marks the
    # class, for the rest of the process)
    assert not vars(engine).get("_has_events") and not vars(reader).get("_has_events")
    if reader is not engine:
        assert reader.pool.checkedin() == 1
        dispose(engine)
        assert reader.pool.checkedin() == 0


def test_a_read_session_costs_no_statement_but_its_reads(engine: Engine) -> None:
    """No lock or mode switch per read: only BEGIN on SQLite (its snapshot), nothing on
    PostgreSQL (autocommit: each statement reads its own snapshot under READ COMMITTED)."""
    with session_scope(engine, read=True) as s:  # connected: its setup is not per read
        reader = s.get_bind()
    with counted(reader) as seen:
        _organisations(engine)
    begins = ["BEGIN"] if engine.dialect.name == "sqlite" else []
    assert seen[:-1] == begins and seen[-1].startswith("SELECT count(*)")


@pytest.mark.postgres
def test_postgresql_connections_plan_without_jit(pg_engine: Engine) -> None:
    """Short queries only: a plan PostgreSQL costs high was JIT-compiled at every call."""
    for read in (False, True):
        with session_scope(pg_engine, read=read) as s:
            assert s.execute(text("SHOW jit")).scalar() == "off"
