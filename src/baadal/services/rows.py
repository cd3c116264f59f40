"""The row types service functions return, named for the doors' type hints.

Doors read these objects' attributes and never query or change them themselves.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

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
    def of(cls, rows: Sequence[T], limit: int, key: Callable[[T], int]) -> Page[T]:
        """``rows`` as queried with ``limit + 1``: the extra row only says that more follow."""
        items = list(rows[:limit])
        return cls(items, key(items[-1]) if len(rows) > limit else None)
