"""Fixtures for tests on the lab: a Baadal home libvirt-qemu and dnsmasq can enter, and a
lab that stays up for a whole test module (``lab up`` once, ``lab down`` at the end)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

import libvirt
import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from baadal import constants as C
from baadal.config import Settings, get_settings, load_settings
from baadal.db.models import VM
from baadal.db.schema import upgrade
from baadal.db.session import make_engine, session_scope
from baadal.lab import layout, topology
from baadal.lab.guest import console_line
from baadal.services import vms
from baadal.services.policy import SYSTEM
from baadal.vm import storage
from tests.support.libvirtd import console_send
from tests.unit.test_vm_lifecycle import last_task, run_tasks


def lab_names() -> tuple[list[str], list[str], list[str]]:
    """Namespaces, root links and root OVS bridges with the lab's prefix."""
    ns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    brs = subprocess.run(["ovs-vsctl", "list-br"], capture_output=True, text=True).stdout
    return (
        [n.split()[0] for n in ns.splitlines() if n.startswith(layout.PREFIX)],
        [
            line.split(":")[1].strip().split("@")[0]
            for line in links.splitlines()
            if line.split(":")[1].strip().startswith(layout.PREFIX)
        ],
        [b for b in brs.split() if b.startswith(layout.PREFIX)],
    )


def wait_ping(ip: str, timeout: float, netns: str | None = None) -> bool:
    """True once ``ip`` answers one ping (from ``netns`` if given) within ``timeout``."""
    prefix = ["ip", "netns", "exec", netns] if netns else []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        argv = [*prefix, "ping", "-c1", "-W1", ip]
        if subprocess.run(argv, capture_output=True).returncode == 0:
            return True
        time.sleep(0.2)
    return False


_RFB_GREETING = """
import socket, sys
with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3) as s:
    s.settimeout(5)
    print(s.recv(12).decode())
"""


def from_internet(*argv: str) -> subprocess.CompletedProcess[str]:
    """Run a command in the lab's "internet" namespace (outside the NAT box)."""
    cmd = ["ip", "netns", "exec", layout.INTERNET_NETNS, *argv]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30)


def rfb_greeting(ip: str, port: int) -> subprocess.CompletedProcess[str]:
    """Connect from the internet to a VNC console; stdout starts with "RFB " if it answers."""
    return from_internet(sys.executable, "-c", _RFB_GREETING, ip, str(port))


def _skip_unless_lab_possible() -> None:
    if os.geteuid() != 0:
        pytest.skip("the lab needs root")
    if shutil.which("dnsmasq") is None or shutil.which("ovs-vsctl") is None:
        pytest.skip("dnsmasq / openvswitch-switch not installed")
    if any(lab_names()):
        pytest.skip("a lab is already up on this machine")


def _new_home() -> Path:
    """pytest's tmp dirs are 0700: QEMU (libvirt-qemu) and dnsmasq (nobody) need o+x."""
    home = Path(tempfile.mkdtemp(prefix="baadal-lab-", dir="/var/tmp"))
    home.chmod(0o755)
    return home


@pytest.fixture
def lab_home(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty home for a test that builds and removes the lab itself."""
    _skip_unless_lab_possible()
    home = _new_home()
    monkeypatch.setenv("BAADAL_HOME", str(home))
    get_settings.cache_clear()
    try:
        yield home
    finally:
        topology.down(load_settings())  # whatever happened above, leave nothing running
        get_settings.cache_clear()
        shutil.rmtree(home, ignore_errors=True)


@dataclass
class Lab:
    home: Path
    settings: Settings
    engine: Engine

    def db(self) -> Callable[[], AbstractContextManager[Session]]:
        return lambda: session_scope(self.engine)


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    """A lab that is up for the whole module, with its own home and SQLite database."""
    _skip_unless_lab_possible()
    home = _new_home()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BAADAL_HOME", str(home))
        settings = load_settings()
    engine = make_engine(f"sqlite:///{home / 'baadal.db'}")
    upgrade(engine)
    try:
        topology.up(settings, lambda: session_scope(engine))
        yield Lab(home, settings, engine)
    finally:
        topology.down(settings)
        engine.dispose()
        shutil.rmtree(home, ignore_errors=True)


def create_vm(lab: Lab, name: str, domain: str, host: str, **kw: object) -> int:
    """A tiny-guest VM installed through the task engine on a chosen lab host."""
    with session_scope(lab.engine) as s:
        queued = vms.request_vm(
            s, SYSTEM, lab.settings, vm_name=name, template=layout.TEMPLATE_NAME, ram_mb=256, vcpus=1,
            security_domain=domain, host=host, **kw,
        )  # fmt: skip
    run_tasks(lab.engine, lab.settings)
    task = last_task(lab.engine)
    assert task.status == C.TaskStatus.SUCCESS, task.message
    return queued.vm_id


def guest_shell(lab: Lab, vm_id: int, shell: str, timeout: float = 30) -> str:
    """Run ``shell`` on the VM's serial console; returns what it printed (one line)."""
    with session_scope(lab.engine) as s:
        vm = s.get(VM, vm_id)
        uri, identity = vm.host.libvirt_uri, vm.vm_identity
        log = storage.console_log_path(lab.settings, vm.datastore, identity)
    key = f"OUT{uuid.uuid4().hex[:8]}"
    conn = libvirt.open(uri)
    try:
        # the marker is split in the echoed command, so only the output matches it
        console_send(conn, conn.lookupByName(identity), f'echo "{key[:3]}""{key[3:]}=$({shell})"\n')
    finally:
        conn.close()
    line = console_line(log, f"{key}=", timeout)
    assert line is not None, f"guest did not answer {shell!r}"
    return line.split(f"{key}=", 1)[1].strip()


def guest_ip(lab: Lab, vm_id: int) -> str:
    return guest_shell(lab, vm_id, "ip -4 -o addr show dev eth0 | awk '{print $4}'")
