"""The schema migrates on both databases, twice harmlessly, with all upstream tables."""

from __future__ import annotations

import pytest
from sqlalchemy import inspect, select

from baadal import constants as C
from baadal.db.migrate import current_revision, upgrade
from baadal.db.models import Base, User, UserGroup
from baadal.db.session import make_engine, session_scope

UPSTREAM_TABLES = {
    "constants", "organisation", "users", "user_group", "user_membership", "vlan",
    "security_domain", "public_ip_pool", "private_ip_pool", "host", "datastore", "template",
    "vm_data", "request_queue", "vm_event_log", "user_vm_map", "host_affinity",
    "attached_disks", "snapshot", "task_queue", "task_queue_event", "vnc_access",
}  # fmt: skip

pytestmark = pytest.mark.integration


def test_upgrade_creates_every_table_and_is_idempotent(db_url: str) -> None:
    engine = make_engine(db_url)
    upgrade(engine)  # second run: no error, no duplicate reference rows
    tables = set(inspect(engine).get_table_names())
    assert tables >= UPSTREAM_TABLES
    assert set(Base.metadata.tables) <= tables
    assert current_revision(engine) is not None
    with session_scope(engine) as s:
        roles = sorted(s.scalars(select(UserGroup.role)))
        assert roles == sorted(r.value for r in C.Role)
        assert s.get(User, C.SYSTEM_USER_ID).username == "system"
    engine.dispose()


def test_models_match_migrations(db_url: str) -> None:
    """No model change is missing a migration."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    engine = make_engine(db_url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    engine.dispose()
    assert diff == []
