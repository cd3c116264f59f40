"""SQL statements counted with an engine event: a per-row query shows as a count that
grows with the cloud."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import Engine, event

#: transaction control, and the read sessions' PRAGMA query_only (SQLite): not queries
_CONTROL = ("BEGIN", "COMMIT", "ROLLBACK", "PRAGMA query_only")


@contextmanager
def counted(target: Engine | type[Engine] = Engine) -> Iterator[list[str]]:
    """Every statement ``target`` runs meanwhile: one engine, or every engine (a read
    session's reader engine too)."""
    seen: list[str] = []

    def note(_conn: object, _cursor: object, statement: str, *_rest: object) -> None:
        seen.append(statement)

    event.listen(target, "before_cursor_execute", note)
    try:
        yield seen
    finally:
        event.remove(target, "before_cursor_execute", note)


def queries(statements: list[str]) -> list[str]:
    """The statements that are not transaction control."""
    return [statement for statement in statements if not statement.startswith(_CONTROL)]


@pytest.fixture(name="statements")
def count_statements() -> Iterator[Callable[[], int]]:
    """How many SQL statements every engine has run since the fixture began."""
    with counted() as seen:
        yield lambda: len(seen)
