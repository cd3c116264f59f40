"""A VM's network on libvirt's test driver with a real dnsmasq-format hosts file: the
reservation exists from install to delete (and never after), a failed install leaves
none, public IPs attach and detach, and a security-domain move changes address, MAC,
VLAN and reservation together -- or nothing when it is refused."""

from __future__ import annotations

import threading
from contextlib import AbstractContextManager
from pathlib import Path

import pytest
from sqlalchemy import Engine, select
from typer.testing import CliRunner

from baadal import address_pools
from baadal import constants as C
from baadal.cli.main import app
from baadal.config import Settings, get_settings
from baadal.db.models import VM, Host, SecurityDomain, VMEventLog
from baadal.db.session import session_scope
from baadal.drivers import hypervisor_for
from baadal.drivers.base import HypervisorError
from baadal.errors import ConflictError, NotFoundError, RemoteCommandError
from baadal.filelock import flocked
from baadal.net import dhcp, nat_box
from baadal.services import vms
from baadal.services.policy import SYSTEM
from baadal.vm import common, network
from tests.support.cloud import Cloud, fake_host_uri, make_cloud
from tests.support.natbox import FakeNatBox
from tests.unit.test_vm_lifecycle import create, hv_of, last_task, operate, run_tasks

pytestmark = pytest.mark.unit


@pytest.fixture
def net_settings(settings: Settings, tmp_path: Path) -> Settings:
    settings.general.snapshot_requires_ping = False
    settings.vm.stop_timeout_s = 0.5
    settings.dhcp.backend = C.DhcpBackend.DNSMASQ
    settings.dhcp.hosts_file = str(tmp_path / "dhcp" / "hosts")
    (tmp_path / "dhcp").mkdir()
    return settings


@pytest.fixture
def net_cloud(sqlite_engine: Engine, net_settings: Settings, tmp_path: Path) -> Cloud:
    cloud = make_cloud(sqlite_engine, net_settings, tmp_path, [fake_host_uri(tmp_path, "h1")])
    with session_scope(sqlite_engine) as s:
        vlan = address_pools.create_vlan(s, "vlan20", 20, "10.99.20.0/24")
        address_pools.add_private_ips(s, vlan.id, "10.99.20.20", "10.99.20.21")
        s.add(SecurityDomain(name="teaching", vlan_id=vlan.id))
    return cloud


def _hosts_file(settings: Settings) -> str:
    path = Path(settings.dhcp.hosts_file)
    return path.read_text() if path.exists() else ""


def _reserved(settings: Settings) -> dict[str, str]:
    return {e.mac: e.ip for e in dhcp.read_dhcp_entries(settings)}


def _vm(engine: Engine, vm_id: int) -> tuple[str, str, int | None, str]:
    with session_scope(engine) as s:
        vm = s.get(VM, vm_id)
        domain = vm.security_domain.name if vm.security_domain else ""
        return vm.private_ip.private_ip, vm.private_ip.mac_addr, vm.private_ip_id, domain


def test_reservation_lives_from_install_to_delete(
    sqlite_engine: Engine, net_settings: Settings, net_cloud: Cloud
) -> None:
    before = _hosts_file(net_settings)
    vm_id = create(sqlite_engine, net_settings)
    ip, mac, _, _ = _vm(sqlite_engine, vm_id)
    assert _reserved(net_settings) == {mac: ip}
    assert operate(sqlite_engine, net_settings, vm_id, "delete").status == C.TaskStatus.SUCCESS
    assert _reserved(net_settings) == {}
    assert _hosts_file(net_settings).count("\n") == before.count("\n") or before == ""


def test_failed_install_leaves_no_reservation(
    sqlite_engine: Engine, net_settings: Settings, net_cloud: Cloud
) -> None:
    # a stranger's domain of the same name (another UUID) makes the define fail after
    # the reservation was made
    with session_scope(sqlite_engine) as s:
        host = s.get(Host, net_cloud.host_ids[0])
        hypervisor_for(host.libvirt_uri).define(
            "<domain type='test'><name>ADMIN~system~web</name><memory>65536</memory>"
            "<os><type>hvm</type></os></domain>"
        )
    create(sqlite_engine, net_settings)
    task = last_task(sqlite_engine)
    assert task.status == C.TaskStatus.FAILED, task.message
    assert _reserved(net_settings) == {}


def test_public_ip_attach_detach(
    sqlite_engine: Engine, net_settings: Settings, net_cloud: Cloud
) -> None:
    vm_id = create(sqlite_engine, net_settings)
    for attach in (True, False):
        with session_scope(sqlite_engine) as s:
            vms.request_edit(s, SYSTEM, vm_id, public_ip=attach)
        run_tasks(sqlite_engine, net_settings)
        task = last_task(sqlite_engine)
        assert (task.status, task.message) == (
            C.TaskStatus.SUCCESS,
            "Edited public IP successfully.",
        )
        with session_scope(sqlite_engine) as s:
            assert (s.get(VM, vm_id).public_ip_id is not None) is attach


def test_security_domain_move(
    sqlite_engine: Engine, net_settings: Settings, net_cloud: Cloud
) -> None:
    vm_id = create(sqlite_engine, net_settings)
    old_ip, old_mac, old_pool, _ = _vm(sqlite_engine, vm_id)
    with session_scope(sqlite_engine) as s:
        vms.request_edit(s, SYSTEM, vm_id, security_domain="teaching")
    run_tasks(sqlite_engine, net_settings)
    task = last_task(sqlite_engine)
    assert (task.status, task.message) == (
        C.TaskStatus.SUCCESS,
        "Edited security domain successfully.",
    )
    new_ip, new_mac, _, domain = _vm(sqlite_engine, vm_id)
    assert domain == "teaching"
    assert new_ip.startswith("10.99.20.") and new_mac != old_mac
    assert _reserved(net_settings) == {new_mac: new_ip}
    hv, identity = hv_of(sqlite_engine, vm_id)
    xml = hv.xml(identity, inactive=True)
    assert new_mac.lower() in xml and "<tag id='20'/>" in xml.replace('"', "'")
    assert hv.domain_info(identity).status == C.VMStatus.RUNNING  # rebooted into it
    with session_scope(sqlite_engine) as s:
        # the old address is free for others again
        assert s.scalar(select(VM.id).where(VM.private_ip_id == old_pool)) is None
        events = {
            e.attribute: (e.old_value, e.new_value)
            for e in s.scalars(select(VMEventLog).where(VMEventLog.vm_id == vm_id))
        }
    assert events["security_domain"] == ("research", "teaching")
    assert events["private_ip"] == (old_ip, new_ip)


def test_security_domain_move_refused_changes_nothing(
    sqlite_engine: Engine, net_settings: Settings, net_cloud: Cloud
) -> None:
    vm_id = create(sqlite_engine, net_settings)
    # fill the small 'teaching' pool with two other VMs
    create(sqlite_engine, net_settings, name="t1", security_domain="teaching")
    create(sqlite_engine, net_settings, name="t2", security_domain="teaching")
    before = (_vm(sqlite_engine, vm_id), _hosts_file(net_settings))
    with session_scope(sqlite_engine) as s:
        vm = s.get(VM, vm_id)
        with pytest.raises(ConflictError, match="no free private IP left"):
            vms.request_edit(s, SYSTEM, vm.id, security_domain="teaching")
        with pytest.raises(ConflictError, match="already in security domain"):
            vms.request_edit(s, SYSTEM, vm.id, security_domain="research")
        with pytest.raises(NotFoundError):
            vms.request_edit(s, SYSTEM, vm.id, security_domain="nowhere")
    assert (_vm(sqlite_engine, vm_id), _hosts_file(net_settings)) == before


def test_a_failed_move_whose_old_address_was_taken_completes_instead(
    sqlite_engine: Engine,
    net_settings: Settings,
    net_cloud: Cloud,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    vm_id = create(sqlite_engine, net_settings)
    other_id = create(sqlite_engine, net_settings, name="other")
    old_ip, _, old_pool, _ = _vm(sqlite_engine, vm_id)

    def reboot_fails_after_the_old_address_went(hv: object, name: str, settings: object) -> None:
        with session_scope(sqlite_engine) as s:  # another VM takes the freed address
            other = s.get(VM, other_id)
            other.private_ip_id = None
            s.flush()
            other.private_ip_id = old_pool
        raise HypervisorError("the guest did not come back")

    monkeypatch.setattr(network, "_restart", reboot_fails_after_the_old_address_went)
    with session_scope(sqlite_engine) as s:
        vms.request_edit(s, SYSTEM, vm_id, security_domain="teaching")
    run_tasks(sqlite_engine, net_settings)
    task = last_task(sqlite_engine)
    new_ip, new_mac, new_pool, domain = _vm(sqlite_engine, vm_id)
    assert task.status == C.TaskStatus.FAILED
    assert task.message == (
        "web could not be moved cleanly (the guest did not come back),"
        f" and its old address was taken meanwhile: it stays in 'teaching' with {new_ip}"
    )
    # database, DHCP and the NIC agree on the new address; nothing holds two
    assert domain == "teaching" and new_ip.startswith("10.99.20.") and new_pool != old_pool
    assert _reserved(net_settings).get(new_mac) == new_ip
    assert (
        old_ip not in _reserved(net_settings).values() or _vm(sqlite_engine, other_id)[0] == old_ip
    )
    hv, identity = hv_of(sqlite_engine, vm_id)
    xml = hv.xml(identity, inactive=True).replace('"', "'")
    assert new_mac.lower() in xml and "<tag id='20'/>" in xml
    assert hv.domain_info(identity).status == C.VMStatus.RUNNING


def test_a_move_that_can_be_neither_done_nor_undone_says_so(
    sqlite_engine: Engine,
    net_settings: Settings,
    net_cloud: Cloud,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    vm_id = create(sqlite_engine, net_settings)
    before = _vm(sqlite_engine, vm_id)

    def dhcp_server_gone(settings: object, net: object) -> None:
        raise RemoteCommandError("dhcp", ["kill", "-HUP"], "no such process")

    monkeypatch.setattr(network, "publish", dhcp_server_gone)
    with session_scope(sqlite_engine) as s:
        vms.request_edit(s, SYSTEM, vm_id, security_domain="teaching")
    run_tasks(sqlite_engine, net_settings)
    task = last_task(sqlite_engine)
    assert task.status == C.TaskStatus.FAILED
    assert task.message.startswith("web could not be moved (command 'kill -HUP' on dhcp failed")
    assert task.message.endswith(
        "nor put back: an admin must check its network (details in the log)"
    )
    assert _vm(sqlite_engine, vm_id) == before  # the database holds the old address again


def test_lost_reservations_come_back_from_the_database(
    sqlite_engine: Engine, net_settings: Settings, net_cloud: Cloud
) -> None:
    vm_id = create(sqlite_engine, net_settings)
    ip, mac, _, _ = _vm(sqlite_engine, vm_id)
    Path(net_settings.dhcp.hosts_file).unlink()  # the DHCP server's disk was replaced
    assert "DHCP rebuilt with 1 entries" in network.restore_network(sqlite_engine, net_settings)
    assert _reserved(net_settings) == {mac: ip}
    assert network.restore_network(sqlite_engine, net_settings).startswith("DHCP in step")


def test_net_cli_dhcp_and_vnc(
    sqlite_engine: Engine,
    sqlite_url: str,
    net_settings: Settings,
    net_cloud: Cloud,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    vm_id = create(sqlite_engine, net_settings)
    ip, _, _, _ = _vm(sqlite_engine, vm_id)
    monkeypatch.setenv("BAADAL_DATABASE__URL", sqlite_url)
    monkeypatch.setenv("BAADAL_DHCP__BACKEND", "dnsmasq")
    monkeypatch.setenv("BAADAL_DHCP__HOSTS_FILE", net_settings.dhcp.hosts_file)
    get_settings.cache_clear()
    runner = CliRunner()
    Path(net_settings.dhcp.hosts_file).unlink()
    rebuilt = runner.invoke(app, ["net", "dhcp", "rebuild"])
    assert rebuilt.exit_code == 0 and "1 reservation(s)" in rebuilt.output, rebuilt.output
    shown = runner.invoke(app, ["net", "dhcp", "show"])
    assert ip in shown.output
    granted = runner.invoke(app, ["vm", "vnc", "grant", "web", "--minutes", "5"])
    assert granted.exit_code == 0, granted.output
    assert "VNC console of web" in granted.output
    assert runner.invoke(app, ["vm", "vnc", "grant", "nosuchvm"]).exit_code == 2


def test_a_restore_never_puts_back_what_a_concurrent_delete_removed(
    sqlite_engine: Engine,
    net_settings: Settings,
    net_cloud: Cloud,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Seen on the lab: a worker starting while another deleted a VM read the database,
    the delete removed the VM's reservation and NAT rule, and the restore wrote both back
    from its stale picture. Here the delete runs right after the restore's read; it must
    wait for the restore and then remove everything. A rule no VM holds goes too."""
    box = FakeNatBox()
    monkeypatch.setattr(nat_box, "execute_remote_cmd", box)
    net_settings.nat.nat_type = C.NatType.SOFTWARE
    net_settings.nat.nat_ip, net_settings.nat.public_interface = "10.99.0.2", "pub0"
    vm_id = create(sqlite_engine, net_settings, public_ip=True)
    assert len(_reserved(net_settings)) == 1 and len(nat_box.baadal_rules(net_settings)) == 2
    # a stray rule, on an address outside the pool (the VM's is one of the pool's, at random)
    nat_box.create_mapping(net_settings, nat_box.PublicIpMapping("192.0.2.99", "10.99.10.59"))
    with session_scope(sqlite_engine) as s:
        vms.operate(s, SYSTEM, vm_id, "delete")
    deleted, delete_waits = threading.Event(), threading.Event()
    real_read = dhcp.read_dhcp_entries

    def flocked_noting_waiters(path: Path) -> AbstractContextManager[None]:
        if threading.current_thread() is not threading.main_thread():
            delete_waits.set()  # the delete is at the lock: the restore may go on
        return flocked(path)

    def delete_after_the_restore_read(settings: Settings) -> list[dhcp.DhcpEntry]:
        worker = threading.Thread(target=lambda: (run_tasks(sqlite_engine, net_settings),
                                                  deleted.set()))  # fmt: skip
        worker.start()
        threads.append(worker)
        while not (deleted.is_set() or delete_waits.is_set()):
            deleted.wait(0.01)
        return real_read(settings)

    threads: list[threading.Thread] = []
    monkeypatch.setattr(common, "flocked", flocked_noting_waiters, raising=False)
    monkeypatch.setattr(dhcp, "read_dhcp_entries", delete_after_the_restore_read)
    network.restore_network(sqlite_engine, net_settings)
    threads[0].join()
    assert last_task(sqlite_engine).status == C.TaskStatus.SUCCESS
    assert _reserved(net_settings) == {}
    assert nat_box.baadal_rules(net_settings) == []
