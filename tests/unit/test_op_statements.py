"""What one VM operation costs the database (issue 16, ``bench/ops.py`` (b)): the
service call in its transaction, then a Worker run until idle, with every SQL statement
of every engine (the reader's too) counted, and the transactions among them (SQLite's
BEGINs). A query, a transaction or an ORM flush added to this path fails here; the
numbers are the ones docs/benchmarks.md gives per operation (they were 25 statements in
5 transactions for a power operation before the task path was rewritten on prebuilt
statements, 19 in 4 before the task's end told the Worker that the queue was done)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from baadal import constants as C
from baadal.config import Settings
from baadal.db.models import VM, Snapshot, Task, VMEventLog
from baadal.db.session import session_scope
from baadal.drivers import hypervisor_for
from baadal.drivers.libvirt_driver import LibvirtHypervisor
from baadal.services import vms
from baadal.services.policy import SYSTEM
from baadal.tasks import params as task_params
from baadal.tasks.registry import TaskContext, load_handler_modules
from baadal.tasks.worker import Worker
from baadal.vm import lifecycle
from tests.support.cloud import fake_host_uri, make_cloud
from tests.support.statements import counted

pytestmark = pytest.mark.unit


@dataclass(frozen=True)
class Cost:
    statements: int
    transactions: int


#: per operation: service call + Worker run until idle (its start, the claim with the
#: handler's read, the handler's own writes, the finish, which also tells the Worker that
#: the queue is done: no last claim)
EXPECTED = {
    # BEGIN, VM, task (duplicate check in it), history, audit | BEGIN, periodic jobs,
    # expired leases, claim, claim's history, VM+host | BEGIN, task end, history end,
    # status event, status, anything unfinished?
    "suspend": Cost(17, 3),
    "resume": Cost(17, 3),
    "destroy": Cost(17, 3),
    "start": Cost(17, 3),
    # + the user snapshot count; + BEGIN and the snapshot row; no status change
    "snapshot": Cost(19, 4),
    # + the snapshot lookup; + the revert's event
    "revert": Cost(19, 3),
    # + the snapshot lookup; the end deletes the row instead of the events
    "delete snapshot": Cost(17, 3),
}


@pytest.fixture
def op_settings(settings: Settings) -> Settings:
    settings.general.snapshot_requires_ping = False
    # housekeeping once per Worker run and no lease renewal, however slow the machine:
    # the counts must not depend on timing (the run is woken when its task ends)
    settings.worker.poll_interval_s = 3600
    settings.worker.lease_s = 3 * 3600
    return settings


def _run(engine: Engine, settings: Settings) -> None:
    Worker(engine, settings, registry=load_handler_modules(), worker_id="w").run(until_idle=True)


@pytest.fixture
def vm_id(sqlite_engine: Engine, op_settings: Settings, tmp_path: Path) -> int:
    make_cloud(sqlite_engine, op_settings, tmp_path, [fake_host_uri(tmp_path, "h1")])
    with session_scope(sqlite_engine) as s:
        queued = vms.request_vm(
            s, SYSTEM, op_settings, vm_name="ops", template="tiny", ram_mb=256, vcpus=1,
            security_domain="research",
        )  # fmt: skip
    _run(sqlite_engine, op_settings)
    return queued.vm_id


def _cost(engine: Engine, settings: Settings, request: Callable[[Session], Task]) -> Cost:
    with counted() as seen:
        with session_scope(engine) as s:
            task_id = request(s).id
        _run(engine, settings)
    with session_scope(engine) as s:
        task = s.get(Task, task_id)
        assert task.status == C.TaskStatus.SUCCESS, task.message
    return Cost(len(seen), sum(1 for s in seen if s.startswith("BEGIN")))


def _last_snapshot(engine: Engine, vm_id: int) -> int:
    with session_scope(engine) as s:
        return s.scalars(select(Snapshot.id).where(Snapshot.vm_id == vm_id)).all()[-1]


def test_each_vm_operation_costs_its_statements_and_transactions(
    sqlite_engine: Engine, op_settings: Settings, vm_id: int
) -> None:
    def op(name: str) -> Callable[[Session], Task]:
        return lambda s: vms.operate(s, SYSTEM, vm_id, name)

    costs = {}
    for name in ("suspend", "resume"):
        costs[name] = _cost(sqlite_engine, op_settings, op(name))
    costs["snapshot"] = _cost(
        sqlite_engine, op_settings, lambda s: vms.request_snapshot(s, SYSTEM, vm_id)
    )
    snap = _last_snapshot(sqlite_engine, vm_id)
    costs["revert"] = _cost(
        sqlite_engine, op_settings, lambda s: vms.request_revert(s, SYSTEM, vm_id, snap)
    )
    costs["delete snapshot"] = _cost(
        sqlite_engine, op_settings, lambda s: vms.request_delete_snapshot(s, SYSTEM, vm_id, snap)
    )
    for name in ("destroy", "start"):
        costs[name] = _cost(sqlite_engine, op_settings, op(name))
    assert costs == EXPECTED


def test_a_power_operation_records_its_status_and_event_and_nothing_else(
    sqlite_engine: Engine, op_settings: Settings, vm_id: int
) -> None:
    """The status is written with plain statements: the VM's other columns (its
    requester among them, a name the task's values share) stay as they were."""
    with session_scope(sqlite_engine) as s:
        before = {c.key: getattr(s.get(VM, vm_id), c.key) for c in VM.__table__.columns}
        vms.operate(s, SYSTEM, vm_id, "suspend")
    _run(sqlite_engine, op_settings)
    with session_scope(sqlite_engine) as s:
        vm = s.get(VM, vm_id)
        after = {c.key: getattr(vm, c.key) for c in VM.__table__.columns}
        event_row = s.scalars(select(VMEventLog).order_by(VMEventLog.id.desc())).first()
        assert (event_row.vm_id, event_row.vm_identity) == (vm_id, vm.vm_identity)
        assert (event_row.attribute, event_row.old_value, event_row.new_value) == (
            "status",
            "RUNNING",
            "SUSPENDED",
        )
        assert event_row.requester_id == SYSTEM.user_id
    assert after == {**before, "status": C.VMStatus.SUSPENDED}


def test_a_handler_run_without_a_claim_reads_its_vm_itself(
    sqlite_engine: Engine, op_settings: Settings, vm_id: int
) -> None:
    """``ctx.read`` comes from a worker's claim; a handler called directly (no claim)
    reads the same row itself."""
    ctx = TaskContext(
        task_id=0, task_type=C.TaskType.SUSPEND_VM, vm_id=vm_id, requester_id=None,
        params=task_params.parse(C.TaskType.SUSPEND_VM, {"vm_id": vm_id}), attempt=1,
        worker_id="w", engine=sqlite_engine, settings=op_settings,
    )  # fmt: skip
    with counted() as seen:
        result = lifecycle.suspend(ctx)
    assert result.status == C.TaskStatus.SUCCESS, result.message
    assert [s.split()[0] for s in seen] == ["BEGIN", "SELECT"]
    missing = TaskContext(**{**ctx.__dict__, "vm_id": vm_id + 1000})
    assert "no VM with id" in lifecycle.resume(missing).message


def test_vm_operations_with_their_reads_in_the_claim_on_both_databases(
    engine: Engine, op_settings: Settings, tmp_path: Path
) -> None:
    """The claim's reads and the plain outcome statements (typed on PostgreSQL): a
    suspend, a snapshot, a revert to it and its deletion end SUCCESS with their rows."""
    make_cloud(engine, op_settings, tmp_path, [fake_host_uri(tmp_path, "h1")])
    with session_scope(engine) as s:
        vm_id = vms.request_vm(
            s, SYSTEM, op_settings, vm_name="ops", template="tiny", ram_mb=256, vcpus=1,
            security_domain="research",
        ).vm_id  # fmt: skip
    _run(engine, op_settings)
    _cost(engine, op_settings, lambda s: vms.operate(s, SYSTEM, vm_id, "suspend"))
    _cost(engine, op_settings, lambda s: vms.request_snapshot(s, SYSTEM, vm_id))
    snap = _last_snapshot(engine, vm_id)
    _cost(engine, op_settings, lambda s: vms.request_revert(s, SYSTEM, vm_id, snap))
    _cost(engine, op_settings, lambda s: vms.request_delete_snapshot(s, SYSTEM, vm_id, snap))
    with session_scope(engine) as s:
        assert s.get(VM, vm_id).status == C.VMStatus.SUSPENDED  # the snapshot's state
        assert s.scalars(select(Snapshot).where(Snapshot.vm_id == vm_id)).all() == []
        events = s.execute(
            select(VMEventLog.attribute, VMEventLog.old_value, VMEventLog.new_value)
            .where(VMEventLog.vm_id == vm_id)
            .order_by(VMEventLog.id)
        ).all()
    assert events[-3:] == [
        ("status", "RUNNING", "SUSPENDED"),
        ("snapshot", None, events[-1][2]),
        ("revert", None, events[-1][2]),
    ]


def _definition_password(engine: Engine, vm_id: int) -> str:
    with session_scope(engine) as s:
        vm = s.get(VM, vm_id)
        hv, identity = hypervisor_for(vm.host.libvirt_uri), vm.vm_identity
    found = re.search(r"passwd='([^']*)'", hv.xml(identity, inactive=True, secure=True))
    assert found is not None
    return found.group(1)


def test_a_revert_on_the_test_driver_replaces_the_console_password_in_one_definition(
    sqlite_engine: Engine, op_settings: Settings, vm_id: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """test:/// has no live console password: setting a running domain's changes its
    definition, so the revert does not define the domain once more before it."""
    _cost(sqlite_engine, op_settings, lambda s: vms.request_snapshot(s, SYSTEM, vm_id))
    snap = _last_snapshot(sqlite_engine, vm_id)
    snapshot_password = _definition_password(sqlite_engine, vm_id)
    defines: list[str] = []
    real_define = LibvirtHypervisor.define

    def define(self: LibvirtHypervisor, xml: str, *, autostart: bool = False) -> None:
        defines.append(xml)
        real_define(self, xml, autostart=autostart)

    monkeypatch.setattr(LibvirtHypervisor, "define", define)
    _cost(sqlite_engine, op_settings, lambda s: vms.request_revert(s, SYSTEM, vm_id, snap))
    assert defines == []
    assert _definition_password(sqlite_engine, vm_id) not in ("", snapshot_password)
