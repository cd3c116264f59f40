"""Statements run straight on the driver's cursor give what SQLAlchemy gives, are seen by
the statement counters, fail as SQLAlchemy's errors, and drop a connection that died."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    bindparam,
    func,
    select,
    text,
)
from sqlalchemy.exc import DBAPIError

from baadal.db.direct import DirectQuery
from baadal.db.session import session_scope
from tests.support.statements import counted

pytestmark = pytest.mark.unit

_metadata = MetaData()
_probe = Table(
    "direct_probe",
    _metadata,
    Column("id", Integer, primary_key=True),
    Column("at", DateTime),
    Column("flag", Boolean),
    Column("name", String(20)),
)
_SINCE = datetime(2026, 1, 1, 12, 30, 15, 250000)
_SELECTED = DirectQuery(
    select(_probe.c.id, _probe.c.at, _probe.c.flag, _probe.c.name)
    .where(_probe.c.at >= bindparam("since", type_=DateTime), _probe.c.id > 0)
    .order_by(_probe.c.id)
)


@pytest.fixture
def probe(engine: Engine) -> Iterator[Engine]:
    _metadata.create_all(engine)
    with session_scope(engine) as session:
        session.execute(
            _probe.insert(),
            [
                {"id": 1, "at": _SINCE - timedelta(days=1), "flag": True, "name": "old"},
                {"id": 2, "at": _SINCE, "flag": False, "name": "it's"},
                {"id": 3, "at": _SINCE + timedelta(seconds=1), "flag": True, "name": None},
            ],
        )
    yield engine
    _metadata.drop_all(engine)


def test_rows_are_what_sqlalchemy_reads_with_values_bound_as_it_binds_them(probe: Engine) -> None:
    with session_scope(probe, read=True) as session:
        direct = _SELECTED.rows(session, {"since": _SINCE})
        usual = session.execute(_SELECTED.statement, {"since": _SINCE}).all()
    assert direct == [tuple(row) for row in usual]
    assert direct == [(2, _SINCE, False, "it's"), (3, _SINCE + timedelta(seconds=1), True, None)]
    assert all(type(row) is tuple for row in direct)


def test_every_statement_is_counted(probe: Engine) -> None:
    with counted() as seen, session_scope(probe, read=True) as session:
        _SELECTED.rows(session, {"since": _SINCE})
        _SELECTED.rows(session, {"since": _SINCE})
    assert len([sql for sql in seen if "FROM direct_probe" in sql]) == 2


def test_a_failing_statement_is_sqlalchemys_error_without_its_values(probe: Engine) -> None:
    _metadata.drop_all(probe)
    with pytest.raises(DBAPIError) as raised, session_scope(probe, read=True) as session:
        _SELECTED.rows(session, {"since": _SINCE})
    assert "direct_probe" in str(raised.value)
    assert "2026" not in str(raised.value)  # values never reach errors and logs
    _metadata.create_all(probe)  # the fixture drops it again


def test_values_that_expand_are_refused(probe: Engine) -> None:
    listed = DirectQuery(
        select(_probe.c.id).where(_probe.c.id.in_(bindparam("ids", expanding=True)))
    )
    with (
        pytest.raises(ValueError, match="plain named values"),
        session_scope(probe, read=True) as session,
    ):
        listed.rows(session, {"ids": [1, 2]})


@pytest.mark.postgres
def test_a_connection_that_died_is_dropped_and_the_next_read_works(pg_engine: Engine) -> None:
    pid_of = DirectQuery(select(func.pg_backend_pid()))
    with session_scope(pg_engine, read=True) as session:
        pid = pid_of.rows(session)[0][0]
    with session_scope(pg_engine) as session:
        session.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    with pytest.raises(DBAPIError) as raised, session_scope(pg_engine, read=True) as session:
        pid_of.rows(session)
    assert raised.value.connection_invalidated
    with session_scope(pg_engine, read=True) as session:
        assert pid_of.rows(session)[0][0] != pid
