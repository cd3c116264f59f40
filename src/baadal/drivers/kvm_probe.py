"""Is KVM really usable on a host? Decided by booting, never by capabilities output.

On the project's machines libvirt advertises kvm while a kvm guest hangs right after the
BIOS (lab-notes.md). So: if the host does not even advertise kvm, the answer is 'qemu'
(TCG). If it does, a tiny probe domain is booted with type 'kvm' and must print a marker
on its serial console within a timeout; otherwise 'qemu'. Answers are cached per URI
for the life of the process (a host's KVM does not come and go).
"""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import libvirt
from lxml import etree

from baadal.drivers import domain_xml

PROBE_TIMEOUT_S = 20.0
#: the guest kernel prints this early in every boot
PROBE_MARKER = "Linux version"

_cache: dict[str, str] = {}
_lock = threading.Lock()


def advertises_kvm(conn: libvirt.virConnect) -> bool:
    caps = etree.fromstring(conn.getCapabilities().encode())
    return bool(caps.xpath("//guest/arch[@name='x86_64']/domain[@type='kvm']"))


def boot_probe(conn: libvirt.virConnect, kernel: str, initrd: str | None, workdir: Path) -> bool:
    """Boot a transient kvm domain; True if its kernel reaches the serial console."""
    log_file = workdir / f"kvm-probe-{uuid.uuid4().hex[:8]}.log"
    spec = domain_xml.DomainSpec(
        name=f"baadal-kvm-probe-{uuid.uuid4().hex[:8]}",
        uuid=str(uuid.uuid4()),
        memory_mb=128,
        vcpus=1,
        disks=[],
        domain_type="kvm",
        kernel=kernel,
        initrd=initrd,
        cmdline="console=ttyS0",
        serial_log=str(log_file),
    )
    dom = conn.createXML(domain_xml.build_domain_xml(spec, allow_diskless=True), 0)
    try:
        deadline = time.monotonic() + PROBE_TIMEOUT_S
        while time.monotonic() < deadline:
            if log_file.exists() and PROBE_MARKER in log_file.read_text(errors="replace"):
                return True
            time.sleep(0.5)
        return False
    finally:
        dom.destroy()
        log_file.unlink(missing_ok=True)


def domain_type(
    conn: libvirt.virConnect, uri: str, kernel: Path | None, initrd: Path | None
) -> str:
    """'kvm' or 'qemu' for the host ``conn`` reaches at ``uri``; ``kernel``/``initrd`` boot
    the probe. Only the libvirt driver calls this, with its own connection."""
    with _lock:
        if uri not in _cache:
            _cache[uri] = _decide(conn, kernel, initrd)
        return _cache[uri]


def _decide(conn: libvirt.virConnect, kernel: Path | None, initrd: Path | None) -> str:
    if not advertises_kvm(conn) or kernel is None or not kernel.is_file():
        return "qemu"
    try:
        ok = boot_probe(conn, str(kernel), str(initrd) if initrd else None, kernel.parent)
    except libvirt.libvirtError:
        ok = False
    return "kvm" if ok else "qemu"
