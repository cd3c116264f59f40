"""Idle and long shut-off VMs (vm_daily_checks, vm_garbage_collector): VMs on the fake
driver, their history in real RRD files the tests write, the jobs run as tasks."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import rrdtool
from sqlalchemy import Engine, func, select, update
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from baadal import constants as C
from baadal.auth.roles import add_membership_db
from baadal.cli.main import app
from baadal.config import Settings, get_settings
from baadal.db.models import VM, Task, User, UserVMMap, VMEventLog
from baadal.db.session import session_scope
from baadal.drivers import fake
from baadal.errors import ConflictError
from baadal.home import private_dir
from baadal.mail import notify
from baadal.monitor import rrd
from baadal.services import idle_vms
from baadal.services.policy import SYSTEM
from baadal.tasks import queue
from baadal.timeutil import utcnow
from baadal.vm import idle_checks
from baadal.vm.idle_checks import IdleAction
from tests.support.cloud import Cloud, make_cloud
from tests.unit.test_vm_lifecycle import create, hv_of, operate, run_tasks

pytestmark = pytest.mark.unit

STEP = C.RRD_STEP_S
DAY = 86400


@pytest.fixture
def cloud(engine: Engine, settings: Settings, tmp_path: Path) -> Iterator[Cloud]:
    settings.general.snapshot_requires_ping = False
    settings.vm.stop_timeout_s = 0.5
    fake.reset()
    yield make_cloud(engine, settings, tmp_path, ["fake:///h1"])
    fake.reset()


@pytest.fixture
def warnings(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, datetime]]:
    """The idle warnings the mail module was asked to send: (VM, kind, deadline)."""
    sent: list[tuple[str, str, datetime]] = []

    def record(session: Session, vm: VM, kind: str, deadline: datetime) -> None:
        assert session.get(VM, vm.id) is vm  # in the caller's transaction
        sent.append((vm.vm_name, kind, deadline))

    monkeypatch.setattr(notify, "idle_warning", record)
    return sent


def write_history(
    settings: Settings,
    identity: str,
    start: int,
    end: int,
    *,
    cpu_pct: float = 2.0,
    rx: int = 1000,
    tx: int = 500,
    burst: tuple[int, int] | None = None,
) -> None:
    """Five-minute rows from ``start`` to ``end``: steady rates, and 90 % CPU during
    ``burst`` (Unix times), as the collector would have recorded them."""
    path = rrd.get_rrd_file(settings, identity)
    private_dir(path.parent)
    rrd.create_rrd(path, start - 1)
    rows, cpu, received, sent = [], 0.0, 0, 0
    for t in range(start, end + 1, STEP):
        rows.append(f"{t}:{int(cpu)}:0:0:0:{sent}:{received}")
        busy = burst is not None and burst[0] <= t < burst[1]
        cpu += (90.0 if busy else cpu_pct) * STEP
        received, sent = received + rx * STEP, sent + tx * STEP
    for i in range(0, len(rows), 2000):
        rrdtool.update(str(path), *rows[i : i + 2000])


def as_datetime(t: int) -> datetime:
    return datetime.fromtimestamp(t, UTC).replace(tzinfo=None)


def identity_of(engine: Engine, vm_id: int) -> str:
    with session_scope(engine) as s:
        return s.get(VM, vm_id).vm_identity


def backdate(engine: Engine, vm_id: int, days: int) -> None:
    """The VM was made ``days`` ago, and its status last changed then."""
    then = utcnow() - timedelta(days=days)
    with session_scope(engine) as s:
        s.execute(update(VM).where(VM.id == vm_id).values(start_time=then))
        s.execute(update(VMEventLog).where(VMEventLog.vm_id == vm_id).values(timestamp=then))


def vm_row(engine: Engine, vm_id: int) -> VM | None:
    with session_scope(engine) as s:
        return s.get(VM, vm_id)


def run_job(engine: Engine, settings: Settings, task_type: C.TaskType, job: str) -> Task:
    with session_scope(engine) as s:
        task_id = queue.enqueue(s, task_type, parameters={"periodic_job": job}).id
    run_tasks(engine, settings)
    with session_scope(engine) as s:
        return s.get(Task, task_id)


def state(engine: Engine) -> tuple[object, ...]:
    """Every VM row's idle columns, the task and event counts."""
    with session_scope(engine) as s:
        vms = s.execute(
            select(
                VM.id, VM.status, VM.locked, VM.shutdown_warning_date, VM.delete_warning_date
            ).order_by(VM.id)
        ).all()
        tasks = s.scalar(select(func.count()).select_from(Task))
        events = s.scalar(select(func.count()).select_from(VMEventLog))
    return tuple(vms), tasks, events


def test_an_idle_vm_is_warned_then_destroyed_unless_busy_locked_or_kept(
    engine: Engine,
    settings: Settings,
    cloud: Cloud,
    warnings: list[tuple[str, str, datetime]],
) -> None:
    end = int(utcnow().replace(tzinfo=UTC).timestamp()) // STEP * STEP
    start = end - 41 * DAY
    first_check = as_datetime(end - 21 * DAY)  # the daily check 21 days ago
    ids = {}
    for name in ("idle", "busy", "locked", "kept"):
        ids[name] = create(engine, settings, name)
        backdate(engine, ids[name], 60)
        identity = identity_of(engine, ids[name])
        # the busy VM reached 90 % CPU for three hours 30 days ago
        burst = (end - 30 * DAY, end - 30 * DAY + 3 * 3600) if name == "busy" else None
        write_history(settings, identity, start, end, burst=burst)
    with session_scope(engine) as s:
        idle_vms.set_locked(s, SYSTEM, "locked", True)

    before = state(engine)
    planned = idle_checks.plan_idle_vms(engine, settings, first_check)
    assert [(p.vm_name, p.action) for p in planned] == [
        ("idle", IdleAction.WARN_IDLE),
        ("kept", IdleAction.WARN_IDLE),
    ]
    assert "CPU 2.0 %" in planned[0].reason and "received 1000 B/s" in planned[0].reason
    assert state(engine) == before and not warnings  # planning changes nothing

    idle_checks.take_idle_steps(engine, planned)
    deadline = first_check + timedelta(days=settings.general.idle_warning_days)
    assert warnings == [("idle", "idle", deadline), ("kept", "idle", deadline)]
    assert vm_row(engine, ids["idle"]).shutdown_warning_date == deadline
    # nothing is due yet: a second run the same day does nothing
    assert idle_checks.plan_idle_vms(engine, settings, first_check) == []

    with session_scope(engine) as s:
        assert idle_vms.keep(s, SYSTEM, "kept") == "kept"
    assert vm_row(engine, ids["kept"]).shutdown_warning_date is None

    # 21 days on (now): the collector destroys what is still idle, through the queue
    task = run_job(engine, settings, C.TaskType.VM_GARBAGE_COLLECTOR, "vm_garbage_collector")
    assert task.status == C.TaskStatus.SUCCESS, task.message
    assert "idle: destroy queued" in task.message
    with session_scope(engine) as s:
        destroy = s.scalar(select(Task).where(Task.task_type == C.TaskType.DESTROY_VM))
        assert destroy.vm_id == ids["idle"] and destroy.status == C.TaskStatus.SUCCESS
        assert destroy.requester_id == C.SYSTEM_USER_ID
    idle = vm_row(engine, ids["idle"])
    assert idle.status == C.VMStatus.SHUTDOWN and idle.shutdown_warning_date is None
    hv, identity = hv_of(engine, ids["idle"])
    assert not hv.domain_info(identity).active
    for name in ("busy", "locked", "kept"):
        assert vm_row(engine, ids[name]).status == C.VMStatus.RUNNING, name
    # the kept VM is not warned again for the next period, the locked one never
    steps = idle_checks.plan_idle_vms(engine, settings)
    assert {p.vm_name for p in steps} == {"busy"}  # its burst is out of the window now


def test_a_vm_that_got_busy_or_has_no_history_is_not_destroyed(
    engine: Engine, settings: Settings, cloud: Cloud, warnings: list
) -> None:
    end = int(utcnow().replace(tzinfo=UTC).timestamp()) // STEP * STEP
    woke = create(engine, settings, "woke")
    unmeasured = create(engine, settings, "unmeasured")
    for vm_id in (woke, unmeasured):
        backdate(engine, vm_id, 60)
    # idle until 21 days ago, then it sends 50 kB/s for an hour
    write_history(settings, identity_of(engine, woke), end - 41 * DAY, end - 5 * DAY)
    path = str(rrd.get_rrd_file(settings, identity_of(engine, woke)))
    rrdtool.update(
        path,
        *(f"{end - 5 * DAY + i * STEP}:0:0:0:0:{i * 50_000 * STEP}:0" for i in range(1, 13)),
    )
    past = as_datetime(end - 20 * DAY)
    steps = idle_checks.plan_idle_vms(engine, settings, past)
    assert [(p.vm_name, p.action) for p in steps] == [("woke", IdleAction.WARN_IDLE)]
    idle_checks.take_idle_steps(engine, steps)

    task = run_job(engine, settings, C.TaskType.VM_GARBAGE_COLLECTOR, "vm_garbage_collector")
    assert "woke: warning cleared (no longer idle" in task.message, task.message
    row = vm_row(engine, woke)
    assert row.status == C.VMStatus.RUNNING and row.shutdown_warning_date is None
    with session_scope(engine) as s:
        assert s.scalar(select(Task).where(Task.task_type == C.TaskType.DESTROY_VM)) is None
    verdict = idle_checks.idle_verdict(settings, identity_of(engine, unmeasured), utcnow())
    assert verdict == (False, "history covers 0% of 20 days")
    damaged = rrd.get_rrd_file(settings, identity_of(engine, unmeasured))
    damaged.write_bytes(b"not an RRD file")
    idle, why = idle_checks.idle_verdict(settings, damaged.stem, utcnow())
    assert not idle and why.startswith(f"cannot read {damaged.name}:")


def test_a_vm_shut_off_too_long_is_warned_then_deleted(
    engine: Engine,
    settings: Settings,
    cloud: Cloud,
    warnings: list[tuple[str, str, datetime]],
) -> None:
    ids = {name: create(engine, settings, name) for name in ("old", "back", "recent")}
    for name, vm_id in ids.items():
        operate(engine, settings, vm_id, "destroy")
        if name != "recent":
            backdate(engine, vm_id, settings.general.shutdown_vm_days + 1)

    task = run_job(engine, settings, C.TaskType.VM_DAILY_CHECKS, "vm_daily_checks")
    assert task.status == C.TaskStatus.SUCCESS, task.message
    assert sorted(w[:2] for w in warnings) == [("back", "shutdown"), ("old", "shutdown")]
    deadline = vm_row(engine, ids["old"]).delete_warning_date
    assert deadline is not None and deadline > utcnow() + timedelta(days=19)
    assert vm_row(engine, ids["recent"]).delete_warning_date is None

    operate(engine, settings, ids["back"], "start")  # someone uses it again
    operate(engine, settings, ids["back"], "destroy")
    later = utcnow() + timedelta(days=settings.general.idle_warning_days + 1)
    steps = idle_checks.plan_idle_vms(engine, settings, later, warn=False)
    assert [(p.vm_name, p.action) for p in steps] == [
        ("old", IdleAction.DELETE),
        ("back", IdleAction.CLEAR),
    ]
    idle_checks.take_idle_steps(engine, steps)
    run_tasks(engine, settings)
    assert vm_row(engine, ids["old"]) is None
    back = vm_row(engine, ids["back"])
    assert back.status == C.VMStatus.SHUTDOWN and back.delete_warning_date is None


def test_keep_lock_and_a_step_overtaken_by_a_keep(
    engine: Engine, settings: Settings, cloud: Cloud, warnings: list
) -> None:
    vm_id = create(engine, settings, "web")
    operate(engine, settings, vm_id, "destroy")
    backdate(engine, vm_id, 200)
    with session_scope(engine) as s, pytest.raises(ConflictError, match="no idle or"):
        idle_vms.keep(s, SYSTEM, "web")
    steps = idle_checks.plan_idle_vms(engine, settings)
    idle_checks.take_idle_steps(engine, steps)
    assert vm_row(engine, vm_id).delete_warning_date is not None
    # a user keeps it between the collector's plan and its step: the user wins
    later = utcnow() + timedelta(days=30)
    planned = idle_checks.plan_idle_vms(engine, settings, later)
    assert [p.action for p in planned] == [IdleAction.DELETE]
    with session_scope(engine) as s:
        idle_vms.keep(s, SYSTEM, "web")
    assert idle_checks.take_idle_steps(engine, planned) == ["web: changed meanwhile, left alone"]
    assert vm_row(engine, vm_id) is not None
    with session_scope(engine) as s:
        assert s.scalar(select(Task).where(Task.task_type == C.TaskType.DELETE_VM)) is None
    # a lock also withdraws a warning, and an unlocked VM is checked again
    with session_scope(engine) as s:
        s.get(VM, vm_id).delete_warning_date = utcnow()
        idle_vms.set_locked(s, SYSTEM, "web", True)
    assert vm_row(engine, vm_id).delete_warning_date is None
    assert idle_checks.plan_idle_vms(engine, settings, later) == []
    with session_scope(engine) as s:
        idle_vms.set_locked(s, SYSTEM, "web", False)
        events = s.scalars(
            select(VMEventLog.new_value).where(VMEventLog.attribute.in_(("locked", "idle check")))
        ).all()
    assert events[-3:] == ["kept", "True", "False"]


def test_the_cli_dry_run_lists_and_changes_nothing(
    engine: Engine,
    db_url: str,
    settings: Settings,
    cloud: Cloud,
    warnings: list,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    end = int(utcnow().replace(tzinfo=UTC).timestamp()) // STEP * STEP
    vm_id = create(engine, settings, "sleepy")
    backdate(engine, vm_id, 60)
    write_history(settings, identity_of(engine, vm_id), end - 21 * DAY, end)
    monkeypatch.setenv("BAADAL_DATABASE__URL", db_url)
    monkeypatch.setenv("COLUMNS", "200")
    get_settings.cache_clear()
    runner = CliRunner()
    before = state(engine)
    dry = runner.invoke(app, ["vm", "idle", "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "sleepy" in dry.output and "warn: idle" in dry.output
    assert state(engine) == before and not warnings

    with session_scope(engine) as s:  # a user of the VM, no admin
        system = s.get(User, C.SYSTEM_USER_ID)
        stu = User(username="stu", organisation_id=system.organisation_id)
        s.add(stu)
        s.flush()
        add_membership_db(s, stu.id, (C.Role.USER,))
        s.add(UserVMMap(user_id=stu.id, vm_id=vm_id))
    for command in (["vm", "idle", "--dry-run"], ["vm", "lock", "sleepy"]):
        refused = runner.invoke(app, ["--as", "stu", *command])
        assert refused.exit_code == 2 and "stu may not" in refused.output, refused.output
    assert state(engine) == before

    done = runner.invoke(app, ["vm", "idle"])
    assert done.exit_code == 0 and "sleepy: warned (idle)" in done.output, done.output
    shown = runner.invoke(app, ["vm", "show", "sleepy"])
    assert "destroyed if still idle at" in shown.output
    kept = runner.invoke(app, ["--as", "stu", "vm", "keep", "sleepy"])
    assert kept.exit_code == 0 and "sleepy is kept" in kept.output
    again = runner.invoke(app, ["vm", "keep", "sleepy"])
    assert again.exit_code == 2 and "no idle or shut-off warning" in again.output
    assert runner.invoke(app, ["vm", "lock", "sleepy"]).output.strip() == "sleepy is locked"


def test_a_keep_racing_the_collector_either_wins_or_hears_it_lost(
    engine: Engine,
    settings: Settings,
    cloud: Cloud,
    warnings: list,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The collector's step holds the VM's row while it queues the delete; a keep arriving
    then waits for it and must see the warning gone, not withdraw it after the fact."""
    vm_id = create(engine, settings, "web")
    operate(engine, settings, vm_id, "destroy")
    backdate(engine, vm_id, 200)
    idle_checks.take_idle_steps(engine, idle_checks.plan_idle_vms(engine, settings))
    later = utcnow() + timedelta(days=30)
    planned = idle_checks.plan_idle_vms(engine, settings, later)
    assert [p.action for p in planned] == [IdleAction.DELETE]

    queuing, enqueue = threading.Event(), queue.enqueue

    def slow_enqueue(*args: object, **kwargs: object) -> Task:
        queuing.set()  # the row is locked now
        time.sleep(0.5)
        return enqueue(*args, **kwargs)

    monkeypatch.setattr(queue, "enqueue", slow_enqueue)
    collector = threading.Thread(target=idle_checks.take_idle_steps, args=(engine, planned))
    collector.start()
    assert queuing.wait(10)
    with (
        pytest.raises(ConflictError, match="no idle or shut-off warning"),
        session_scope(engine) as s,
    ):
        idle_vms.keep(s, SYSTEM, "web")
    collector.join(10)
    with session_scope(engine) as s:
        assert s.scalar(select(Task.status).where(Task.task_type == C.TaskType.DELETE_VM)) == (
            C.TaskStatus.PENDING
        )
        assert "kept" not in s.scalars(select(VMEventLog.new_value)).all()
