"""The row types service functions return, named for the doors' type hints.

Doors read these objects' attributes and never query or change them themselves.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import ColumnElement, Integer, Select, literal_column
from sqlalchemy.orm import InstrumentedAttribute

from baadal import constants as C
from baadal.db.models import (
    VM,
    Datastore,
    Host,
    HostEventLog,
    SecurityDomain,
    Snapshot,
    Task,
    TaskEvent,
    Template,
    User,
    Vlan,
)
from baadal.net.validators import check_int

__all__ = [
    "VM",
    "Datastore",
    "Host",
    "HostEventLog",
    "Page",
    "SecurityDomain",
    "Snapshot",
    "Task",
    "TaskEvent",
    "Template",
    "User",
    "Vlan",
]


T = TypeVar("T")


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a list and where the next starts (keyset pagination: a page costs the
    same on the first and the thousandth page, and nothing is skipped or shown twice
    when rows are added meanwhile)."""

    items: list[T]
    #: the id to continue from (``after`` or ``before``, as the list runs); None on the last
    next: int | None

    @classmethod
    def of(cls, rows: Sequence[T], limit: int | None, key: Callable[[T], int]) -> Page[T]:
        """``rows`` as queried with ``limit + 1``: the extra row only says that more follow
        (no limit: every row, one page)."""
        if limit is None:
            return cls(list(rows), None)
        items = list(rows[:limit])
        return cls(items, key(items[-1]) if len(rows) > limit else None)


def one_more_than(limit: int) -> ColumnElement[int]:
    """A page's LIMIT for a ``limit`` the caller checked: one row more (it says more
    follow), written into the SQL. With the count bound, PostgreSQL guessed a tenth of
    the table for a prepared page, found its plan for any value ten times dearer than
    one for the values at hand, and planned the page anew at every call (the VM page:
    1.1 ms of its CPU instead of 0.43)."""
    return literal_column(str(int(limit) + 1), Integer)


def keyset(
    query: Select[Any], key: InstrumentedAttribute[int], after: int | None, limit: int | None
) -> Select[Any]:
    """``query`` as one page in ``key`` order: rows above ``after``, one more than
    ``limit`` (for :meth:`Page.of`); no limit: every row (the CLI's lists, a form's
    choices)."""
    query = query.order_by(key)
    if after is not None:
        query = query.where(key > check_int(after, "after", 0, C.ROW_ID_MAX))
    if limit is not None:
        query = query.limit(one_more_than(check_int(limit, "page size", 1, C.API_PAGE_MAX)))
    return query
