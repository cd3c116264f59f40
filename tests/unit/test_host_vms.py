"""A host's VMs against libvirt (baadal.host.domains, baadal.host.respawn, baadal.vm.sanity) on libvirt's test driver.

The real-libvirtd counterpart is tests/integration/test_host_vms.py.
"""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, select, update

from baadal import constants as C
from baadal.config import Settings
from baadal.db.models import VM, Host, VMEventLog, VncAccess
from baadal.db.session import session_scope
from baadal.drivers import domain_xml, hypervisor_for
from baadal.drivers.base import Hypervisor
from baadal.errors import ConflictError, NotFoundError
from baadal.host import domains as host_domains
from baadal.host import respawn as host_respawn
from baadal.tasks import queue
from baadal.tasks.params import PeriodicParams
from baadal.tasks.registry import TaskContext
from baadal.timeutil import utcnow
from baadal.vm import sanity
from tests.support.cloud import Cloud
from tests.unit import test_vm_lifecycle as lifecycle
from tests.unit.test_vm_lifecycle import create, hv_of, operate

# the same fixtures
cloud, cloud_settings, fake_cloud = lifecycle.cloud, lifecycle.cloud_settings, lifecycle.fake_cloud

pytestmark = pytest.mark.unit


def host_hv(engine: Engine, host_id: int) -> Hypervisor:
    with session_scope(engine) as s:
        return hypervisor_for(s.get(Host, host_id).libvirt_uri)


def set_host(engine: Engine, host_id: int, **values: object) -> None:
    with session_scope(engine) as s:
        s.execute(update(Host).where(Host.id == host_id).values(**values))


def vm_row(engine: Engine, vm_id: int) -> tuple[int | None, int, str | None, int | None]:
    """(host_id, status, MAC, VNC port)."""
    with session_scope(engine) as s:
        vm = s.get(VM, vm_id)
        return vm.host_id, vm.status, vm.private_ip.mac_addr, vm.vnc_port


def events(engine: Engine, vm_id: int, attribute: str) -> list[tuple[str | None, str | None]]:
    with session_scope(engine) as s:
        return [
            (e.old_value, e.new_value)
            for e in s.scalars(
                select(VMEventLog)
                .where(VMEventLog.vm_id == vm_id, VMEventLog.attribute == attribute)
                .order_by(VMEventLog.id)
            )
        ]


def host_usage(engine: Engine) -> dict[int, tuple[int, int]]:
    with session_scope(engine) as s:
        return {h.id: (h.ram_used_mb, h.vcpus_used) for h in s.scalars(select(Host))}


def row_of(report: sanity.SanityReport, identity: str) -> sanity.SanityRow:
    (row,) = [r for r in report.rows if r.vm_identity == identity]
    return row


def test_domains_and_running_vm_of_a_host(
    sqlite_engine: Engine, cloud_settings: Settings, cloud: Cloud
) -> None:
    vm_id = create(sqlite_engine, cloud_settings)
    with session_scope(sqlite_engine) as s:
        host1, host2 = s.get(Host, cloud.host_ids[0]), s.get(Host, cloud.host_ids[1])
    assert vm_row(sqlite_engine, vm_id)[0] == host1.id
    assert [d.name for d in host_domains.get_host_domains(host1)] == ["ADMIN~system~web"]
    assert host_domains.has_running_vm(host1)
    assert not host_domains.has_running_vm(host2)
    operate(sqlite_engine, cloud_settings, vm_id, "stop")
    assert [d.status for d in host_domains.get_host_domains(host1)] == [C.VMStatus.SHUTDOWN]
    assert not host_domains.has_running_vm(host1)


def test_orphan_is_reported_then_deleted_keeping_its_disk(
    sqlite_engine: Engine, cloud_settings: Settings, cloud: Cloud
) -> None:
    hv = host_hv(sqlite_engine, cloud.host_ids[0])
    disk = cloud.datastore_path / "stray.qcow2"
    disk.write_bytes(b"admin may want this")
    spec = domain_xml.DomainSpec(
        name="stray", uuid="7d1e0f3a-0000-4000-8000-000000000001", memory_mb=128, vcpus=1,
        disks=[domain_xml.DiskSpec(str(disk))],
    )  # fmt: skip
    hv.define(domain_xml.build_domain_xml(spec))
    hv.start("stray")

    report = sanity.vm_sanity_check(sqlite_engine, cloud_settings)
    row = row_of(report, "stray")
    assert (row.host, row.state) == ("host1", sanity.ORPHAN)
    assert "orphans: stray" in report.summary()
    assert hv.is_defined("stray")  # reported, never deleted by the check

    host_domains.delete_orphan_vm(sqlite_engine, cloud.host_ids[0], "stray")
    assert not hv.is_defined("stray")
    assert disk.read_bytes() == b"admin may want this"
    with pytest.raises(NotFoundError, match="host1 has no domain stray"):
        host_domains.delete_orphan_vm(sqlite_engine, cloud.host_ids[0], "stray")


def test_delete_orphan_refuses_a_domain_baadal_knows(
    sqlite_engine: Engine, cloud_settings: Settings, cloud: Cloud
) -> None:
    vm_id = create(sqlite_engine, cloud_settings)
    hv, identity = hv_of(sqlite_engine, vm_id)
    with pytest.raises(ConflictError, match="not an orphan"):
        host_domains.delete_orphan_vm(sqlite_engine, cloud.host_ids[0], identity)
    assert hv.domain_info(identity).status == C.VMStatus.RUNNING
    with pytest.raises(NotFoundError, match="no host with id 99"):
        host_domains.delete_orphan_vm(sqlite_engine, 99, "stray")


@pytest.mark.parametrize(
    ("operation", "status"),
    [(None, C.VMStatus.RUNNING), ("suspend", C.VMStatus.SUSPENDED), ("stop", C.VMStatus.SHUTDOWN)],
)
def test_undefined_domain_is_respawned_as_it_was(
    sqlite_engine: Engine,
    cloud_settings: Settings,
    cloud: Cloud,
    operation: str | None,
    status: C.VMStatus,
) -> None:
    vm_id = create(sqlite_engine, cloud_settings, extra_disk_gb=1)
    if operation:
        operate(sqlite_engine, cloud_settings, vm_id, operation)
    hv, identity = hv_of(sqlite_engine, vm_id)
    before = vm_row(sqlite_engine, vm_id)
    hv.undefine(identity)

    report = sanity.vm_sanity_check(sqlite_engine, cloud_settings)
    row = row_of(report, identity)
    assert (row.host, row.state, row.action) == ("host1", sanity.UNDEFINED, "respawned on host1")
    assert hv.domain_info(identity).status == status
    xml = hv.xml(identity, inactive=True)
    assert before[2].lower() in xml and f"port='{before[3]}'" in xml and "vdb" in xml
    assert vm_row(sqlite_engine, vm_id) == before
    assert events(sqlite_engine, vm_id, "respawn") == [("host1", "respawned on host1")]
    assert row_of(sanity.vm_sanity_check(sqlite_engine, cloud_settings), identity).action == "ok"


def test_status_drift_is_synced_with_an_event(
    sqlite_engine: Engine, cloud_settings: Settings, cloud: Cloud
) -> None:
    vm_id = create(sqlite_engine, cloud_settings)
    hv, identity = hv_of(sqlite_engine, vm_id)
    hv.destroy(identity)  # behind Baadal's back

    row = row_of(sanity.vm_sanity_check(sqlite_engine, cloud_settings), identity)
    assert (row.state, row.action) == ("SHUTDOWN", "status RUNNING -> SHUTDOWN")
    assert vm_row(sqlite_engine, vm_id)[1] == C.VMStatus.SHUTDOWN
    assert events(sqlite_engine, vm_id, "status")[-1] == ("RUNNING", "SHUTDOWN")
    row = row_of(sanity.vm_sanity_check(sqlite_engine, cloud_settings), identity)
    assert row.action == "ok" and len(events(sqlite_engine, vm_id, "status")) == 2


def test_vm_found_on_another_host_gets_its_host_fixed(
    sqlite_engine: Engine, cloud_settings: Settings, fake_cloud: Cloud
) -> None:
    vm_id = create(sqlite_engine, cloud_settings)
    hv1, identity = hv_of(sqlite_engine, vm_id)
    hv1.migrate(identity, "fake:///h2", "127.0.0.1", live=True, vnc_listen="127.0.0.1")
    h1, h2 = fake_cloud.host_ids
    assert host_usage(sqlite_engine) == {h1: (256, 1), h2: (0, 0)}

    row = row_of(sanity.vm_sanity_check(sqlite_engine, cloud_settings), identity)
    assert (row.host, row.state, row.action) == ("host2", "RUNNING", "host host1 -> host2")
    assert vm_row(sqlite_engine, vm_id)[0] == h2
    assert events(sqlite_engine, vm_id, "host")[-1] == ("host1", "host2")
    assert host_usage(sqlite_engine) == {h1: (0, 0), h2: (256, 1)}


def test_vm_found_where_its_vnc_port_is_held_loses_the_port_not_its_host(
    sqlite_engine: Engine, cloud_settings: Settings, fake_cloud: Cloud
) -> None:
    """VNC ports are unique per host: a VM found on a host where another VM holds its
    port keeps the host (the truth) and drops the port until it gets one there."""
    web, db = create(sqlite_engine, cloud_settings), create(sqlite_engine, cloud_settings, "db")
    h1, h2 = fake_cloud.host_ids
    with session_scope(sqlite_engine) as s:
        assert (s.get(VM, web).host_id, s.get(VM, db).host_id) == (h1, h2)
        port = s.get(VM, web).vnc_port
        s.get(VM, db).vnc_port = port
    hv1, identity = hv_of(sqlite_engine, web)
    hv1.migrate(identity, "fake:///h2", "127.0.0.1", live=True, vnc_listen="127.0.0.1")
    row = row_of(sanity.vm_sanity_check(sqlite_engine, cloud_settings), identity)
    assert (
        row.action == f"host host1 -> host2; VNC port {port} held by another VM on host2: dropped"
    )
    with session_scope(sqlite_engine) as s:
        assert (s.get(VM, web).host_id, s.get(VM, web).vnc_port) == (h2, None)
        assert (s.get(VM, db).host_id, s.get(VM, db).vnc_port) == (h2, port)


def test_respawn_refused_while_the_domain_still_exists(
    sqlite_engine: Engine, cloud_settings: Settings, cloud: Cloud
) -> None:
    vm_id = create(sqlite_engine, cloud_settings)
    h1, h2 = cloud.host_ids
    with session_scope(sqlite_engine) as s:
        port = s.get(VM, vm_id).vnc_port
    with pytest.raises(ConflictError, match="still defined"):
        host_respawn.respawn_vm(sqlite_engine, cloud_settings, vm_id, host_id=h2)
    assert vm_row(sqlite_engine, vm_id)[0] == h1  # the reservation went back
    with session_scope(sqlite_engine) as s:
        assert s.get(VM, vm_id).vnc_port == port  # with its port on that host
    assert host_usage(sqlite_engine) == {h1: (256, 1), h2: (0, 0)}
    assert not host_hv(sqlite_engine, h2).is_defined("ADMIN~system~web")


def test_respawn_dangling_vms_moves_every_vm_of_a_down_host(
    sqlite_engine: Engine, cloud_settings: Settings, cloud: Cloud
) -> None:
    h1, h2 = cloud.host_ids
    set_host(sqlite_engine, h2, status=C.HostStatus.MAINTENANCE)
    web, db = (
        create(sqlite_engine, cloud_settings, "web"),
        create(sqlite_engine, cloud_settings, "db"),
    )
    operate(sqlite_engine, cloud_settings, db, "stop")
    macs = {vm_id: vm_row(sqlite_engine, vm_id)[2] for vm_id in (web, db)}
    set_host(sqlite_engine, h2, status=C.HostStatus.UP)
    set_host(sqlite_engine, h1, status=C.HostStatus.DOWN)
    with session_scope(sqlite_engine) as s:  # web's console is open
        port = s.get(VM, web).vnc_port
        s.add(
            VncAccess(
                vm_id=web, token="t", host_id=h1, vnc_source_port=port,
                vnc_destination_port=port, status="active", expiry_time=utcnow(),
            )
        )  # fmt: skip

    results = host_respawn.respawn_dangling_vms(sqlite_engine, cloud_settings, h1)
    assert [(r.vm_name, r.old_host, r.new_host, r.ok) for r in results] == [
        ("web", "host1", "host2", True),
        ("db", "host1", "host2", True),
    ]
    hv2 = host_hv(sqlite_engine, h2)
    assert hv2.domain_info("ADMIN~system~web").status == C.VMStatus.RUNNING
    assert hv2.domain_info("ADMIN~system~db").status == C.VMStatus.SHUTDOWN
    for vm_id, status in ((web, C.VMStatus.RUNNING), (db, C.VMStatus.SHUTDOWN)):
        assert vm_row(sqlite_engine, vm_id)[:3] == (h2, status, macs[vm_id])
        assert events(sqlite_engine, vm_id, "host")[-1] == ("host1", "host2")
    assert host_usage(sqlite_engine) == {h1: (0, 0), h2: (512, 2)}
    with session_scope(sqlite_engine) as s:  # the console grant followed web to host2
        grant = s.scalars(select(VncAccess)).one()
        assert (grant.status, grant.host_id, grant.vnc_source_port) == ("active", h2, port)
    with pytest.raises(ConflictError, match="is UP"):
        host_respawn.respawn_dangling_vms(sqlite_engine, cloud_settings, h2)


def test_one_failed_respawn_does_not_stop_the_others(
    sqlite_engine: Engine, cloud_settings: Settings, cloud: Cloud
) -> None:
    h1, h2 = cloud.host_ids
    set_host(sqlite_engine, h2, status=C.HostStatus.MAINTENANCE)
    web, db = (
        create(sqlite_engine, cloud_settings, "web"),
        create(sqlite_engine, cloud_settings, "db"),
    )
    set_host(sqlite_engine, h2, status=C.HostStatus.UP)
    set_host(sqlite_engine, h1, status=C.HostStatus.DOWN)
    with session_scope(sqlite_engine) as s:
        s.execute(update(VM).where(VM.id == web).values(RAM=64 * 1024))  # fits nowhere
    results = host_respawn.respawn_dangling_vms(sqlite_engine, cloud_settings, h1)
    assert [(r.vm_name, r.ok) for r in results] == [("web", False), ("db", True)]
    assert "no UP host has" in results[0].message
    assert vm_row(sqlite_engine, web)[0] == h1 and vm_row(sqlite_engine, db)[0] == h2


def test_vm_with_a_queued_task_is_skipped(
    sqlite_engine: Engine, cloud_settings: Settings, cloud: Cloud
) -> None:
    vm_id = create(sqlite_engine, cloud_settings)
    hv, identity = hv_of(sqlite_engine, vm_id)
    hv.destroy(identity)
    with session_scope(sqlite_engine) as s:
        queue.enqueue(s, C.TaskType.START_VM, vm_id=vm_id)
    row = row_of(sanity.vm_sanity_check(sqlite_engine, cloud_settings), identity)
    assert row.action == "skipped: task in progress"
    assert vm_row(sqlite_engine, vm_id)[1] == C.VMStatus.RUNNING


def test_unreachable_host_is_reported_not_fatal(
    sqlite_engine: Engine, cloud_settings: Settings, cloud: Cloud
) -> None:
    vm_id = create(sqlite_engine, cloud_settings)
    hv, identity = hv_of(sqlite_engine, vm_id)
    hv.undefine(identity)
    set_host(sqlite_engine, cloud.host_ids[1], libvirt_uri="test:///no/such/node.xml")

    report = sanity.vm_sanity_check(sqlite_engine, cloud_settings)
    assert list(report.unreachable) == ["host2"]
    assert "hosts not answering: host2" in report.summary()
    row = row_of(report, identity)
    assert (row.state, row.action) == (
        sanity.UNDEFINED,
        "not respawned: some hosts did not answer",
    )
    assert not hv.is_defined(identity)  # it may live on the silent host


def test_vm_sanity_handler_summarises(
    sqlite_engine: Engine, cloud_settings: Settings, cloud: Cloud
) -> None:
    create(sqlite_engine, cloud_settings)
    ctx = TaskContext(
        task_id=1, task_type=C.TaskType.VM_SANITY, vm_id=None, requester_id=None, params=PeriodicParams(),
        attempt=1, worker_id="t", engine=sqlite_engine, settings=cloud_settings,
    )  # fmt: skip
    result = sanity.vm_sanity(ctx)
    assert (result.status, result.message) == (
        C.TaskStatus.SUCCESS,
        "1 VMs and domains checked, 0 not simply ok",
    )
