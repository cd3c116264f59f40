"""The audit log's retention job: entries older than ``[audit] retention_days`` go, in
batches, the newer ones stay; 0 keeps everything and schedules no job."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import Engine, func, insert, select

from baadal import constants as C
from baadal.config import Settings
from baadal.db.models import AuditLog
from baadal.db.session import session_scope
from baadal.tasks import audit_retention
from baadal.tasks.params import PeriodicParams
from baadal.tasks.periodic import sync_periodic_jobs
from baadal.tasks.registry import TaskContext, load_handler_modules
from baadal.timeutil import utcnow
from tests.support.statements import counted

pytestmark = pytest.mark.unit


def _entries(engine: Engine, ages_days: list[float]) -> None:
    now = utcnow()
    with session_scope(engine) as s:
        s.execute(
            insert(AuditLog),
            [
                {"at": now - timedelta(days=age), "actor_id": 1, "actor_name": "admin",
                 "function": "vms.operate", "action": "VM_OPERATE", "outcome": "ok"}
                for age in ages_days
            ],
        )  # fmt: skip


def _ages(engine: Engine) -> list[int]:
    now = utcnow()
    with session_scope(engine) as s:
        return sorted(
            round((now - at).total_seconds() / 86400) for at in s.scalars(select(AuditLog.at))
        )


def test_old_entries_go_in_batches_and_newer_ones_stay(sqlite_engine: Engine) -> None:
    _entries(sqlite_engine, [400] * 7 + [366, 364, 10, 0])
    with counted(sqlite_engine) as seen:
        assert audit_retention.purge_audit(sqlite_engine, 365, batch=3) == 8
    deletes = [statement for statement in seen if statement.startswith("DELETE")]
    assert len(deletes) == 3  # 3 + 3 + 2: a transaction each
    assert _ages(sqlite_engine) == [0, 10, 364]
    assert audit_retention.purge_audit(sqlite_engine, 365, batch=3) == 0


def test_zero_keeps_every_entry_and_schedules_no_job(
    sqlite_engine: Engine, settings: Settings
) -> None:
    _entries(sqlite_engine, [5000, 1])
    assert audit_retention.purge_audit(sqlite_engine, 0) == 0
    assert _ages(sqlite_engine) == [1, 5000]
    jobs = load_handler_modules().periodic
    assert "audit_retention" in sync_periodic_jobs(sqlite_engine, jobs, settings)
    settings.audit.retention_days = 0
    assert settings.job_interval("audit_retention") == 0
    assert "audit_retention" not in sync_periodic_jobs(sqlite_engine, jobs, settings)


def test_the_periodic_job_applies_the_setting(sqlite_engine: Engine, settings: Settings) -> None:
    _entries(sqlite_engine, [40, 20])
    settings.audit.retention_days = 30
    ctx = TaskContext(
        1, C.TaskType.AUDIT_RETENTION, None, None, PeriodicParams(), 1, "w", sqlite_engine,
        settings,
    )  # fmt: skip
    result = audit_retention.audit_retention(ctx)
    assert result.message == "1 audit entries older than 30 days deleted"
    assert _ages(sqlite_engine) == [20]
    with session_scope(sqlite_engine) as s:
        assert s.scalar(select(func.count()).select_from(AuditLog)) == 1
