"""Prebuilt Core statements run straight on the session's DBAPI cursor, for the reads
every API request makes (a token's check, a page of VMs, one VM).

SQLAlchemy still writes the SQL (compiled once per dialect) and the session still owns
the connection and its transaction; what is skipped is SQLAlchemy's execution context
and result objects, which cost a page of a hundred VMs on PostgreSQL 0.47 of the web
server's 1.0 ms (``bench/api.py``). Kept from that path: the dialect's conversions of
bound and read values, the engine's statement events (so counters still see every
statement; a listener cannot rewrite it here), SQLAlchemy's error types, and dropping a
connection that died.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

Row = tuple[Any, ...]


@dataclass(frozen=True)
class _Compiled:
    """A statement as one dialect runs it."""

    sql: str
    #: bound names in the order of a positional driver's markers (None: by name)
    positions: tuple[str, ...] | None
    #: values bound by the statement itself (its literals)
    defaults: dict[str, Any]
    binders: tuple[tuple[str, Callable[[Any], Any]], ...]
    #: (column index, conversion) for each column whose driver value needs one
    readers: tuple[tuple[int, Callable[[Any], Any]], ...]


class DirectQuery:
    """A select with named bound values (``bindparam``), run by :meth:`rows`. Values
    that expand at execution (``IN`` of a list) are refused when it is compiled."""

    __slots__ = ("_compiled", "statement")

    def __init__(self, statement: Select[Any]) -> None:
        self.statement = statement
        self._compiled: dict[str, _Compiled] = {}

    def rows(self, session: Session, values: Mapping[str, Any] | None = None) -> list[Row]:
        """Every row, as plain tuples in the select's column order."""
        connection = session.connection()
        dialect = connection.dialect
        compiled = self._compiled.get(dialect.name) or self._compile(dialect)
        bound = {**compiled.defaults, **values} if values else dict(compiled.defaults)
        for name, bind in compiled.binders:
            bound[name] = bind(bound[name])
        params: Any = bound
        if compiled.positions is not None:
            params = tuple([bound[name] for name in compiled.positions])
        cursor = connection.connection.cursor()
        connection.dispatch.before_cursor_execute(
            connection, cursor, compiled.sql, params, None, False
        )
        try:
            cursor.execute(compiled.sql, params)
            rows: list[Row] = cursor.fetchall()
        except dialect.loaded_dbapi.Error as error:
            dead = dialect.is_disconnect(error, connection.connection, cursor)
            if dead:
                connection.invalidate(error)
            raise DBAPIError.instance(
                compiled.sql,
                None,
                error,
                dialect.loaded_dbapi.Error,
                hide_parameters=True,
                connection_invalidated=dead,
                dialect=dialect,
            ) from error
        finally:
            cursor.close()
        if compiled.readers:
            rows = [_read(row, compiled.readers) for row in rows]
        return rows

    def _compile(self, dialect: Dialect) -> _Compiled:
        compiled = self.statement.compile(dialect=dialect)
        if compiled.post_compile_params or compiled.escaped_bind_names:
            raise ValueError("a direct query binds plain named values only")
        binders = []
        for name, bind in compiled.binds.items():
            process = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if process is not None:
                binders.append((name, process))
        readers = []
        for index, column in enumerate(self.statement.selected_columns):
            process = column.type.dialect_impl(dialect).result_processor(dialect, None)
            if process is not None:
                readers.append((index, process))
        self._compiled[dialect.name] = result = _Compiled(
            sql=compiled.string,
            positions=tuple(compiled.positiontup) if compiled.positiontup is not None else None,
            defaults={
                name: bind.effective_value
                for name, bind in compiled.binds.items()
                if not bind.required
            },
            binders=tuple(binders),
            readers=tuple(readers),
        )
        return result


def _read(row: Row, readers: tuple[tuple[int, Callable[[Any], Any]], ...]) -> Row:
    values = list(row)
    for index, process in readers:
        values[index] = process(values[index])
    return tuple(values)
