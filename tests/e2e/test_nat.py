"""Software NAT on the lab's NAT box: a VM created with a public IP answers ping and HTTP
from the "internet" namespace, stops when the IP is detached and answers again when it is
attached; a VNC grant reaches the VM's console until it expires and the 11th grant of a
day is refused; clear + reapply restores mappings from the database; after the VM is
deleted the NAT box's rules and the DHCP hosts file are exactly as before."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest

from baadal import constants as C
from baadal.db.models import VM
from baadal.db.session import session_scope
from baadal.drivers.remote import RemoteTarget, execute_remote_cmd
from baadal.errors import ConflictError
from baadal.lab import layout
from baadal.lab.guest import console_line
from baadal.net import nat_box
from baadal.services import vms
from baadal.services.policy import SYSTEM
from baadal.vm import nat as vm_nat
from baadal.vm import storage
from tests.e2e.conftest import Lab, create_vm, from_internet, guest_shell, rfb_greeting, wait_ping
from tests.unit.test_vm_lifecycle import last_task, run_tasks

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

BOOT_TIMEOUT_S = 90
PING_TIMEOUT_S = 30
GONE_WAIT_S = 3

_HTTP_GET = """
import sys, urllib.request
with urllib.request.urlopen(f"http://{sys.argv[1]}/", timeout=5) as r:
    print(r.read().decode())
"""


def _http_get(ip: str) -> subprocess.CompletedProcess[str]:
    return from_internet(sys.executable, "-c", _HTTP_GET, ip)


def _nat_rules(lab: Lab) -> str:
    """The NAT box's iptables, without counters and timestamps."""
    s = lab.settings.nat
    target = RemoteTarget.for_address(
        s.nat_ip, lab.settings, user=s.nat_user, port=s.nat_ssh_port, key_file=s.nat_ssh_key
    )
    saved = execute_remote_cmd(target, ["iptables-save"]).stdout
    lines = [line for line in saved.splitlines() if not line.startswith("#")]
    return re.sub(r"\[\d+:\d+\]", "", "\n".join(lines))


def _edit_public_ip(lab: Lab, vm_id: int, attach: bool) -> None:
    with session_scope(lab.engine) as s:
        vms.request_edit(s, SYSTEM, vm_id, public_ip=attach)
    run_tasks(lab.engine, lab.settings)
    task = last_task(lab.engine)
    assert (task.status, task.message) == (C.TaskStatus.SUCCESS, "Edited public IP successfully.")


def test_public_ip_and_vnc_through_the_nat_box(lab: Lab) -> None:
    settings, engine = lab.settings, lab.engine
    assert settings.nat.nat_type == C.NatType.SOFTWARE
    assert (settings.nat.nat_ip, settings.nat.public_interface) == (layout.NAT_MGMT_IP, "pub0")
    assert settings.nat.vnc_ip == layout.VNC_IP
    rules_before = _nat_rules(lab)
    hosts_before = Path(settings.dhcp.hosts_file).read_text()

    # a VM created with a public IP answers from the internet as soon as it runs
    t0 = time.monotonic()
    vm_id = create_vm(lab, "natvm", "lab", "lab-h1", public_ip=True)
    with session_scope(engine) as s:
        vm = s.get(VM, vm_id)
        public, private = vm.public_ip.public_ip, vm.private_ip.private_ip
        vnc_port = vm.vnc_port
        log = storage.console_log_path(settings, vm.datastore, vm.vm_identity)
    assert public.startswith("10.99.200.")
    ready = console_line(log, "TINY-READY", BOOT_TIMEOUT_S)
    assert ready is not None, log.read_text(errors="replace")[-2000:]
    assert wait_ping(public, PING_TIMEOUT_S, layout.INTERNET_NETNS)
    print(f"\ncreate with public IP -> answers from the internet {time.monotonic() - t0:.1f} s")
    got = _http_get(public)
    assert got.returncode == 0 and private in got.stdout, got.stderr
    # the VM reaches the internet through the NAT box, as its public address
    answer = guest_shell(lab, vm_id, f"ping -c 2 -W 1 {layout.INTERNET_IP} >/dev/null && echo up")
    assert answer == "up"

    # detach through the task engine: gone from the internet; attach: back
    _edit_public_ip(lab, vm_id, attach=False)
    assert not wait_ping(public, GONE_WAIT_S, layout.INTERNET_NETNS)
    assert _http_get(public).returncode != 0
    assert _nat_rules(lab) == rules_before
    _edit_public_ip(lab, vm_id, attach=True)
    with session_scope(engine) as s:
        public = s.get(VM, vm_id).public_ip.public_ip
    assert wait_ping(public, PING_TIMEOUT_S, layout.INTERNET_NETNS)

    # a public IP already mapped elsewhere is refused, and nothing changes
    assert len(nat_box.baadal_rules(settings)) == 2  # DNAT + SNAT, as `net nat show` lists
    rules_mapped = _nat_rules(lab)
    # another private address than the VM's (its address is a random pick from the pool)
    elsewhere = next(f"10.99.10.{n}" for n in (77, 78) if f"10.99.10.{n}" != private)
    with pytest.raises(ConflictError, match="already mapped"):
        nat_box.create_mapping(settings, nat_box.PublicIpMapping(public, elsewhere))
    assert _nat_rules(lab) == rules_mapped

    # a VNC grant reaches the console until it expires; the 11th grant of a day is refused
    grant = vms.grant_vnc_access(engine, SYSTEM, settings, vm_id)
    assert (grant.vnc_ip, grant.port) == (layout.VNC_IP, vnc_port)
    got = rfb_greeting(layout.VNC_IP, vnc_port)
    assert got.returncode == 0 and got.stdout.startswith("RFB 003."), got.stderr
    grants = [grant] + [
        vms.grant_vnc_access(engine, SYSTEM, settings, vm_id)
        for _ in range(C.MAX_VNC_ALLOWED_IN_A_DAY - 1)
    ]
    rules_granted = _nat_rules(lab)
    with pytest.raises(ConflictError):
        vms.grant_vnc_access(engine, SYSTEM, settings, vm_id)
    assert _nat_rules(lab) == rules_granted
    after = max(g.expiry_time for g in grants) + timedelta(seconds=1)
    assert vm_nat.clear_all_timedout_vnc_mappings(engine, settings, now=after) == 10
    assert rfb_greeting(layout.VNC_IP, vnc_port).returncode != 0
    assert _nat_rules(lab) == rules_mapped

    # after a NAT box reboot (simulated by clear all) the database restores the mapping
    assert vm_nat.clear_all_nat_mappings(engine, settings) == 2 + 2  # rules + 2 aliases
    assert _nat_rules(lab) == rules_before
    assert not wait_ping(public, GONE_WAIT_S, layout.INTERNET_NETNS)
    assert vm_nat.reapply_nat_mappings(engine, settings) == 3
    assert wait_ping(public, PING_TIMEOUT_S, layout.INTERNET_NETNS)

    # delete: no rule and no DHCP reservation is left behind
    with session_scope(engine) as s:
        vms.operate(s, SYSTEM, vm_id, "delete")
    run_tasks(engine, settings)
    assert last_task(engine).status == C.TaskStatus.SUCCESS
    assert _nat_rules(lab) == rules_before
    assert Path(settings.dhcp.hosts_file).read_text() == hosts_before
