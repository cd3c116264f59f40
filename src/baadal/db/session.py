"""Engines and sessions. Nothing is created at import time: call :func:`get_engine`.

SQLite runs in WAL mode with foreign keys on, and every transaction that may write starts
with ``BEGIN IMMEDIATE``: writers queue on the database lock (busy timeout) instead of
failing halfway with "database is locked" when a read transaction tries to upgrade. A
read session (``session_scope(read=True)``) starts with a plain ``BEGIN`` and
``PRAGMA query_only``: it reads a WAL snapshot without taking the write lock, so a write
never waits for a read, and it cannot write (so it never needs to upgrade). PostgreSQL
uses READ COMMITTED for both; claims there rely on unique constraints and ``SKIP LOCKED``.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from baadal.config import Settings, get_settings
from baadal.home import private_dir, private_sqlite, secure_home

SQLITE_BUSY_TIMEOUT_MS = 30_000
#: execution option of the engines behind read sessions
READ_ONLY = "baadal_read_only"

_engines: dict[str, Engine] = {}


def _prepare_sqlite(engine: Engine, database: Path | None) -> None:
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
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        if conn.get_execution_options().get(READ_ONLY):
            conn.exec_driver_sql("BEGIN")
            conn.exec_driver_sql("PRAGMA query_only=ON")
            conn.info[READ_ONLY] = True
        else:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

    @event.listens_for(engine, "commit")
    @event.listens_for(engine, "rollback")
    def _on_end(conn: Any) -> None:
        # the pooled connection goes back able to write
        if conn.info.pop(READ_ONLY, False):
            conn.exec_driver_sql("PRAGMA query_only=OFF")


def make_engine(url: str, echo: bool = False) -> Engine:
    """Statement parameters are kept out of errors and logs: they hold VNC passwords."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = None
        if parsed.database and parsed.database != ":memory:":
            database = Path(parsed.database)
            if not database.parent.is_dir():
                private_dir(database.parent)
        engine = create_engine(
            url,
            echo=echo,
            hide_parameters=True,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
        )
        _prepare_sqlite(engine, database)
        return engine
    # no pre-ping: it costs a round trip per transaction; a connection that died is
    # dropped by the pool on its error and the worker loop retries
    return create_engine(url, echo=echo, hide_parameters=True, pool_size=10, max_overflow=20)


def get_engine(settings: Settings | None = None) -> Engine:
    """The engine for the settings' database, one per URL per process."""
    settings = settings or get_settings()
    url = settings.database_url
    if url not in _engines:
        secure_home(settings)
        _engines[url] = make_engine(url, settings.database.echo)
    return _engines[url]


def dispose_engines() -> None:
    """Forget pooled connections (after fork, or at the end of tests)."""
    for engine in _engines.values():
        engine.dispose()
    _engines.clear()
    _factories.clear()


def is_postgres(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"


_factories: weakref.WeakKeyDictionary[Engine, tuple[sessionmaker[Session], ...]] = (
    weakref.WeakKeyDictionary()
)


def _sessionmakers(engine: Engine) -> tuple[sessionmaker[Session], ...]:
    """(writer, reader) session factories; the reader's engine shares the pool."""
    factories = _factories.get(engine)
    if factories is None:
        reader = engine.execution_options(**{READ_ONLY: True})
        factories = _factories[engine] = (
            sessionmaker(bind=engine, expire_on_commit=False),
            sessionmaker(bind=reader, expire_on_commit=False),
        )
    return factories


def writer_of(engine: Engine) -> Engine:
    """The engine to write with, also when given the engine of a read session."""
    if engine.get_execution_options().get(READ_ONLY):
        return engine.execution_options(**{READ_ONLY: False})
    return engine


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
