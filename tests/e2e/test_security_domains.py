"""Security domains on the lab's VLANs: two VMs of domain A reach each other, a VM of
domain B reaches neither; after update_security_domain moves one A VM to B it gets a B
address from dnsmasq and the reachability flips."""

from __future__ import annotations

import time

import pytest

from baadal import constants as C
from baadal.db.models import VM
from baadal.db.session import session_scope
from baadal.lab import layout
from baadal.lab.guest import READY_MARKER
from baadal.net import dhcp
from baadal.services import vms
from baadal.services.policy import SYSTEM
from baadal.vm import storage
from tests.e2e.conftest import Lab, create_vm, guest_ip, guest_shell, wait_ping
from tests.unit.test_vm_lifecycle import last_task, run_tasks

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

BOOT_TIMEOUT_S = 90
A, B = layout.VLANS[0], layout.VLANS[1]


def _ip(lab: Lab, vm_id: int) -> str:
    with session_scope(lab.engine) as s:
        return s.get(VM, vm_id).private_ip.private_ip


def _wait_ready(lab: Lab, vm_id: int, ip: str) -> None:
    """The guest's console says it is up with ``ip`` (its DHCP lease)."""
    with session_scope(lab.engine) as s:
        vm = s.get(VM, vm_id)
        log = storage.console_log_path(lab.settings, vm.datastore, vm.vm_identity)
    deadline = time.monotonic() + BOOT_TIMEOUT_S
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace") if log.exists() else ""
        if f"{READY_MARKER} {ip}/" in text:
            return
        time.sleep(0.3)
    raise AssertionError(f"VM {vm_id} did not come up with {ip}")


def _reaches(lab: Lab, vm_id: int, ip: str) -> bool:
    answer = guest_shell(lab, vm_id, f"ping -c 2 -W 1 {ip} >/dev/null 2>&1 && echo yes || echo no")
    return answer == "yes"


def test_domains_isolate_and_a_move_flips_reachability(lab: Lab) -> None:
    h1, h2 = (h.name for h in layout.HOSTS)
    a1 = create_vm(lab, "a1", A.domain, h1)
    a2 = create_vm(lab, "a2", A.domain, h2)
    b1 = create_vm(lab, "b1", B.domain, h1)
    ip_a1, ip_a2, ip_b1 = _ip(lab, a1), _ip(lab, a2), _ip(lab, b1)
    for vm_id, ip in ((a1, ip_a1), (a2, ip_a2), (b1, ip_b1)):
        _wait_ready(lab, vm_id, ip)  # the reserved address, from dnsmasq
    assert ip_a1.startswith("10.99.10.") and ip_a2.startswith("10.99.10.")
    assert ip_b1.startswith("10.99.20.")
    assert guest_ip(lab, a2).startswith(ip_a2 + "/")
    assert _reaches(lab, a1, ip_a2)  # same domain, across hosts
    assert not _reaches(lab, b1, ip_a1)
    assert not _reaches(lab, b1, ip_a2)

    # move a2 to domain B: new address from B's pool, by DHCP after a reboot
    with session_scope(lab.engine) as s:
        vms.request_edit(s, SYSTEM, a2, security_domain=B.domain)
    run_tasks(lab.engine, lab.settings)
    task = last_task(lab.engine)
    assert (task.status, task.message) == (
        C.TaskStatus.SUCCESS,
        "Edited security domain successfully.",
    )
    new_ip = _ip(lab, a2)
    assert new_ip.startswith("10.99.20.") and new_ip != ip_a2
    _wait_ready(lab, a2, new_ip)
    assert guest_ip(lab, a2).startswith(new_ip + "/")
    assert wait_ping(new_ip, 30)  # the controller has a leg on every lab VLAN
    reserved = {e.ip for e in dhcp.read_dhcp_entries(lab.settings)}
    assert new_ip in reserved and ip_a2 not in reserved
    assert _reaches(lab, b1, new_ip)
    assert not _reaches(lab, a1, new_ip)

    for vm_id in (a1, a2, b1):
        with session_scope(lab.engine) as s:
            vms.operate(s, SYSTEM, vm_id, "delete")
    run_tasks(lab.engine, lab.settings)
    assert dhcp.read_dhcp_entries(lab.settings) == []
