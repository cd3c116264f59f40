"""SQL statements counted with an engine event: a per-row query shows as a count that
grows with the cloud."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import Connection, Engine, event

#: transaction control, and the read sessions' PRAGMA query_only (SQLite): not queries
_CONTROL = ("BEGIN", "COMMIT", "ROLLBACK", "PRAGMA query_only")


def watch(target: Engine | type[Engine], note: Callable[[str], None]) -> Callable[[], None]:
    """Call ``note`` with every statement ``target`` (one engine, or every engine) runs
    from now on, SQLite's BEGIN included (the dialect issues it, apart from the other
    statements' events); returns what stops it."""

    def statement(_conn: object, _cursor: object, text: str, *_rest: object) -> None:
        note(text)

    def begin(conn: Connection) -> None:
        if conn.dialect.name == "sqlite":
            note("BEGIN")

    event.listen(target, "before_cursor_execute", statement)
    event.listen(target, "begin", begin)

    def stop() -> None:
        event.remove(target, "before_cursor_execute", statement)
        event.remove(target, "begin", begin)

    return stop


@contextmanager
def counted(target: Engine | type[Engine] = Engine) -> Iterator[list[str]]:
    """Every statement ``target`` runs meanwhile: one engine, or every engine (a read
    session's reader engine too)."""
    seen: list[str] = []
    stop = watch(target, seen.append)
    try:
        yield seen
    finally:
        stop()


def queries(statements: list[str]) -> list[str]:
    """The statements that are not transaction control."""
    return [statement for statement in statements if not statement.startswith(_CONTROL)]


@pytest.fixture(name="statements")
def count_statements() -> Iterator[Callable[[], int]]:
    """How many SQL statements every engine has run since the fixture began."""
    with counted() as seen:
        yield lambda: len(seen)
