"""Maintenance on the lab: a cloud shutdown followed by a bootup brings every running VM
back running with its disk intact; putting a host into maintenance migrates its VMs
live to the other host (one task each, progress shown), where they keep answering."""

from __future__ import annotations

import time

import pytest
from typer.testing import CliRunner

from baadal import constants as C
from baadal.cli.main import app
from baadal.config import get_settings
from baadal.db.constants_table import get_constant
from baadal.db.models import VM
from baadal.db.session import session_scope
from baadal.host import maintenance
from baadal.lab import layout
from baadal.services import inventory, vms
from baadal.services.policy import SYSTEM
from tests.e2e.conftest import Lab, create_vm, guest_shell, wait_ping
from tests.unit.test_vm_lifecycle import run_tasks

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

DOMAIN = layout.VLANS[0].domain


def _vm(lab: Lab, vm_id: int) -> tuple[str, str, C.VMStatus]:
    with session_scope(lab.engine) as s:
        vm = s.get(VM, vm_id)
        return vm.private_ip.private_ip, vm.host.host_name, C.VMStatus(vm.status)


def _write_marker(lab: Lab, vm_id: int, text: str) -> None:
    out = guest_shell(lab, vm_id, f"echo {text} > /data/marker && sync && cat /data/marker")
    assert out == text


def test_shutdown_bootup_and_host_maintenance(lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    h1, h2 = (h.name for h in layout.HOSTS)
    vm_ids = [create_vm(lab, "m1", DOMAIN, h1), create_vm(lab, "m2", DOMAIN, h2)]
    ips = [_vm(lab, v)[0] for v in vm_ids]
    assert all(wait_ping(ip, 60) for ip in ips)
    for vm_id in vm_ids:
        _write_marker(lab, vm_id, f"kept-{vm_id}")

    t0 = time.monotonic()
    with session_scope(lab.engine) as s:
        queued = maintenance.shutdown_baadal(s)
    assert len(queued.task_ids) == 2
    run_tasks(lab.engine, lab.settings)
    with session_scope(lab.engine) as s:
        maintenance.finish(s, shutdown=True)
    assert [_vm(lab, v)[2] for v in vm_ids] == [C.VMStatus.SHUTDOWN] * 2
    assert not any(wait_ping(ip, 3) for ip in ips)
    down_s = time.monotonic() - t0

    t1 = time.monotonic()
    with session_scope(lab.engine) as s:
        maintenance.bootup_baadal(s)
    run_tasks(lab.engine, lab.settings)
    with session_scope(lab.engine) as s:
        maintenance.finish(s, shutdown=False)
        assert get_constant(s, "baadal_status") == C.BaadalStatus.UP
    assert [_vm(lab, v)[2] for v in vm_ids] == [C.VMStatus.RUNNING] * 2
    assert all(wait_ping(ip, 60) for ip in ips)
    for vm_id in vm_ids:
        assert guest_shell(lab, vm_id, "cat /data/marker") == f"kept-{vm_id}"
    print(f"\nshutdown {down_s:.1f} s, bootup to ping {time.monotonic() - t1:.1f} s")

    # host maintenance through the CLI: the VMs of lab-h1 move live to lab-h2
    monkeypatch.setenv("BAADAL_HOME", str(lab.home))
    get_settings.cache_clear()
    t2 = time.monotonic()
    result = CliRunner().invoke(app, ["host", "maintenance", h1, "--inline"])
    assert result.exit_code == 0, result.output
    assert [_vm(lab, v)[1] for v in vm_ids] == [h2, h2]
    assert all(wait_ping(ip, 30) for ip in ips)
    assert guest_shell(lab, vm_ids[0], "cat /data/marker") == f"kept-{vm_ids[0]}"
    print(f"maintenance of {h1} (evacuation) {time.monotonic() - t2:.1f} s")
    with session_scope(lab.engine) as s:
        assert inventory.get_host(s, SYSTEM, h1).status == C.HostStatus.MAINTENANCE
        inventory.set_host_status(s, SYSTEM, h1, C.HostStatus.UP)

    # one host's VMs only: snapshotted and stopped, then back with their disks
    runner = CliRunner()
    down = runner.invoke(app, ["host", "shutdown", h2, "--inline"])
    assert down.exit_code == 0, down.output
    assert [_vm(lab, v)[2] for v in vm_ids] == [C.VMStatus.SHUTDOWN] * 2
    up = runner.invoke(app, ["host", "bootup", h2, "--inline"])
    assert up.exit_code == 0, up.output
    assert [_vm(lab, v)[2] for v in vm_ids] == [C.VMStatus.RUNNING] * 2
    assert all(wait_ping(ip, 60) for ip in ips)
    assert guest_shell(lab, vm_ids[1], "cat /data/marker") == f"kept-{vm_ids[1]}"
    with session_scope(lab.engine) as s:
        for vm_id in vm_ids:
            vms.operate(s, SYSTEM, vm_id, "delete")
    run_tasks(lab.engine, lab.settings)
