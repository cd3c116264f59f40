"""KVM is decided by booting, not by what libvirt advertises (lab-notes.md)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import libvirt
import pytest

from baadal.drivers import hypervisor_for, kvm_probe
from baadal.lab.guest import build_tiny_guest
from tests.support.libvirtd import ensure_libvirtd, qemu_workdir

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_boot_probe_decides_the_domain_type() -> None:
    uri = ensure_libvirtd()
    with qemu_workdir() as root:
        guest = build_tiny_guest(root / "g", cache_dir=Path("/var/cache/baadal-test/tiny-guest"))
        conn = libvirt.open(uri)
        advertised = kvm_probe.advertises_kvm(conn)
        conn.close()
        kvm_probe._cache.pop(uri, None)
        hv = hypervisor_for(uri)
        started = time.monotonic()
        kind = hv.domain_type(guest.kernel, guest.initrd)
        took = time.monotonic() - started
    assert kind in ("kvm", "qemu")
    if not advertised or not os.access("/dev/kvm", os.R_OK | os.W_OK):
        assert kind == "qemu" and took < 5  # no probe boot when KVM is not even offered
    # on the project's machines KVM is offered but hangs after the BIOS: the probe says so
    if advertised and kind == "qemu":
        assert took >= kvm_probe.PROBE_TIMEOUT_S - 1
    assert hv.domain_type() == kind  # cached per host
