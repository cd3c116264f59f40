"""One power task per host at a time, on SQLite and PostgreSQL: the waiting task is
found by the host id inside its JSON parameters, which each database reads its own way."""

from __future__ import annotations

import pytest

from baadal import constants as C
from baadal.db.models import Host
from baadal.db.session import make_engine, session_scope
from baadal.errors import ConflictError
from baadal.services import hosts
from baadal.services.policy import SYSTEM

pytestmark = pytest.mark.integration


def test_a_host_takes_one_power_task_at_a_time(db_url: str) -> None:
    engine = make_engine(db_url)
    with session_scope(engine) as s:
        for n in (1, 2):
            s.add(
                Host(
                    host_name=f"h{n}",
                    address=f"10.0.0.{n}",
                    CPUs=1,
                    RAM=1,
                    HDD=1,
                    libvirt_uri=f"test:///h{n}",
                    status=C.HostStatus.DOWN,
                )
            )
    with session_scope(engine) as s:
        first = hosts.request_power(s, SYSTEM, "h1", "on").id
    with session_scope(engine) as s, pytest.raises(ConflictError, match="already queued"):
        hosts.request_power(s, SYSTEM, "h1", "cycle")
    with session_scope(engine) as s:
        assert hosts.request_power(s, SYSTEM, "h2", "off").id != first
    engine.dispose()
