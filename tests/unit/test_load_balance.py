"""Load balancing (vm_loadbalance) on the fake driver, whose hosts report the memory
their running guests hold and which migrates."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select
from typer.testing import CliRunner

from baadal import constants as C
from baadal.cli.main import app
from baadal.config import Settings, get_settings, load_settings
from baadal.db.models import VM, Host, PeriodicJob, Task
from baadal.db.session import session_scope
from baadal.drivers import fake
from baadal.errors import ConfigError
from baadal.host import load_balance
from baadal.services import hosts
from baadal.services.policy import SYSTEM
from baadal.tasks import queue
from baadal.tasks.periodic import sync_periodic_jobs
from baadal.tasks.registry import load_handler_modules
from baadal.vm import migration
from tests.support.cloud import Cloud, make_cloud
from tests.unit.test_vm_lifecycle import create, run_tasks

pytestmark = pytest.mark.unit

#: h1 (4 GB) will run four 1 GB guests (100 %), h2 (4 GB) one (25 %), h3 (8 GB) none
URIS = ["fake:///h1?memory_mb=4096", "fake:///h2?memory_mb=4096", "fake:///h3?memory_mb=8192"]


@pytest.fixture
def cloud(engine: Engine, settings: Settings, tmp_path: Path) -> Iterator[Cloud]:
    settings.vm.stop_timeout_s = 0.5
    settings.balance.memory_threshold_pct = 50
    fake.reset()
    cloud = make_cloud(engine, settings, tmp_path, URIS)
    for i in range(4):
        create(engine, settings, f"big{i}", ram_mb=1024, host="host1")
    create(engine, settings, "small", ram_mb=1024, host="host2")
    yield cloud
    fake.reset()


def hosts_of(engine: Engine) -> dict[str, str]:
    with session_scope(engine) as s:
        rows = s.execute(select(VM.vm_name, Host.host_name).join(Host, VM.host_id == Host.id))
        return dict(rows.all())


def migrations(engine: Engine) -> list[Task]:
    with session_scope(engine) as s:
        return list(s.scalars(select(Task).where(Task.task_type == C.TaskType.MIGRATE_VM_HOST)))


def test_vms_leave_an_overloaded_host_for_the_least_loaded_within_the_limit(
    engine: Engine, settings: Settings, cloud: Cloud
) -> None:
    plan = load_balance.plan_balance(engine, settings)
    # h1 at 100 %: two guests must leave (75 %, then 50 %), to h3 (the emptiest)
    assert [(m.source, m.dest) for m in plan.moves] == [("host1", "host3")] * 2
    assert {load.name: round(load.percent) for load in plan.loads} == {
        "host1": 50,
        "host2": 25,
        "host3": 25,
    }
    assert migrations(engine) == []  # a plan queues nothing

    settings.balance.max_migrations = 1
    one = hosts.balance(engine, SYSTEM, settings, dry_run=False)
    assert len(one.queued) == 1 and "host1: still above 50 % after this run" in one.notes
    (task,) = migrations(engine)
    assert task.requester_id == C.SYSTEM_USER_ID and task.parameters["destination_host"]
    # the limit counts what is queued already: nothing more until it has run
    full = hosts.balance(engine, SYSTEM, settings, dry_run=False)
    assert full.moves == [] and full.notes == [
        "1 migration(s) already queued or running",
        "host1: still above 50 % after this run",
    ]
    run_tasks(engine, settings)
    assert list(hosts_of(engine).values()).count("host3") == 1

    settings.balance.max_migrations = 2
    hosts.balance(engine, SYSTEM, settings, dry_run=False)
    run_tasks(engine, settings)
    placed = hosts_of(engine)
    assert sorted(placed.values()) == ["host1", "host1", "host2", "host3", "host3"]
    assert all(t.status == C.TaskStatus.SUCCESS for t in migrations(engine))
    assert load_balance.plan_balance(engine, settings).moves == []


def test_a_migration_someone_else_queued_counts_and_busy_vms_stay(
    engine: Engine, settings: Settings, cloud: Cloud
) -> None:
    settings.balance.max_migrations = 2
    with session_scope(engine) as s:
        big0 = s.scalar(select(VM.id).where(VM.vm_name == "big0"))
        migration.add_migrate_task_to_queue(s, big0, None, True, C.SYSTEM_USER_ID)
    plan = hosts.balance(engine, SYSTEM, settings, dry_run=False)
    assert len(plan.moves) == 1 and plan.moves[0].vm_name != "big0"
    assert len(migrations(engine)) == 2


def test_the_job_is_off_by_default_and_runs_as_a_task(
    engine: Engine, settings: Settings, cloud: Cloud
) -> None:
    registry = load_handler_modules()
    assert registry.periodic["vm_loadbalance"] == C.TaskType.VM_LOADBALANCE
    assert get_settings().scheduler.vm_loadbalance == 0
    assert "vm_loadbalance" not in sync_periodic_jobs(engine, registry.periodic, settings)
    settings.scheduler.vm_loadbalance = 3600
    assert "vm_loadbalance" in sync_periodic_jobs(engine, registry.periodic, settings)
    with session_scope(engine) as s:
        assert s.get(PeriodicJob, "vm_loadbalance").task_type == C.TaskType.VM_LOADBALANCE
        job = queue.enqueue(
            s, C.TaskType.VM_LOADBALANCE, parameters={"periodic_job": "vm_loadbalance"}
        ).id
    run_tasks(engine, settings)
    with session_scope(engine) as s:
        task = s.get(Task, job)
        moved = s.scalar(
            select(func.count())
            .select_from(Task)
            .where(Task.task_type == C.TaskType.MIGRATE_VM_HOST)
        )
    assert task.status == C.TaskStatus.SUCCESS and "host1 -> host3" in task.message
    assert moved == 2 and list(hosts_of(engine).values()).count("host1") == 2


def test_the_cli_shows_the_plan(
    engine: Engine,
    db_url: str,
    settings: Settings,
    cloud: Cloud,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BAADAL_DATABASE__URL", db_url)
    monkeypatch.setenv("BAADAL_BALANCE__MEMORY_THRESHOLD_PCT", "50")
    monkeypatch.setenv("COLUMNS", "200")
    get_settings.cache_clear()
    runner = CliRunner()
    dry = runner.invoke(app, ["host", "balance", "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "Load balancing would move" in dry.output and "host3" in dry.output
    assert migrations(engine) == []
    done = runner.invoke(app, ["host", "balance"])
    assert done.exit_code == 0 and "Load balancing moves" in done.output, done.output
    assert len(migrations(engine)) == 2


@pytest.mark.parametrize(
    ("section", "key", "value", "message"),
    [
        ("balance", "max_migrations", 0, "greater than or equal to 1"),
        ("balance", "memory_threshold_pct", 101, "less than or equal to 100"),
        ("general", "idle_vm_days", 61, "less than or equal to 60"),
        ("general", "cpu_threshold_limit", -1, "greater than or equal to 0"),
        ("scheduler", "vm_loadbalance", -5, "an interval must be >= 0 s"),
    ],
)
def test_balance_and_idle_settings_are_bounded(
    section: str, key: str, value: int, message: str
) -> None:
    with pytest.raises(ConfigError, match=f"bad setting {section}.{key}: .*{message}"):
        load_settings(**{section: {key: value}})


def test_two_balancing_runs_at_once_never_exceed_the_limit(
    engine: Engine, settings: Settings, cloud: Cloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A manual run while the periodic one queues: the second waits for the first and
    finds the slots taken (on PostgreSQL neither would see the other's tasks)."""
    settings.balance.max_migrations = 2
    settings.balance.memory_threshold_pct = 30  # three moves wanted, two allowed
    enqueue = queue.enqueue

    def slow_enqueue(*args: object, **kwargs: object) -> Task:
        time.sleep(0.3)
        return enqueue(*args, **kwargs)

    monkeypatch.setattr(queue, "enqueue", slow_enqueue)

    def run() -> None:
        hosts.balance(engine, SYSTEM, settings, dry_run=False)

    runs = [threading.Thread(target=run) for _ in range(2)]
    for run in runs:
        run.start()
    for run in runs:
        run.join(30)
    assert len(migrations(engine)) == 2
