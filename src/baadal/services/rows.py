"""The row types service functions return, named for the doors' type hints.

Doors read these objects' attributes and never query or change them themselves.
"""

from __future__ import annotations

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
    "SecurityDomain",
    "Snapshot",
    "Task",
    "TaskEvent",
    "Template",
    "User",
    "Vlan",
]
