"""Power on the lab, for real: lab-h2 is powered off over SSH with the lab's power-off
script (libvirtd, sshd, OVS and ping go silent, only its wake-on-LAN listener stays), then
woken by a real magic packet the controller broadcasts to 10.99.0.255:9, and takes VMs
again. A host with a running VM is not powered off. ``lab down`` still removes it all,
the listener of a powered-off host included."""

from __future__ import annotations

import subprocess
import time

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from baadal import constants as C
from baadal.cli.main import app
from baadal.config import get_settings
from baadal.db.models import VM, Host, HostEventLog
from baadal.db.session import session_scope
from baadal.errors import ConflictError
from baadal.host import health, power
from baadal.lab import bmc, hostns, layout, ssh, state, topology
from baadal.services import vms
from baadal.services.policy import SYSTEM
from tests.e2e.conftest import Lab, create_vm, lab_names, wait_ping
from tests.unit.test_vm_lifecycle import run_tasks

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

H2 = layout.HOSTS[1]


@pytest.fixture(scope="module")
def power_lab(lab: Lab) -> Lab:
    """The lab, whose settings and host rows carry what power control needs."""
    assert lab.settings.power.poweroff_command == hostns.POWEROFF_COMMAND
    assert lab.settings.power.wol_broadcast == layout.MGMT_BROADCAST
    assert lab.settings.power.ipmi_user == bmc.BMC_USER
    lab.settings.power.boot_timeout_s = 60
    with session_scope(lab.engine) as s:
        for host in layout.HOSTS:
            row = s.scalar(select(Host).where(Host.host_name == host.name))
            assert row.mac_addr == _mgmt_mac(host.netns).upper()
            assert row.bmc_address == host.bmc_ip
    return lab


def _mgmt_mac(netns: str) -> str:
    argv = ["ip", "netns", "exec", netns, "cat", "/sys/class/net/mgmt0/address"]
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout.strip()


def _row(lab: Lab) -> Host:
    with session_scope(lab.engine) as s:
        host = s.scalar(select(Host).where(Host.host_name == H2.name))
        s.expunge(host)
    return host


def _processes(netns: str) -> list[str]:
    """The command names of every process in the namespace."""
    out = subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True).stdout
    names = []
    for pid in out.split():
        try:
            with open(f"/proc/{pid}/comm") as f:
                names.append(f.read().strip())
        except OSError:
            continue
    return names


def _libvirt_port_open() -> bool:
    return power._port_open(H2.mgmt_ip, layout.LIBVIRT_PORT)


def _events(lab: Lab, host_id: int) -> list[tuple[str | None, str | None, str | None]]:
    with session_scope(lab.engine) as s:
        rows = s.scalars(
            select(HostEventLog).where(HostEventLog.host_id == host_id).order_by(HostEventLog.id)
        )
        return [(e.old_value, e.new_value, e.message) for e in rows]


def test_power_down_then_wake_on_lan_then_a_vm(
    power_lab: Lab, monkeypatch: pytest.MonkeyPatch
) -> None:
    lab = power_lab
    monkeypatch.setattr(lab.settings.power, "ipmi_user", "")  # no IPMI: wake-on-LAN
    host = _row(lab)
    assert host.status == C.HostStatus.UP and _libvirt_port_open()

    down = power.host_power_down(lab.engine, lab.settings, host.id)
    print(f"\npower-down of {H2.name}: {down.seconds:.1f} s ({down.message})")
    assert (down.method, down.changed, down.status) == ("SSH", True, C.HostStatus.DOWN)
    assert not _libvirt_port_open()
    assert not ssh.sshd_answers(H2.mgmt_ip)[0]
    assert health.check_host_status(_row(lab)) == C.HostStatus.DOWN
    assert _row(lab).status == C.HostStatus.DOWN
    assert _events(lab, host.id)[-1] == ("UP", "DOWN", "powered off by Baadal (SSH)")
    # only "the NIC" is left: the wake-on-LAN listener
    assert _processes(H2.netns) == ["python3"]
    # the other host is untouched
    h1 = layout.HOSTS[0]
    assert ssh.sshd_answers(h1.mgmt_ip)[0]
    # nothing is placed on a DOWN host
    with session_scope(lab.engine) as s, pytest.raises(ConflictError, match=f"{H2.name} is DOWN"):
        vms.request_vm(
            s, SYSTEM, lab.settings, vm_name="nope", template=layout.TEMPLATE_NAME, ram_mb=256,
            vcpus=1, security_domain="lab", host=H2.name,
        )  # fmt: skip

    sent = time.monotonic()
    up = power.host_power_up(lab.engine, lab.settings, host.id)
    print(f"wake-on-LAN to UP of {H2.name}: {time.monotonic() - sent:.1f} s ({up.message})")
    assert (up.method, up.changed, up.status) == ("wake-on-LAN", True, C.HostStatus.UP)
    assert _libvirt_port_open()
    assert ssh.sshd_answers(H2.mgmt_ip)[0]
    assert health.check_host_status(_row(lab)) == C.HostStatus.UP
    assert health.host_service_problems(_row(lab), lab.settings) == []
    assert _events(lab, host.id)[-1] == ("DOWN", "UP", "powered on by Baadal (wake-on-LAN)")
    assert "python3" not in _processes(H2.netns)

    again = power.host_power_up(lab.engine, lab.settings, host.id)
    assert (again.changed, again.message) == (False, f"host {H2.name} is already UP")

    vm_id = create_vm(lab, "pw1", "lab", host=H2.name)
    with session_scope(lab.engine) as s:
        assert s.get(VM, vm_id).host.host_name == H2.name
    with pytest.raises(ConflictError, match=r"pw1 \(RUNNING\)"):
        power.host_power_down(lab.engine, lab.settings, host.id)
    assert _row(lab).status == C.HostStatus.UP and _libvirt_port_open()

    # the admin's way: power-down first migrates the VM away, then powers the host off
    monkeypatch.setenv("BAADAL_HOME", str(lab.home))
    get_settings.cache_clear()
    runner = CliRunner()
    result = runner.invoke(app, ["host", "power-down", H2.name, "--inline"])
    assert result.exit_code == 0, result.output
    with session_scope(lab.engine) as s:
        vm = s.get(VM, vm_id)
        assert vm.host.host_name == layout.HOSTS[0].name
        ip = vm.private_ip.private_ip
    assert _row(lab).status == C.HostStatus.DOWN and not _libvirt_port_open()
    assert wait_ping(ip, 30)
    woke = runner.invoke(app, ["host", "power-up", H2.name])
    assert woke.exit_code == 0, woke.output
    assert _row(lab).status == C.HostStatus.UP
    with session_scope(lab.engine) as s:
        vms.operate(s, SYSTEM, vm_id, "delete")
    run_tasks(lab.engine, lab.settings)
    with session_scope(lab.engine) as s:
        assert s.get(VM, vm_id) is None


def test_ipmi_power_off_when_ssh_is_gone_then_on(power_lab: Lab) -> None:
    """The host's sshd is dead, so the power-off command cannot run: Baadal asks the
    host's BMC over IPMI instead, and powers it on through the BMC too."""
    lab = power_lab
    host = _row(lab)
    assert host.status == C.HostStatus.UP
    assert power.ipmi_power(host, lab.settings, "status") == "on"
    lab_dir = state.lab_dir(lab.settings)
    sshd_pid = int(H2.pid_file(lab_dir, "sshd").read_text())
    subprocess.run(["kill", str(sshd_pid)], check=True)
    assert _wait_ssh_gone()

    down = power.host_power_down(lab.engine, lab.settings, host.id)
    print(f"\nIPMI power-down of {H2.name}: {down.seconds:.1f} s")
    assert (down.method, down.status) == ("IPMI", C.HostStatus.DOWN)
    assert not _libvirt_port_open()
    assert power.ipmi_power(host, lab.settings, "status") == "off"
    assert _processes(H2.netns) == ["python3"]  # only the NIC's listener is left

    up = power.host_power_up(lab.engine, lab.settings, host.id)
    print(f"IPMI power-up of {H2.name}: {up.seconds:.1f} s")
    assert (up.method, up.status) == ("IPMI", C.HostStatus.UP)
    assert _libvirt_port_open() and ssh.sshd_answers(H2.mgmt_ip)[0]
    assert _events(lab, host.id)[-1] == ("DOWN", "UP", "powered on by Baadal (IPMI)")
    log = bmc.log_file(lab_dir, H2).read_text()
    assert f"{H2.name}: power off" in log and f"{H2.name}: power on" in log
    assert bmc.password_file(lab_dir).read_text().strip() not in log


def _wait_ssh_gone() -> bool:
    deadline = time.monotonic() + 10
    while ssh.sshd_answers(H2.mgmt_ip)[0]:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def _alive(pid: int) -> bool:
    """Running and not a zombie (this machine's PID 1 may never reap the lab's daemons)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_power_policy_powers_idle_hosts_down_and_wakes_them_when_needed(
    power_lab: Lab,
) -> None:
    lab = power_lab
    lab.settings.power.min_hosts_up = 1
    results = power.host_power_operation(lab.engine, lab.settings)
    assert [(r.action, r.ok) for r in results] == [("down", True)], results
    sleeping = results[0].host_name
    with session_scope(lab.engine) as s:
        statuses = {h.host_name: C.HostStatus(h.status) for h in s.scalars(select(Host))}
    assert list(statuses.values()).count(C.HostStatus.DOWN) == 1
    assert statuses[sleeping] == C.HostStatus.DOWN
    lab.settings.power.min_hosts_up = 2  # more capacity wanted: the sleeper is woken (IPMI)
    results = power.host_power_operation(lab.engine, lab.settings)
    assert [(r.host_name, r.action, r.ok) for r in results] == [(sleeping, "up", True)]
    with session_scope(lab.engine) as s:
        assert all(h.status == C.HostStatus.UP for h in s.scalars(select(Host)))


def test_lab_down_removes_a_powered_off_host(power_lab: Lab) -> None:
    lab = power_lab
    power.host_power_down(lab.engine, lab.settings, _row(lab).id)
    listener = subprocess.run(
        ["ip", "netns", "pids", H2.netns], capture_output=True, text=True
    ).stdout.split()
    assert len(listener) == 1
    topology.down(lab.settings)
    assert lab_names() == ([], [], [])
    assert not any(_alive(int(pid)) for pid in listener)
