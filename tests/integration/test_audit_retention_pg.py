"""The audit log's retention job on PostgreSQL: the cutoff holds on its timestamp type,
the entries go in batches, and a service's audit write made while a batch is being
deleted neither waits for the purge nor goes with it."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Engine, event, func, insert, select

from baadal.db.models import AuditLog
from baadal.db.session import session_scope
from baadal.tasks import audit_retention
from tests.unit.test_audit_retention import _ages, _entries

pytestmark = [pytest.mark.integration, pytest.mark.postgres]


def test_old_entries_go_in_batches_on_postgres(pg_engine: Engine) -> None:
    _entries(pg_engine, [400] * 7 + [366, 364, 10, 0])
    assert audit_retention.purge_audit(pg_engine, 365, batch=3) == 8
    assert _ages(pg_engine) == [0, 10, 364]
    assert audit_retention.purge_audit(pg_engine, 365, batch=3) == 0


def test_a_write_during_a_purge_batch_commits_and_stays(pg_engine: Engine) -> None:
    """Inside the first batch's transaction, after its DELETE, another connection writes
    an audit entry and commits: on PostgreSQL the purge's row locks do not hold it up
    (on SQLite this write would wait for the purge's lock), and it is not purged."""
    _entries(pg_engine, [400] * 5)
    written: list[int] = []

    def write_now(conn: Any, *_rest: object) -> None:
        if written or conn.engine is not pg_engine:
            return
        with pg_engine.connect() as other:
            row = {"at": func.now(), "actor_id": 1, "actor_name": "admin",
                   "function": "vms.operate", "action": "VM_OPERATE", "outcome": "ok"}  # fmt: skip
            written.append(other.execute(insert(AuditLog).values(row)).inserted_primary_key[0])
            other.commit()

    def after_delete(conn: Any, _cursor: object, statement: str, *rest: object) -> None:
        if statement.startswith("DELETE"):
            write_now(conn)

    event.listen(pg_engine, "after_cursor_execute", after_delete)
    try:
        assert audit_retention.purge_audit(pg_engine, 365, batch=2) == 5
    finally:
        event.remove(pg_engine, "after_cursor_execute", after_delete)
    assert len(written) == 1
    with session_scope(pg_engine) as s:
        assert s.scalars(select(AuditLog.id)).all() == written
