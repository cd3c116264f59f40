"""Engines and sessions. Nothing is created at import time: call :func:`get_engine`.

SQLite runs in WAL mode with foreign keys on, and every transaction that may write starts
with ``BEGIN IMMEDIATE``: writers queue on the database lock (busy timeout) instead of
failing halfway with "database is locked" when a read transaction tries to upgrade.

Read sessions (``session_scope(read=True)``) use a reader engine of their own, whose
connections cannot write (a write in them fails at once):

- SQLite: ``PRAGMA query_only`` is set once per connection, and a read starts with a
  plain ``BEGIN``: it reads a WAL snapshot without taking the write lock, so a write
  never waits for a read, and it never needs to upgrade.
- PostgreSQL: read-only connections in autocommit. Under READ COMMITTED every statement
  sees its own snapshot anyway, so a read transaction's BEGIN and COMMIT were two round
  trips that bought nothing.

PostgreSQL's writers use READ COMMITTED; claims rely on unique constraints and
``SKIP LOCKED``.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import Session, sessionmaker

from baadal.config import Settings, get_settings
from baadal.home import private_dir, private_sqlite, secure_home

SQLITE_BUSY_TIMEOUT_MS = 30_000
#: a reader engine's pool (its connections serve short reads: fewer than a writer's)
READER_POOL_SIZE, READER_MAX_OVERFLOW = 5, 10

_engines: dict[str, Engine] = {}


def _prepare_sqlite(engine: Engine, database: Path | None, *, read_only: bool = False) -> None:
    if database is not None:

        @event.listens_for(engine, "do_connect")
        def _private_file(*_args: Any) -> None:
            # before SQLite creates it, so the file and its -wal/-shm are never readable
            # by others; a directory in its place is left for SQLite to report
            if not database.is_dir():
                private_sqlite(database)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # let SQLAlchemy, not pysqlite, decide where transactions begin
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA synchronous=NORMAL")
        if read_only:
            cur.execute("PRAGMA query_only=ON")
        cur.close()

    # issued by the dialect, not by a "begin" connection event: an engine with
    # connection events dispatches them around every statement (a fifth of the cost of
    # a short transaction)
    engine.dialect.do_begin = functools.partial(  # type: ignore[method-assign]
        _begin, "BEGIN" if read_only else "BEGIN IMMEDIATE"
    )


def _begin(statement: str, dbapi_connection: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(statement)
    finally:
        cursor.close()


def _sqlite_file(url: URL) -> Path | None:
    if url.database and url.database != ":memory:":
        return Path(url.database)
    return None


def make_engine(url: str | URL, echo: bool = False, *, read_only: bool = False) -> Engine:
    """Statement parameters are kept out of errors and logs: they hold VNC passwords.
    ``read_only``: a reader engine (see the module's docstring)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = _sqlite_file(parsed)
        if database is not None and not database.parent.is_dir():
            private_dir(database.parent)
        # a file's pool hands out the connection used last (its page and statement
        # caches are warm; first-in-first-out rotated through them all)
        lifo = {"pool_use_lifo": True} if database is not None else {}
        engine = create_engine(
            parsed,
            echo=echo,
            hide_parameters=True,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
            **lifo,
        )
        _prepare_sqlite(engine, database, read_only=read_only)
        return engine
    # no pre-ping: it costs a round trip per transaction; a connection that died is
    # dropped by the pool on its error and the worker loop retries. No JIT: Baadal's
    # queries are short, and a plan PostgreSQL costs high (pool usage over 25,000
    # addresses) was JIT-compiled at every call, 0.2 s each
    if read_only:
        return create_engine(
            parsed,
            echo=echo,
            hide_parameters=True,
            isolation_level="AUTOCOMMIT",
            connect_args={"options": "-c jit=off -c default_transaction_read_only=on"},
            pool_size=READER_POOL_SIZE,
            max_overflow=READER_MAX_OVERFLOW,
            pool_use_lifo=True,
        )
    return create_engine(
        parsed,
        echo=echo,
        hide_parameters=True,
        connect_args={"options": "-c jit=off"},
        pool_size=10,
        max_overflow=20,
        pool_use_lifo=True,  # the backend used last: its prepared statements are warm
    )


def get_engine(settings: Settings | None = None) -> Engine:
    """The engine for the settings' database, one per URL per process."""
    settings = settings or get_settings()
    url = settings.database_url
    if url not in _engines:
        secure_home(settings)
        _engines[url] = make_engine(url, settings.database.echo)
    return _engines[url]


def dispose_engines() -> None:
    """Forget pooled connections (after fork, or at the end of tests), the reader
    engines' too."""
    for engine in _engines.values():
        dispose(engine)
    _engines.clear()
    _factories.clear()


def dispose(engine: Engine) -> None:
    """``engine.dispose()``, and its reader's (a listener on the writer's disposal would
    be a connection event: see :func:`_prepare_sqlite`)."""
    engine.dispose()
    factories = _factories.get(engine)
    if factories is not None:
        reader = factories[1].kw["bind"]
        if reader is not engine:
            reader.dispose()


def is_postgres(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"


_factories: weakref.WeakKeyDictionary[Engine, tuple[sessionmaker[Session], ...]] = (
    weakref.WeakKeyDictionary()
)


#: each reader engine's writer (a refusal met in a read session is audited by the writer)
_writers: weakref.WeakKeyDictionary[Engine, weakref.ref[Engine]] = weakref.WeakKeyDictionary()


def _reader_for(engine: Engine) -> Engine:
    """The writer's reader engine: its own pool, disposed with the writer's by
    :func:`dispose` (and closed when it is garbage collected). An in-memory SQLite
    database exists only in its own connections: it reads through its writer."""
    if engine.dialect.name == "sqlite" and _sqlite_file(engine.url) is None:
        return engine
    reader = make_engine(engine.url, bool(engine.echo), read_only=True)
    _writers[reader] = weakref.ref(engine)
    return reader


def _sessionmakers(engine: Engine) -> tuple[sessionmaker[Session], ...]:
    """(writer, reader) session factories of a writer engine."""
    factories = _factories.get(engine)
    if factories is None:
        factories = _factories[engine] = (
            sessionmaker(bind=engine, expire_on_commit=False),
            sessionmaker(bind=_reader_for(engine), expire_on_commit=False),
        )
    return factories


def writer_of(engine: Engine) -> Engine:
    """The engine to write with, also when given the engine of a read session."""
    writer = _writers.get(engine)
    return (writer() if writer else None) or engine


@contextmanager
def session_scope(engine: Engine | None = None, *, read: bool = False) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on any error.

    On SQLite a writing transaction holds the write lock from its start: keep slow calls
    (libvirt, qemu-img) outside it. With ``read`` it takes no lock and cannot write
    (see the module's docstring); on PostgreSQL it is an ordinary transaction.
    """
    writer, reader = _sessionmakers(engine or get_engine())
    with (reader if read else writer)() as session, session.begin():
        yield session
