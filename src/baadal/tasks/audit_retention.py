"""The audit log's retention: a daily job deletes the entries older than ``[audit]
retention_days`` (0 keeps them forever), one batch per transaction, so a first run over
years of entries never holds the write lock long enough to stall the services' writes."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import Engine, delete, select

from baadal import constants as C
from baadal.db.models import AuditLog
from baadal.db.session import session_scope
from baadal.tasks.registry import TaskContext, TaskResult, handler
from baadal.timeutil import utcnow


def purge_audit(
    engine: Engine,
    retention_days: int,
    *,
    now: datetime | None = None,
    batch: int = C.AUDIT_PURGE_BATCH,
) -> int:
    """Delete the entries older than ``retention_days``, oldest first, ``batch`` per
    transaction; returns how many went."""
    if retention_days <= 0:
        return 0
    cutoff = (now or utcnow()) - timedelta(days=retention_days)
    oldest = select(AuditLog.id).where(AuditLog.at < cutoff).order_by(AuditLog.id).limit(batch)
    deleted = 0
    while True:
        with session_scope(engine) as session:
            ids = session.scalars(oldest).all()
            if ids:
                session.execute(delete(AuditLog).where(AuditLog.id.in_(ids)))
        deleted += len(ids)
        if len(ids) < batch:
            return deleted


@handler(C.TaskType.AUDIT_RETENTION, periodic=("audit_retention",))
def audit_retention(ctx: TaskContext) -> TaskResult:
    days = ctx.settings.audit.retention_days
    if not days:
        return TaskResult.success("the audit log keeps every entry ([audit] retention_days = 0)")
    deleted = purge_audit(ctx.engine, days)
    return TaskResult.success(f"{deleted} audit entries older than {days} days deleted")
