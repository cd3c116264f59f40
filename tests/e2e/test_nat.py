"""Software NAT on the lab's NAT box: a VM's public IP answers ping and HTTP from the
"internet" namespace only while mapped, a VNC grant reaches the VM's console until it
expires, Baadal leaves the box's other rules exactly as they were, and clear + reapply
restores mappings from the database."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from datetime import timedelta

import pytest

from baadal import constants as C
from baadal.db.models import VM
from baadal.db.session import session_scope
from baadal.lab import layout
from baadal.lab.guest import console_line
from baadal.net import nat
from baadal.net.remote import RemoteTarget, execute_remote_cmd
from baadal.services import vms
from baadal.vm import storage
from tests.e2e.conftest import Lab, wait_ping
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
_RFB_GREETING = """
import socket, sys
with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3) as s:
    s.settimeout(5)
    print(s.recv(12).decode())
"""


def _from_internet(*argv: str) -> subprocess.CompletedProcess[str]:
    cmd = ["ip", "netns", "exec", layout.INTERNET_NETNS, *argv]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30)


def _http_get(ip: str) -> subprocess.CompletedProcess[str]:
    return _from_internet(sys.executable, "-c", _HTTP_GET, ip)


def _rfb(ip: str, port: int) -> subprocess.CompletedProcess[str]:
    return _from_internet(sys.executable, "-c", _RFB_GREETING, ip, str(port))


def _nat_rules(lab: Lab) -> str:
    """The NAT box's iptables, without counters and timestamps."""
    s = lab.settings.nat
    target = RemoteTarget.for_address(
        s.nat_ip, lab.settings, user=s.nat_user, port=s.nat_ssh_port, key_file=s.nat_ssh_key
    )
    saved = execute_remote_cmd(target, ["iptables-save"]).stdout
    lines = [line for line in saved.splitlines() if not line.startswith("#")]
    return re.sub(r"\[\d+:\d+\]", "", "\n".join(lines))


def test_public_ip_and_vnc_through_the_nat_box(lab: Lab) -> None:
    settings, engine = lab.settings, lab.engine
    assert settings.nat.nat_type == C.NatType.SOFTWARE
    assert (settings.nat.nat_ip, settings.nat.public_interface) == (layout.NAT_MGMT_IP, "pub0")
    assert settings.nat.vnc_ip == layout.VNC_IP
    rules_before = _nat_rules(lab)

    t0 = time.monotonic()
    with session_scope(engine) as s:
        queued = vms.request_vm(
            s, settings, vm_name="natvm", template="tiny", ram_mb=256, vcpus=1,
            owner=vms.get_user(s, None), security_domain="lab", host="lab-h1", public_ip=True,
        )  # fmt: skip
    run_tasks(engine, settings)
    assert last_task(engine).status == C.TaskStatus.SUCCESS, last_task(engine).message
    with session_scope(engine) as s:
        vm = s.get(VM, queued.vm_id)
        public, private = vm.public_ip.public_ip, vm.private_ip.private_ip
        vnc_port = vm.vnc_port
        log = storage.console_log_path(settings, vm.datastore, vm.vm_identity)
    assert public.startswith("10.99.200.")
    ready = console_line(log, "TINY-READY", BOOT_TIMEOUT_S)
    assert ready is not None, log.read_text(errors="replace")[-2000:]
    assert wait_ping(private, PING_TIMEOUT_S), f"{private} does not answer the controller"
    print(f"\nVM up {time.monotonic() - t0:.1f} s")

    # not mapped yet: the internet cannot reach it
    assert not wait_ping(public, GONE_WAIT_S, layout.INTERNET_NETNS)

    t1 = time.monotonic()
    assert nat.create_public_ip_mapping_in_nat(engine, settings, queued.vm_id) == 3
    assert nat.create_public_ip_mapping_in_nat(engine, settings, queued.vm_id) == 0
    assert wait_ping(public, PING_TIMEOUT_S, layout.INTERNET_NETNS)
    got = _http_get(public)
    assert got.returncode == 0 and private in got.stdout, got.stderr
    print(f"public mapping -> ping + HTTP {time.monotonic() - t1:.1f} s")

    assert nat.remove_public_ip_mapping_from_nat(engine, settings, queued.vm_id) == 3
    assert nat.remove_public_ip_mapping_from_nat(engine, settings, queued.vm_id) == 0
    assert not wait_ping(public, GONE_WAIT_S, layout.INTERNET_NETNS)
    assert _http_get(public).returncode != 0

    # a VNC grant reaches the console until it expires
    grant = nat.grant_vnc_access(engine, settings, queued.vm_id, None)
    assert (grant.vnc_ip, grant.port) == (layout.VNC_IP, vnc_port)
    got = _rfb(layout.VNC_IP, vnc_port)
    assert got.returncode == 0 and got.stdout.startswith("RFB 003."), got.stderr
    after = grant.expiry_time + timedelta(seconds=1)
    assert nat.clear_all_timedout_vnc_mappings(engine, settings, now=after) == 1
    assert _rfb(layout.VNC_IP, vnc_port).returncode != 0

    assert _nat_rules(lab) == rules_before

    # after a NAT box reboot (simulated by clear all) the database restores the mapping
    nat.create_public_ip_mapping_in_nat(engine, settings, queued.vm_id)
    assert nat.clear_all_nat_mappings(engine, settings) == 2 + 2  # rules + 2 aliases
    assert _nat_rules(lab) == rules_before
    assert not wait_ping(public, GONE_WAIT_S, layout.INTERNET_NETNS)
    assert nat.reapply_nat_mappings(engine, settings) == 3
    assert wait_ping(public, PING_TIMEOUT_S, layout.INTERNET_NETNS)
    assert _http_get(public).returncode == 0
    nat.remove_public_ip_mapping_from_nat(engine, settings, queued.vm_id)
    assert _nat_rules(lab) == rules_before
