"""Sessions and engines for the doors: a database whose schema is current, one
transaction per request (the door decides where it ends)."""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from baadal.config import Settings, get_settings
from baadal.db.schema import require_schema
from baadal.db.session import get_engine, is_postgres, session_scope
from baadal.tasks.wakeup import set_listening

#: engines whose database's schema was found current (by engine, not URL: rendering an
#: engine's URL cost every request 15 µs twice)
_schema_checked: weakref.WeakSet[Engine] = weakref.WeakSet()


def checked_engine(settings: Settings | None = None) -> Engine:
    """The engine of a database whose schema is current (checked once per process), whose
    wake-ups NOTIFY workers only if they listen (``[worker] listen``)."""
    settings = settings or get_settings()
    engine = get_engine(settings)
    if engine not in _schema_checked:
        require_schema(engine)
        _schema_checked.add(engine)
    set_listening(engine, settings.worker.listen)
    return engine


@contextmanager
def transaction(settings: Settings | None = None) -> Iterator[Session]:
    """One session, committed when the block ends, rolled back when it raises."""
    with session_scope(checked_engine(settings)) as session:
        yield session


@contextmanager
def read_transaction(settings: Settings | None = None) -> Iterator[Session]:
    """A session that only reads: on SQLite it takes no write lock (a write never waits
    for it) and any write in it fails; on PostgreSQL it is an ordinary transaction."""
    with session_scope(checked_engine(settings), read=True) as session:
        yield session


def reads_are_local(settings: Settings | None = None) -> bool:
    """Whether a read is CPU work on a local file that never waits (SQLite in WAL mode:
    readers take no lock a writer holds), rather than a round trip to a server."""
    return not is_postgres(checked_engine(settings))
