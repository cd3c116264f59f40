"""A local libvirtd + virtlogd for tests and benchmarks (no systemd: started by hand).

``ensure_libvirtd()`` is idempotent and safe to call from several processes at once. It
first gives /dev/kvm to group kvm with mode 0660: with 0600 root:root libvirt throws its
QEMU capability cache away on every use (libvirtd start 12-16 s, ``virsh start`` 4.5 s;
with the fix 0.2 s and 0.6 s, lab-notes.md). KVM still does not work on these machines:
guests are ``type='qemu'`` (TCG). The daemons are left running for whoever comes next.

Guests of qemu:///system run as libvirt-qemu, which cannot enter pytest's 0700 tmp dirs:
``qemu_workdir()`` gives a directory it can reach, removed afterwards.
"""

from __future__ import annotations

import contextlib
import grp
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import libvirt

from baadal.filelock import flocked

URI = "qemu:///system"
START_TIMEOUT_S = 90.0
LOCK_FILE = Path("/run/baadal-test-libvirtd.lock")
SOCKET = Path("/run/libvirt/libvirt-sock")


def fix_kvm_permissions() -> bool:
    """chgrp kvm + chmod 0660 /dev/kvm (lab-notes P1); True if /dev/kvm is now so."""
    kvm = Path("/dev/kvm")
    if not kvm.exists():
        return False
    try:
        gid = grp.getgrnam("kvm").gr_gid
    except KeyError:
        return False
    st = kvm.stat()
    if st.st_gid == gid and st.st_mode & 0o777 == 0o660:
        return True
    if os.geteuid() != 0:
        return False
    os.chown(kvm, -1, gid)
    kvm.chmod(0o660)
    return True


def ensure_libvirtd(timeout: float = START_TIMEOUT_S) -> str:
    """Make sure virtlogd and libvirtd run and answer; returns the URI ``qemu:///system``."""
    if os.geteuid() != 0:
        raise RuntimeError("starting libvirtd for tests needs root")
    for daemon in ("virtlogd", "libvirtd"):
        if shutil.which(daemon) is None:
            raise RuntimeError(f"{daemon} not found: apt-get install libvirt-daemon-system")
    fix_kvm_permissions()
    with flocked(LOCK_FILE):
        if not _daemon_running("virtlogd"):
            _start("virtlogd")
        if not _daemon_running("libvirtd"):
            _start("libvirtd")
        _wait_until_answering(timeout)
    return URI


def remove_domain(conn: libvirt.virConnect, name: str) -> None:
    """Destroy (if running) and undefine a domain with its snapshot metadata; no error if gone."""
    # listing, not lookupByName: a failed lookup prints an error line on stderr
    found = [d for d in conn.listAllDomains() if d.name() == name]
    if not found:
        return
    dom = found[0]
    persistent = dom.isPersistent()
    with contextlib.suppress(libvirt.libvirtError):
        if dom.isActive():
            dom.destroy()  # a transient domain is gone after this
    if not persistent:
        return
    with contextlib.suppress(libvirt.libvirtError):
        dom.undefineFlags(
            libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
            | libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
            | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM
        )


def console_send(
    conn: libvirt.virConnect, dom: libvirt.virDomain, text: str, hold_s: float = 1.0
) -> None:
    """Type ``text`` on the domain's serial console (the tiny guest runs a shell there).

    The console stays open ``hold_s`` seconds: QEMU's pty drops what it has not read yet
    when the other side closes at once. Output lands in the console log file; wait for it
    with ``baadal.lab.console_line`` using a marker the echoed command itself lacks.
    """
    stream = conn.newStream(0)
    dom.openConsole(None, stream, libvirt.VIR_DOMAIN_CONSOLE_FORCE)
    try:
        data = text.encode()
        while data:
            sent = stream.send(data)
            data = data[sent:]
        time.sleep(hold_s)
    finally:
        with contextlib.suppress(libvirt.libvirtError):
            stream.abort()


@contextlib.contextmanager
def qemu_workdir(prefix: str = "baadal-test-") -> Iterator[Path]:
    """A fresh directory the libvirt-qemu user can enter (mode 0755), removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/var/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _daemon_running(name: str) -> bool:
    """True if ``/run/<name>.pid`` names a live process called ``name``."""
    try:
        pid = int(Path(f"/run/{name}.pid").read_text().strip())
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except (FileNotFoundError, ValueError, ProcessLookupError):
        return False
    return comm == name[:15]


def _start(name: str) -> None:
    # -d: the parent returns once the daemon is initialised (or has failed)
    result = subprocess.run([name, "-d"], capture_output=True, text=True, timeout=120)
    if result.returncode != 0 and not _daemon_running(name):
        raise RuntimeError(f"{name} -d failed: {result.stderr.strip()}")


def _wait_until_answering(timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last = "socket not there yet"
    while time.monotonic() < deadline:
        if SOCKET.exists():
            try:
                conn = libvirt.open(URI)
            except libvirt.libvirtError as exc:
                last = str(exc)
            else:
                conn.close()
                return
        time.sleep(0.2)
    raise RuntimeError(f"libvirtd did not answer on {URI} within {timeout:.0f} s: {last}")
