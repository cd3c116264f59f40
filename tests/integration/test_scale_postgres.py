"""The set-based paths of issue 16 on PostgreSQL too: a cloud shutdown queues its tasks
in bulk with the rows ``enqueue`` writes (the ids read back by their creation time, which
must round-trip exactly), and the VM sanity sweep's statement count stays flat."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from baadal.config import Settings
from baadal.db.models import Task, TaskEvent
from baadal.db.session import session_scope
from baadal.drivers import fake
from baadal.host import maintenance
from baadal.vm.sanity import vm_sanity_check
from tests.unit.test_scale_counts import add_vms, cloud_of, counted

pytestmark = [pytest.mark.integration, pytest.mark.postgres]


def test_shutdown_queues_in_bulk_on_postgres(
    pg_engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    cloud_of(pg_engine, settings, tmp_path, 7)
    with session_scope(pg_engine) as s:
        queued = maintenance.shutdown_baadal(s)
    assert len(queued.task_ids) == 7 and queued.skipped == []
    with session_scope(pg_engine) as s:
        tasks = {t.id: t for t in s.scalars(select(Task).where(Task.id.in_(queued.task_ids)))}
        events = s.scalars(select(TaskEvent).where(TaskEvent.task_id.in_(queued.task_ids)))
        assert {e.task_id: (e.vm_id, e.vm_name) for e in events} == {
            t.id: (t.vm_id, f"vm{t.vm_id - 1}") for t in tasks.values()
        }
        assert all(t.parameters == {"vm_id": t.vm_id} for t in tasks.values())
    with session_scope(pg_engine) as s:  # every VM now has a task queued: all skipped
        again = maintenance.shutdown_baadal(s)
    assert again.task_ids == [] and len(again.skipped) == 7
    fake.reset()


def test_vm_sanity_statements_are_flat_on_postgres(
    pg_engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    cloud_of(pg_engine, settings, tmp_path, 3)
    with counted(pg_engine) as small:
        vm_sanity_check(pg_engine, settings)
    add_vms(pg_engine, 3, 6)
    with counted(pg_engine) as large:
        report = vm_sanity_check(pg_engine, settings)
    assert len(large) == len(small)
    assert [r.action for r in report.rows] == ["ok"] * 9
    fake.reset()
