"""Hosts on the lab, over their own libvirtd and sshd: a host whose libvirtd stops is
reported DOWN by the periodic sanity job within one cycle and gets no new VMs; it is UP
again once libvirtd runs; a dead Open vSwitch is caught by the service check; an orphan
domain is found and removed; a VM whose domain vanished is respawned and answers again."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from baadal import constants as C
from baadal import placement
from baadal.cli.main import app
from baadal.config import get_settings
from baadal.db.models import VM, Host, HostEventLog
from baadal.db.session import session_scope
from baadal.drivers import hypervisor_for
from baadal.drivers.remote import RemoteTarget, execute_remote_cmd
from baadal.errors import ResourceExhausted
from baadal.host import domains as host_domains
from baadal.host import health, resources
from baadal.host import usage as host_usage
from baadal.lab import layout
from baadal.services import vms
from baadal.services.policy import SYSTEM
from baadal.tasks.registry import load_handler_modules
from baadal.tasks.worker import Worker
from baadal.vm import sanity
from tests.e2e.conftest import Lab, create_vm, wait_ping
from tests.unit.test_vm_lifecycle import last_task, run_tasks

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SANITY_INTERVAL_S = 3


def _host(lab: Lab, name: str) -> Host:
    with session_scope(lab.engine) as s:
        host = s.scalar(select(Host).where(Host.host_name == name))
        s.expunge(host)
    return host


def _status(lab: Lab, name: str) -> C.HostStatus:
    return C.HostStatus(_host(lab, name).status)


def _wait_status(lab: Lab, name: str, wanted: C.HostStatus, timeout: float) -> float:
    start = time.monotonic()
    while _status(lab, name) != wanted:
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{name} still {_status(lab, name).name} after {timeout} s")
        time.sleep(0.2)
    return time.monotonic() - start


def _libvirtd_pid(lab: Lab, index: int) -> int:
    host = layout.HOSTS[index]
    return int(host.pid_file(lab.home / "lab", "libvirtd").read_text())


def test_hosts_up_and_services_checked_over_ssh(lab: Lab) -> None:
    for lab_host in layout.HOSTS:
        host = _host(lab, lab_host.name)
        assert health.check_host_status(host) == C.HostStatus.UP
        assert health.check_host_service_status(host, lab.settings)
        assert health.is_host_available(RemoteTarget.for_host(host, lab.settings))
    checks = health.host_status_sanity_check(lab.engine, lab.settings)
    assert [c.new for c in checks] == [C.HostStatus.UP] * len(layout.HOSTS)
    assert not any(c.changed for c in checks)


def test_libvirtd_stopped_host_down_within_one_cycle_then_up(lab: Lab) -> None:
    lab.settings.scheduler.host_sanity = SANITY_INTERVAL_S
    worker = Worker(lab.engine, lab.settings, registry=load_handler_modules(), concurrency=2)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    h2 = layout.HOSTS[1]
    try:
        os.kill(_libvirtd_pid(lab, 1), signal.SIGTERM)
        # one cycle = one interval until the job fires + the checks themselves
        took = _wait_status(lab, h2.name, C.HostStatus.DOWN, SANITY_INTERVAL_S * 2 + 10)
        print(f"\nlab-h2 reported DOWN {took:.1f} s after its libvirtd stopped")
        with session_scope(lab.engine) as s:
            event = s.scalar(select(HostEventLog).order_by(HostEventLog.id.desc()))
            assert (event.old_value, event.new_value) == ("UP", "DOWN")
            assert "libvirt" in (event.message or "")
            # new VMs go elsewhere; nothing fits when the only UP host is excluded
            assert placement.find_new_host(s, 256, 1).host_name == layout.HOSTS[0].name
            h1_id = s.scalar(select(Host.id).where(Host.host_name == layout.HOSTS[0].name))
            with pytest.raises(ResourceExhausted):
                placement.find_new_host(s, 256, 1, exclude_host_ids=[h1_id])
        # libvirtd started again over SSH, as an admin would: UP at the next cycle
        target = RemoteTarget.for_host(_host(lab, h2.name), lab.settings)
        execute_remote_cmd(target, ["libvirtd", "--listen", "-d"])
        _wait_status(lab, h2.name, C.HostStatus.UP, SANITY_INTERVAL_S * 2 + 20)
        with session_scope(lab.engine) as s:
            event = s.scalar(select(HostEventLog).order_by(HostEventLog.id.desc()))
            assert (event.old_value, event.new_value) == ("DOWN", "UP")
    finally:
        worker.stop()
        thread.join(60)


def test_dead_open_vswitch_fails_the_service_check(lab: Lab) -> None:
    host = _host(lab, layout.HOSTS[0].name)
    target = RemoteTarget.for_host(host, lab.settings)
    execute_remote_cmd(target, ["ovs-appctl", "-t", "ovsdb-server", "exit"])
    try:
        problems = health.host_service_problems(host, lab.settings)
        assert [p.split(":")[0] for p in problems] == ["openvswitch"]
        checks = health.host_status_sanity_check(lab.engine, lab.settings)
        assert {c.host_name: c.new for c in checks}[host.host_name] == C.HostStatus.DOWN
    finally:
        execute_remote_cmd(
            target,
            [layout.OVS_CTL, "start", "--no-ovs-vswitchd", "--system-id=random"],
        )
    assert health.check_host_service_status(host, lab.settings)
    checks = health.host_status_sanity_check(lab.engine, lab.settings)
    assert {c.host_name: c.new for c in checks}[host.host_name] == C.HostStatus.UP


ORPHAN_XML = """<domain type='qemu'><name>{name}</name><memory unit='MiB'>64</memory>
<vcpu>1</vcpu><os><type arch='x86_64'>hvm</type></os></domain>"""


def test_orphan_found_and_removed_and_lost_domain_respawned(lab: Lab) -> None:
    h1 = _host(lab, layout.HOSTS[0].name)
    hv = hypervisor_for(h1.libvirt_uri)
    hv.define(ORPHAN_XML.format(name="stray-domain"))
    report = sanity.vm_sanity_check(lab.engine, lab.settings)
    assert [(r.vm_identity, r.state) for r in report.rows if r.state == sanity.ORPHAN] == [
        ("stray-domain", sanity.ORPHAN)
    ]
    host_domains.delete_orphan_vm(lab.engine, h1.id, "stray-domain")
    assert "stray-domain" not in {d.name for d in host_domains.get_host_domains(h1)}

    with session_scope(lab.engine) as s:
        queued = vms.request_vm(
            s, SYSTEM, lab.settings, vm_name="lost", template="tiny", ram_mb=256, vcpus=1,
            security_domain="lab", host=layout.HOSTS[1].name,
        )  # fmt: skip
    run_tasks(lab.engine, lab.settings)
    assert last_task(lab.engine).status == C.TaskStatus.SUCCESS, last_task(lab.engine).message
    with session_scope(lab.engine) as s:
        vm = s.get(VM, queued.vm_id)
        ip, identity, host = vm.private_ip.private_ip, vm.vm_identity, vm.host
        s.expunge(host)
    assert wait_ping(ip, 60)
    assert host_domains.has_running_vm(host)
    # the domain disappears behind Baadal's back (an admin's virsh undefine, a lost host)
    hv2 = hypervisor_for(host.libvirt_uri)
    hv2.destroy(identity)
    hv2.undefine(identity)
    report = sanity.vm_sanity_check(lab.engine, lab.settings)
    assert (identity, sanity.UNDEFINED) in {(r.vm_identity, r.state) for r in report.rows}
    assert hv2.domain_info(identity).status == C.VMStatus.RUNNING
    assert wait_ping(ip, 60), f"{ip} does not answer after the respawn"
    with session_scope(lab.engine) as s:
        vms.operate(s, SYSTEM, queued.vm_id, "delete")
    run_tasks(lab.engine, lab.settings)
    assert not host_domains.has_running_vm(host)


def test_host_resources_mac_type_and_utilization(lab: Lab) -> None:
    lab_host = layout.HOSTS[0]
    host = _host(lab, lab_host.name)
    sysfs = subprocess.run(
        ["ip", "netns", "exec", lab_host.netns, "cat", "/sys/class/net/mgmt0/address"],
        capture_output=True, text=True, check=True,
    ).stdout.strip().upper()  # fmt: skip
    assert resources.get_host_mac_address(host, lab.settings) == sysfs
    details = resources.host_resource_details(host, lab.settings)
    assert details.cpus == os.cpu_count()
    assert details.ram_gb >= 1
    assert resources.get_host_type(host, lab.settings) in set(C.HostType)
    rx0, tx0 = host_usage.get_host_nw_usage(host, lab.settings)
    # bounded traffic to the lab host's own address (a namespace the lab made)
    subprocess.run(["ping", "-c", "20", "-i", "0.05", "-s", "1000", "-q", lab_host.mgmt_ip],
                   capture_output=True, check=True)  # fmt: skip
    rx1, tx1 = host_usage.get_host_nw_usage(host, lab.settings)
    assert rx1 - rx0 >= 20 * 1000 and tx1 - tx0 >= 20 * 1000
    usage = host_usage.get_host_resources_usage(host, lab.settings, interval_s=0.5)
    assert 0.0 <= usage.cpu_percent <= 100.0
    assert usage.ram_used_kb > 0


def test_host_cli_on_the_lab(lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BAADAL_HOME", str(lab.home))
    get_settings.cache_clear()
    runner = CliRunner()
    checked = runner.invoke(app, ["host", "check"])
    assert checked.exit_code == 0, checked.output
    assert checked.output.count("UP") >= 2 * len(layout.HOSTS)
    shown = runner.invoke(app, ["host", "resources", layout.HOSTS[0].name])
    assert shown.exit_code == 0, shown.output
    assert f"{os.cpu_count()}" in shown.output
    assert runner.invoke(app, ["host", "domains", layout.HOSTS[0].name]).exit_code == 0
    assert (
        runner.invoke(app, ["host", "usage", layout.HOSTS[1].name, "--interval", "0.2"]).exit_code
        == 0
    )
    events = runner.invoke(app, ["host", "events", layout.HOSTS[1].name])
    assert events.exit_code == 0 and "DOWN" in events.output  # from the libvirtd test above
    sanity = runner.invoke(app, ["vm", "sanity"])
    assert sanity.exit_code == 0, sanity.output
    missing = runner.invoke(app, ["host", "orphan-delete", layout.HOSTS[0].name, "nope"])
    assert missing.exit_code == 2 and "nope" in missing.output
    respawn_up = runner.invoke(app, ["host", "respawn", layout.HOSTS[0].name])
    assert respawn_up.exit_code == 2, respawn_up.output  # refused: the host is UP


def test_vms_of_a_failed_host_respawn_elsewhere_at_their_ips(lab: Lab) -> None:
    h1, h2 = layout.HOSTS
    vm_ids = [create_vm(lab, f"ha{i}", layout.VLANS[0].domain, h2.name) for i in (1, 2)]
    with session_scope(lab.engine) as s:
        ips = [s.get(VM, v).private_ip.private_ip for v in vm_ids]
    assert all(wait_ping(ip, 60) for ip in ips)
    lab.settings.scheduler.host_sanity = SANITY_INTERVAL_S
    worker = Worker(lab.engine, lab.settings, registry=load_handler_modules(), concurrency=2)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        t0 = time.monotonic()
        os.kill(_libvirtd_pid(lab, 1), signal.SIGTERM)
        _wait_status(lab, h2.name, C.HostStatus.DOWN, SANITY_INTERVAL_S * 2 + 10)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with session_scope(lab.engine) as s:
                hosts = {s.get(VM, v).host.host_name for v in vm_ids}
            if hosts == {h1.name}:
                break
            time.sleep(0.3)
        assert hosts == {h1.name}
        assert all(wait_ping(ip, 60) for ip in ips), "respawned VMs do not answer"
        print(f"\nlibvirtd of {h2.name} stopped -> its VMs answer on {h1.name}: "
              f"{time.monotonic() - t0:.1f} s")  # fmt: skip
        # the old host comes back without them: nothing runs twice
        target = RemoteTarget.for_host(_host(lab, h2.name), lab.settings)
        execute_remote_cmd(target, ["libvirtd", "--listen", "-d"])
        _wait_status(lab, h2.name, C.HostStatus.UP, SANITY_INTERVAL_S * 2 + 20)
        assert not host_domains.get_host_domains(_host(lab, h2.name))
    finally:
        worker.stop()
        thread.join(60)
    with session_scope(lab.engine) as s:
        for vm_id in vm_ids:
            vms.operate(s, SYSTEM, vm_id, "delete")
    run_tasks(lab.engine, lab.settings)
