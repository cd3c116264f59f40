"""The tiny guest really boots on qemu:///system (TCG): modules load, DHCP, /data, ACPI.

The NIC is QEMU user-mode networking: its built-in DHCP server hands out 10.0.2.15/24
without touching the host's network. The kernel package is cached in CACHE_DIR so only
the first run on a machine downloads it.
"""

from __future__ import annotations

import gzip
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

import libvirt
import pytest

from baadal.lab.guest import (
    DATA_MARKER,
    POWEROFF_MARKER,
    READY_MARKER,
    TinyGuest,
    build_tiny_guest,
    console_line,
    console_log_has,
    parse_ready_line,
)
from tests.support.libvirtd import console_send, ensure_libvirtd, qemu_workdir, remove_domain

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CACHE_DIR = Path("/var/cache/baadal-test/tiny-guest")
DOMAIN_NAME = "baadal-test-tiny-guest"
DOMAIN_UUID = "0e0e0e0e-0000-4000-8000-0000000000a1"
MAC = "52:54:00:0e:0e:a1"
READY_TIMEOUT_S = 90.0
SHUTDOWN_TIMEOUT_S = 30.0

DOMAIN_XML = """<domain type='qemu'>
  <name>{name}</name>
  <uuid>{uuid}</uuid>
  <memory unit='MiB'>192</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{kernel}</kernel>
    <initrd>{initrd}</initrd>
    <cmdline>{cmdline}</cmdline>
  </os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='{disk}'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <interface type='user'>
      <mac address='{mac}'/>
      <model type='virtio'/>
    </interface>
    <serial type='pty'><log file='{console}' append='off'/></serial>
    <console type='pty'/>
  </devices>
</domain>
"""


@dataclass
class Lab:
    conn: libvirt.virConnect
    work: Path
    guest: TinyGuest
    cold_build_s: float


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    uri = ensure_libvirtd()
    conn = libvirt.open(uri)
    remove_domain(conn, DOMAIN_NAME)  # left over by an interrupted run
    with qemu_workdir("baadal-tiny-") as work:
        started = time.monotonic()
        guest = build_tiny_guest(work / "guest", cache_dir=CACHE_DIR)
        yield Lab(conn, work, guest, time.monotonic() - started)
        remove_domain(conn, DOMAIN_NAME)
    conn.close()


def _define(lab: Lab, disk: Path, console: Path) -> libvirt.virDomain:
    g = lab.guest
    xml = DOMAIN_XML.format(
        name=DOMAIN_NAME,
        uuid=DOMAIN_UUID,
        kernel=escape(str(g.kernel)),
        initrd=escape(str(g.initrd)),
        cmdline=escape(g.cmdline),
        disk=escape(str(disk), {"'": "&apos;"}),
        mac=MAC,
        console=escape(str(console), {"'": "&apos;"}),
    )
    return lab.conn.defineXML(xml)


def _overlay(template: Path, path: Path) -> None:
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(template), str(path)],
        check=True,
        timeout=60,
    )


def _boot(dom: libvirt.virDomain, console: Path) -> tuple[str, float]:
    """Start the domain; (TINY-READY line, seconds from start() to it)."""
    started = time.monotonic()
    dom.create()
    line = console_line(console, READY_MARKER, READY_TIMEOUT_S)
    elapsed = time.monotonic() - started
    assert line is not None, f"no {READY_MARKER} within {READY_TIMEOUT_S} s:\n" + (
        console.read_text(errors="replace") if console.exists() else "(no console log)"
    )
    return line, elapsed


def _wait_shutoff(dom: libvirt.virDomain, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not dom.isActive():
            return True
        time.sleep(0.2)
    return False


def test_build_outputs_and_warm_rebuild(lab: Lab) -> None:
    g = lab.guest
    assert g.kernel_version.startswith("6.1.0-") and g.kernel_version.endswith("-amd64")
    assert g.cmdline == "console=ttyS0 quiet"
    assert g.kernel.stat().st_size > 1_000_000

    archive = gzip.decompress(g.initrd.read_bytes())
    assert archive.startswith(b"070701")
    for name in (b"init\0", b"bin/busybox\0", b"dev/console\0", b"lib/modules/virtio_net.ko\0"):
        assert name in archive
    assert archive.rstrip(b"\0").endswith(b"TRAILER!!!")

    info = subprocess.run(
        ["qemu-img", "info", "--output=json", str(g.disk)],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    assert '"format": "qcow2"' in info and '"virtual-size": 268435456' in info

    started = time.monotonic()
    again = build_tiny_guest(g.kernel.parent, cache_dir=CACHE_DIR)
    warm_s = time.monotonic() - started
    assert again == g
    assert warm_s < 1.0
    print(
        f"\ntiny guest: kernel {g.kernel_version}; build {lab.cold_build_s:.2f} s "
        f"(first in this run), warm {warm_s * 1000:.1f} ms; "
        f"initrd {g.initrd.stat().st_size / 1e6:.2f} MB"
    )


def test_boots_to_ready_keeps_data_and_powers_off_on_acpi(lab: Lab) -> None:
    disk = lab.work / "tiny-test.qcow2"
    console = lab.work / "tiny-test.console"
    _overlay(lab.guest.disk, disk)
    dom = _define(lab, disk, console)
    try:
        line, boot_s = _boot(dom, console)
        ready = parse_ready_line(line)
        assert ready.address == "10.0.2.15/24"  # QEMU user-mode network's DHCP
        assert ready.disks == ("vda",)
        text = console.read_text(errors="replace")
        assert f"{DATA_MARKER} formatted boots=1" in text
        assert "insmod" not in text  # every module loaded
        assert "lease of 10.0.2.15 obtained" in text

        # httpd answers inside the guest (user-mode networking cannot reach it from here)
        console_send(lab.conn, dom, "\nwget -qO- http://127.0.0.1/info.txt | sed 's/^/WWW-/'\n")
        assert console_log_has(console, "WWW-address=10.0.2.15/24", 20)
        assert console_log_has(console, "WWW-boots=1", 5)

        # ACPI power button: the guest syncs, unmounts /data and powers itself off
        dom.shutdown()
        assert console_log_has(console, POWEROFF_MARKER, SHUTDOWN_TIMEOUT_S)
        assert _wait_shutoff(dom, SHUTDOWN_TIMEOUT_S), "guest ignored the ACPI power button"

        # the overlay kept /data: the second boot mounts it and counts on
        line, reboot_s = _boot(dom, console)
        assert parse_ready_line(line).disks == ("vda",)
        assert f"{DATA_MARKER} mounted boots=2" in console.read_text(errors="replace")
        print(f"\ntiny guest: start to {READY_MARKER} {boot_s:.1f} s, second boot {reboot_s:.1f} s")
    finally:
        remove_domain(lab.conn, DOMAIN_NAME)
    assert DOMAIN_NAME not in [d.name() for d in lab.conn.listAllDomains()]
