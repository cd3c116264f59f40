"""Statement counts that must not grow with the cloud (issue 16): list and sanity
operations, the cloud shutdown's queueing and the network job cost the same number of
SQL statements for N VMs and for 3 N, so a query per row fails here; and the bulk
queueing writes the rows ``enqueue`` writes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from baadal import constants as C
from baadal.config import Settings
from baadal.db.models import VM, PrivateIpPool, Task, TaskEvent
from baadal.db.session import session_scope
from baadal.drivers import fake
from baadal.host import health, maintenance
from baadal.services import inventory, lookup, tasks, vms
from baadal.services.policy import SYSTEM
from baadal.tasks import queue
from baadal.vm.network import restore_network
from baadal.vm.sanity import vm_sanity_check
from tests.support.cloud import make_cloud
from tests.support.statements import counted

pytestmark = pytest.mark.unit

HOSTS = 4


def cloud_of(engine: Engine, settings: Settings, root: Path, vm_count: int) -> None:
    """HOSTS fake hosts and ``vm_count`` running VMs spread over them."""
    fake.reset()
    make_cloud(engine, settings, root, [f"fake:///h{i}" for i in range(1, HOSTS + 1)])
    add_vms(engine, 0, vm_count)


def add_vms(engine: Engine, first: int, count: int) -> None:
    """Running VMs vm<first>... spread over the hosts, each with a free private address,
    a finished task, and its domain on its host."""
    with session_scope(engine) as s:
        ips = s.scalars(
            select(PrivateIpPool.id)
            .where(~select(VM.id).where(VM.private_ip_id == PrivateIpPool.id).exists())
            .order_by(PrivateIpPool.id)
            .limit(count)
        ).all()
        for i, ip_id in zip(range(first, first + count), ips, strict=True):
            host = i % HOSTS + 1
            vm = VM(vm_name=f"vm{i}", vm_identity=f"ORG~u~vm{i}", RAM=256, vCPU=1,
                    host_id=host, private_ip_id=ip_id, vnc_port=20000 + i,
                    status=C.VMStatus.RUNNING)  # fmt: skip
            s.add(vm)
            s.flush()
            s.add(Task(task_type=C.TaskType.CREATE_VM, vm_id=vm.id, status=C.TaskStatus.SUCCESS))
            hv = fake.FakeHypervisor(f"fake:///h{host}")
            hv.define(f"<domain><name>{vm.vm_identity}</name></domain>")
            hv.start(vm.vm_identity)


def _vm_list(engine: Engine) -> None:
    with session_scope(engine) as s:
        for vm in vms.list_vms(s, SYSTEM):
            assert vm.host and vm.private_ip and vm.public_ip is None


def _vm_page(engine: Engine) -> None:
    with session_scope(engine) as s:
        page = vms.list_vm_page(s, SYSTEM, limit=1000)
        assert all(vm.host and vm.private_ip for vm in page.items)


def _host_list(engine: Engine) -> None:
    with session_scope(engine) as s:
        assert len(inventory.list_hosts(s, SYSTEM).items) == HOSTS


def _task_list(engine: Engine) -> None:
    with session_scope(engine) as s:
        assert tasks.list_tasks(s, SYSTEM, limit=1000)


def _shutdown(engine: Engine) -> None:
    with session_scope(engine) as s:
        queued = maintenance.shutdown_baadal(s)
        assert queued.skipped == [] and queued.task_ids
        s.rollback()


OPERATIONS: dict[str, Callable[[Engine, Settings], object]] = {
    "vm list": lambda e, _s: _vm_list(e),
    "vm page": lambda e, _s: _vm_page(e),
    "host list": lambda e, _s: _host_list(e),
    "task list": lambda e, _s: _task_list(e),
    "vm sanity": lambda e, s: vm_sanity_check(e, s),
    "host sanity": lambda e, s: health.host_status_sanity_check(e, s),
    "cloud shutdown": lambda e, _s: _shutdown(e),
    "network job": lambda e, s: restore_network(e, s),
}


@pytest.mark.parametrize("name", sorted(OPERATIONS))
def test_statements_do_not_grow_with_the_cloud(
    name: str,
    tmp_path: Path,
    settings: Settings,
    sqlite_engine: Engine,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(health, "host_problem", lambda host: None)  # no ping here
    settings.general.host_check_services = False
    operation = OPERATIONS[name]
    cloud_of(sqlite_engine, settings, tmp_path, 3)
    with counted(sqlite_engine) as small:
        operation(sqlite_engine, settings)
    add_vms(sqlite_engine, 3, 6)  # 3 N
    with counted(sqlite_engine) as large:
        operation(sqlite_engine, settings)
    assert len(large) == len(small), "\n".join(large)
    fake.reset()


def test_vm_sanity_still_writes_what_libvirt_shows(
    tmp_path: Path, settings: Settings, sqlite_engine: Engine
) -> None:
    """Only contradicted rows are written: a VM paused behind Baadal's back and one
    whose domain moved host are synced, the others are ok, unchanged."""
    cloud_of(sqlite_engine, settings, tmp_path, 6)
    fake.FakeHypervisor("fake:///h1").suspend("ORG~u~vm0")
    moved = fake.FakeHypervisor("fake:///h2")
    xml = moved.xml("ORG~u~vm1", inactive=True, secure=True)
    moved.undefine("ORG~u~vm1")
    fake.FakeHypervisor("fake:///h3").define(xml)
    fake.FakeHypervisor("fake:///h3").start("ORG~u~vm1")
    report = vm_sanity_check(sqlite_engine, settings)
    actions = {r.vm_name: r.action for r in report.rows}
    assert actions == {
        "vm0": "status RUNNING -> SUSPENDED",
        "vm1": "host host2 -> host3",
        **{f"vm{i}": "ok" for i in range(2, 6)},
    }
    with session_scope(sqlite_engine) as s:
        rows = {vm.vm_name: (vm.host_id, vm.status) for vm in s.scalars(select(VM))}
    assert rows["vm0"] == (1, C.VMStatus.SUSPENDED) and rows["vm1"] == (3, C.VMStatus.RUNNING)
    assert all(r.action == "ok" for r in vm_sanity_check(sqlite_engine, settings).rows)
    fake.reset()


def test_bulk_queueing_writes_the_rows_enqueue_writes(
    tmp_path: Path, settings: Settings, sqlite_engine: Engine
) -> None:
    cloud_of(sqlite_engine, settings, tmp_path, 2)
    kind = C.TaskType.MAINTENANCE_SHUTDOWN_VM
    with session_scope(sqlite_engine) as s:
        one = queue.enqueue(s, kind, vm_id=1).id
        (bulk,) = queue.enqueue_vm_tasks(s, kind, {2: "vm1"})

    def shape(task_id: int) -> tuple[object, ...]:
        with session_scope(sqlite_engine) as s:
            task = s.get(Task, task_id)
            (ev,) = s.scalars(select(TaskEvent).where(TaskEvent.task_id == task_id)).all()
            params = {**task.parameters, "vm_id": None}
            return (task.task_type, task.priority, task.status, task.requester_id, params,
                    task.attempts, task.lost_attempts, task.run_after is not None,
                    ev.task_type, ev.status, ev.requester_id, {**ev.parameters, "vm_id": None},
                    ev.vm_id == task.vm_id)  # fmt: skip

    assert shape(one) == shape(bulk)
    with session_scope(sqlite_engine) as s:
        names = s.scalars(select(TaskEvent.vm_name).order_by(TaskEvent.id)).all()
    assert names[-2:] == ["vm0", "vm1"]
    fake.reset()


def test_cli_vm_list_pages(
    tmp_path: Path, settings: Settings, sqlite_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--limit`` shows one page (what a cloud of 25,000 VMs wants) and says where the
    next one starts; bad page sizes are one clear line, exit 2."""
    from typer.testing import CliRunner

    from baadal.cli.main import app
    from baadal.config import get_settings

    cloud_of(sqlite_engine, settings, tmp_path, 5)
    monkeypatch.setenv("BAADAL_DATABASE__URL", str(sqlite_engine.url))
    get_settings.cache_clear()
    runner = CliRunner()
    first = runner.invoke(app, ["vm", "list", "--limit", "2"], terminal_width=200)
    assert first.exit_code == 0, first.output
    assert "ORG~u~vm1" in first.output and "ORG~u~vm2" not in first.output
    assert "more: --after 2" in first.output
    last = runner.invoke(app, ["vm", "list", "--limit", "2", "--after", "4"], terminal_width=200)
    assert "ORG~u~vm4" in last.output and "ORG~u~vm3" not in last.output
    assert "more:" not in last.output
    everything = runner.invoke(app, ["vm", "list"], terminal_width=200)
    assert all(f"ORG~u~vm{i}" in everything.output for i in range(5))
    bad = runner.invoke(app, ["vm", "list", "--limit", "0"])
    assert bad.exit_code == 2
    fake.reset()


def test_a_vm_found_by_name_is_read_through_an_index(
    sqlite_engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    """``baadal vm stop NAME`` looks the VM up by name: without an index SQLite read every
    row of vm_data (2 ms at 25,000 VMs, on each call)."""
    cloud_of(sqlite_engine, settings, tmp_path, 3)
    with session_scope(sqlite_engine) as s:
        name = s.scalar(select(VM.vm_name).order_by(VM.id.desc()))
    with counted(sqlite_engine) as seen, session_scope(sqlite_engine) as s:
        assert lookup.vm(s, name).vm_name == name
    by_name = [sql for sql in seen if "vm_data.vm_name = ?" in sql]
    assert by_name
    with sqlite_engine.connect() as conn:
        for sql in by_name:
            plan = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}", ("x",) * sql.count("?"))
            details = " ".join(str(row[-1]) for row in plan)
            assert "SCAN vm_data" not in details and "ix_vm_data_vm_name" in details, details
