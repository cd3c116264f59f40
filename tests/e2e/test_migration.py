"""Migration on the lab: a running VM with two snapshots moves live lab-h1 -> lab-h2
while the controller pings it, both snapshots revert on lab-h2, it moves back offline,
refusals leave it untouched, a migration libvirt refuses halfway is undone, and one whose
worker is killed mid-way is settled by the next worker."""

from __future__ import annotations

import re
import signal
import subprocess
import time
import uuid
from collections.abc import Callable

import libvirt
import pytest
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from baadal import constants as C
from baadal.db.models import VM, Host, Snapshot, Task, VMEventLog
from baadal.db.session import session_scope
from baadal.drivers import domain_xml
from baadal.errors import ConflictError, ResourceExhausted
from baadal.lab import layout
from baadal.net import nat_box
from baadal.services import vms
from baadal.services.policy import SYSTEM
from baadal.vm import migration
from tests.e2e.conftest import Lab, create_vm, guest_shell, rfb_greeting, wait_ping
from tests.support.workers import start_worker
from tests.unit.test_vm_lifecycle import last_task, run_tasks

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

BOOT_TIMEOUT_S = 90
MAX_LOST_PINGS = 10
H1, H2 = layout.HOSTS


def _task(lab: Lab, request: Callable[[Session], object]) -> Task:
    """Queue through the service layer and run the worker until idle."""
    with session_scope(lab.engine) as s:
        request(s)
    run_tasks(lab.engine, lab.settings)
    return last_task(lab.engine)


def _ok(lab: Lab, request: Callable[[Session], object]) -> str:
    task = _task(lab, request)
    assert task.status == C.TaskStatus.SUCCESS, task.message
    return task.message


def _vm(s: Session, vm_id: int) -> VM:
    return s.get(VM, vm_id)


def _db_view(lab: Lab, vm_id: int) -> tuple[str, int, int]:
    """(host name, event rows, snapshot rows): what a refused migration must not change."""
    with session_scope(lab.engine) as s:
        return (
            _vm(s, vm_id).host.host_name,
            s.scalar(select(func.count()).select_from(VMEventLog).where(VMEventLog.vm_id == vm_id)),
            s.scalar(select(func.count()).select_from(Snapshot).where(Snapshot.vm_id == vm_id)),
        )


def _libvirt_view(identity: str) -> dict[str, tuple[bool, list[str], str | None]]:
    """Per lab host that defines the domain: (active, snapshots parents first, current)."""
    seen = {}
    for host in layout.HOSTS:
        conn = libvirt.open(host.uri)
        try:
            dom = conn.lookupByName(identity)
        except libvirt.libvirtError:
            conn.close()
            continue
        snaps = dom.listAllSnapshots(libvirt.VIR_DOMAIN_SNAPSHOT_LIST_TOPOLOGICAL)
        current = next((s.getName() for s in snaps if s.isCurrent()), None)
        seen[host.name] = (bool(dom.isActive()), [s.getName() for s in snaps], current)
        conn.close()
    return seen


def _migrate(lab: Lab, vm_id: int, host: str | None, *, live: bool) -> tuple[Task, float]:
    def request(s: Session) -> None:
        vms.request_migrate(s, SYSTEM, vm_id, host, live)

    start = time.monotonic()
    task = _task(lab, request)
    return task, time.monotonic() - start


def _write(lab: Lab, vm_id: int, name: str) -> set[str]:
    """Write /data/<name> in the guest; what /data holds then."""
    return _ls_data(lab, vm_id, f"echo {name} > /data/{name}; sync; ")


def _ls_data(lab: Lab, vm_id: int, before: str = "") -> set[str]:
    return set(guest_shell(lab, vm_id, before + "ls /data | tr '\\n' ,").split(","))


def _lost_pings(ip: str, action: Callable[[], None]) -> tuple[int, int]:
    """(sent, lost) while ``action`` runs: the controller pings every 0.2 s."""
    pinger = subprocess.Popen(
        ["ping", "-n", "-i", "0.2", "-W", "1", ip], stdout=subprocess.PIPE, text=True
    )
    time.sleep(1)
    try:
        action()
        time.sleep(2)
    finally:
        pinger.send_signal(signal.SIGINT)
        out, _ = pinger.communicate(timeout=10)
    match = re.search(r"(\d+) packets transmitted, (\d+) received", out)
    assert match, out
    sent, received = int(match[1]), int(match[2])
    return sent, sent - received


def test_live_migration_with_snapshots_offline_back_refusals_and_undo(lab: Lab) -> None:
    t0 = time.monotonic()
    vm_id = create_vm(lab, "mig", layout.VLANS[0].domain, H1.name)
    with session_scope(lab.engine) as s:
        vm = _vm(s, vm_id)
        ip, identity, vm_name = vm.private_ip.private_ip, vm.vm_identity, vm.vm_name
        h2_id = s.scalar(select(Host.id).where(Host.host_name == H2.name))
    assert wait_ping(ip, BOOT_TIMEOUT_S)
    print(f"\ncreate to first ping: {time.monotonic() - t0:.1f} s")

    # two snapshots, a file written before each and one after the second
    for step in ("one", "two"):
        assert step in _write(lab, vm_id, step)
        _ok(lab, lambda s: vms.request_snapshot(s, SYSTEM, vm_id))
    assert {"one", "two", "three"} <= _write(lab, vm_id, "three")
    with session_scope(lab.engine) as s:
        first, second = s.scalars(
            select(Snapshot.id).where(Snapshot.vm_id == vm_id).order_by(Snapshot.id)
        ).all()
    snap_names = _libvirt_view(identity)[H1.name][1]
    assert len(snap_names) == 2

    # an open console grant, reached through the NAT box from the internet
    grant = vms.grant_vnc_access(lab.engine, SYSTEM, lab.settings, vm_id)
    assert rfb_greeting(grant.vnc_ip, grant.port).stdout.startswith("RFB ")

    # live lab-h1 -> lab-h2 while the controller pings the guest
    migrated: dict[str, object] = {}

    def move() -> None:
        migrated["task"], migrated["time"] = _migrate(lab, vm_id, H2.name, live=True)

    sent, lost = _lost_pings(ip, move)
    task = migrated["task"]
    assert isinstance(task, Task)
    print(f"live migration h1 -> h2: {migrated['time']:.2f} s, {lost} of {sent} pings lost")
    assert (task.status, task.message) == (
        C.TaskStatus.SUCCESS,
        f"{vm_name} is migrated successfully",
    )
    assert lost <= MAX_LOST_PINGS
    assert _libvirt_view(identity) == {H2.name: (True, snap_names, snap_names[1])}
    with session_scope(lab.engine) as s:
        assert _vm(s, vm_id).host.host_name == H2.name
        event = s.scalars(
            select(VMEventLog)
            .where(VMEventLog.vm_id == vm_id, VMEventLog.attribute == "host")
            .order_by(VMEventLog.id.desc())
        ).first()
        assert (event.old_value, event.new_value) == (H1.name, H2.name)
        vm = _vm(s, vm_id)
        assert not migration.migration_dir(lab.settings, vm.datastore, identity).exists()
    assert f"listen='{H2.mgmt_ip}'" in _domain_xml(H2.uri, identity)
    # the console grant followed: same public port, now forwarded to lab-h2 only
    assert rfb_greeting(grant.vnc_ip, grant.port).stdout.startswith("RFB ")
    vnc_rules = [r for r in nat_box.baadal_rules(lab.settings) if f"baadal:vnc:{vm_id}:" in r]
    assert vnc_rules and all(H1.mgmt_ip not in r for r in vnc_rules)
    assert any(f"{H2.mgmt_ip}:{grant.port}" in r for r in vnc_rules)

    # both snapshots revert on the destination
    start = time.monotonic()
    _ok(lab, lambda s: vms.request_revert(s, SYSTEM, vm_id, first))
    files = _ls_data(lab, vm_id)
    assert "one" in files and not files & {"two", "three"}
    _ok(lab, lambda s: vms.request_revert(s, SYSTEM, vm_id, second))
    files = _ls_data(lab, vm_id)
    assert {"one", "two"} <= files and "three" not in files
    print(f"two reverts on lab-h2: {time.monotonic() - start:.1f} s")
    assert wait_ping(ip, 10)

    # back to lab-h1 offline (shut off)
    _ok(lab, lambda s: vms.operate(s, SYSTEM, vm_id, "destroy"))
    task, took = _migrate(lab, vm_id, H1.name, live=True)  # shut off: offline anyway
    print(f"offline migration h2 -> h1: {took:.2f} s")
    assert task.status == C.TaskStatus.SUCCESS, task.message
    assert _libvirt_view(identity) == {H1.name: (False, snap_names, snap_names[1])}
    assert f"listen='{H1.mgmt_ip}'" in _domain_xml(H1.uri, identity, inactive=True)
    _ok(lab, lambda s: vms.operate(s, SYSTEM, vm_id, "start"))
    assert wait_ping(ip, BOOT_TIMEOUT_S)

    # refusals: nothing changes
    before, libvirt_before = _db_view(lab, vm_id), _libvirt_view(identity)
    with session_scope(lab.engine) as s:
        s.execute(update(Host).where(Host.id == h2_id).values(status=C.HostStatus.DOWN))
    with session_scope(lab.engine) as s, pytest.raises(ConflictError, match="it is DOWN"):
        vms.request_migrate(s, SYSTEM, vm_id, H2.name, True)
    result = migration.migrate_domain(lab.engine, lab.settings, vm_id, h2_id, True)
    print(f"to a DOWN host: {result.message}")
    assert result.status == C.TaskStatus.FAILED and "it is DOWN" in result.message
    with session_scope(lab.engine) as s:
        host = s.get(Host, h2_id)
        ram, cpus = host.RAM, host.CPUs
        host.status, host.RAM, host.CPUs = C.HostStatus.UP, 0, 1
    with session_scope(lab.engine) as s, pytest.raises(ResourceExhausted) as refused:
        vms.request_migrate(s, SYSTEM, vm_id, H2.name, True)
    print(f"to a full host: {refused.value}")
    assert f"cannot migrate {vm_name} to {H2.name}: no UP host has" in str(refused.value)
    result = migration.migrate_domain(lab.engine, lab.settings, vm_id, h2_id, True)
    assert result.status == C.TaskStatus.FAILED and "no UP host has" in result.message
    with session_scope(lab.engine) as s:
        s.execute(update(Host).where(Host.id == h2_id).values(RAM=ram, CPUs=cpus))
    assert (_db_view(lab, vm_id), _libvirt_view(identity)) == (before, libvirt_before)

    # libvirt refuses halfway (a stray domain of that name on lab-h2): undone
    stray = domain_xml.DomainSpec(identity, str(uuid.uuid4()), 64, 1, [])
    conn = libvirt.open(H2.uri)
    conn.defineXML(domain_xml.build_domain_xml(stray, allow_diskless=True))
    try:
        task, took = _migrate(lab, vm_id, H2.name, live=True)
    finally:
        conn.lookupByName(identity).undefine()
        conn.close()
    print(f"refused halfway after {took:.2f} s: {task.message}")
    assert task.status == C.TaskStatus.FAILED
    assert task.message.startswith("Task Status: FAILED Error: migrate")
    assert (_db_view(lab, vm_id), _libvirt_view(identity)) == (before, libvirt_before)
    with session_scope(lab.engine) as s:
        vm = _vm(s, vm_id)
        assert not migration.migration_dir(lab.settings, vm.datastore, identity).exists()
    assert wait_ping(ip, 10)

    _ok(lab, lambda s: vms.operate(s, SYSTEM, vm_id, "delete"))
    print(f"whole test: {time.monotonic() - t0:.1f} s")


def _domain_xml(uri: str, identity: str, *, inactive: bool = False) -> str:
    conn = libvirt.open(uri)
    try:
        flags = libvirt.VIR_DOMAIN_XML_INACTIVE if inactive else 0
        return conn.lookupByName(identity).XMLDesc(flags)
    finally:
        conn.close()


def test_migration_whose_worker_is_killed_midway_is_settled(lab: Lab) -> None:
    vm_id = create_vm(lab, "killed", layout.VLANS[0].domain, H1.name)
    with session_scope(lab.engine) as s:
        vm = _vm(s, vm_id)
        ip, identity = vm.private_ip.private_ip, vm.vm_identity
        backup = migration.migration_dir(lab.settings, vm.datastore, identity)
    assert wait_ping(ip, BOOT_TIMEOUT_S)
    _ok(lab, lambda s: vms.request_snapshot(s, SYSTEM, vm_id))
    with session_scope(lab.engine) as s:
        task_id = vms.request_migrate(s, SYSTEM, vm_id, H2.name, True).id
    # a real worker process with a short lease, killed once the snapshots are saved away
    worker = start_worker(
        f"sqlite:///{lab.home / 'baadal.db'}", lab.home, "doomed", WORKER__LEASE_S="3"
    )
    deadline = time.monotonic() + 60
    while not backup.exists() and time.monotonic() < deadline and worker.poll() is None:
        time.sleep(0.01)
    assert backup.exists(), "the migration never started"
    worker.send_signal(signal.SIGKILL)
    worker.wait(10)
    time.sleep(3.5)  # the lease runs out; the next worker compensates and re-runs
    run_tasks(lab.engine, lab.settings)
    with session_scope(lab.engine) as s:
        task = s.get(Task, task_id)
        status, message, host = task.status, task.message, _vm(s, vm_id).host.host_name
    assert status == C.TaskStatus.SUCCESS, message
    seen = _libvirt_view(identity)
    assert list(seen) == [host] == [H2.name], seen  # defined on exactly one host: its own
    active, snaps, current = seen[host]
    assert active and len(snaps) == 1 and current == snaps[0]
    assert not backup.exists()
    assert wait_ping(ip, 30)
    with session_scope(lab.engine) as s:
        vms.operate(s, SYSTEM, vm_id, "delete")
    run_tasks(lab.engine, lab.settings)


def test_shut_off_clone_moves_to_a_new_host(lab: Lab) -> None:
    vm_id = create_vm(lab, "clonemove", layout.VLANS[0].domain, H1.name)
    _ok(lab, lambda s: vms.operate(s, SYSTEM, vm_id, "destroy"))
    with session_scope(lab.engine) as s:
        identity = _vm(s, vm_id).vm_identity
        h2_id = s.scalar(select(Host.id).where(Host.host_name == H2.name))
    assert migration.migrate_clone_to_new_host(lab.engine, lab.settings, vm_id, h2_id)
    assert _libvirt_view(identity) == {H2.name: (False, [], None)}
    with session_scope(lab.engine) as s:
        assert _vm(s, vm_id).host.host_name == H2.name
        vms.operate(s, SYSTEM, vm_id, "delete")
    run_tasks(lab.engine, lab.settings)
