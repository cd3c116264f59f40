"""The libvirt driver contract on the test driver: states, errors, reconnection."""

from __future__ import annotations

from pathlib import Path

import pytest

from baadal import constants as C
from baadal.drivers import domain_xml as dx
from baadal.drivers import libvirt_driver
from baadal.drivers.base import DomainNotFound, HypervisorError
from baadal.drivers.libvirt_driver import LibvirtHypervisor
from tests.support.cloud import fake_host_uri

pytestmark = pytest.mark.unit


def define_vm(hv: LibvirtHypervisor, name: str = "vm1") -> None:
    spec = dx.DomainSpec(
        name=name,
        uuid="0e0e0e0e-0000-4000-8000-000000000021",
        memory_mb=128,
        vcpus=1,
        disks=[dx.DiskSpec("/x.qcow2")],
    )
    hv.define(dx.build_domain_xml(spec))


def test_states_and_missing_domains(tmp_path: Path) -> None:
    hv = LibvirtHypervisor(fake_host_uri(tmp_path, "h"))
    define_vm(hv)
    assert hv.domain_info("vm1").status == C.VMStatus.SHUTDOWN
    hv.start("vm1")
    hv.suspend("vm1")
    assert hv.domain_info("vm1").status == C.VMStatus.SUSPENDED
    with pytest.raises(HypervisorError, match="suspend vm1"):
        hv.suspend("vm1")
    hv.undefine("vm1")
    assert not hv.is_defined("vm1")
    with pytest.raises(DomainNotFound, match="no such domain"):
        hv.start("vm1")


def test_reconnects_after_the_connection_dies(tmp_path: Path) -> None:
    hv = LibvirtHypervisor(fake_host_uri(tmp_path, "h"))
    cpus = hv.node_info().cpus
    libvirt_driver._connections[hv.uri].close()  # libvirtd restarted / link dropped
    assert hv.node_info().cpus == cpus
    hv.close()
    assert hv.uri not in libvirt_driver._connections


def test_unreachable_host_is_a_clear_error() -> None:
    hv = LibvirtHypervisor("qemu+tcp://127.0.0.1:1/system")
    with pytest.raises(HypervisorError, match=r"cannot connect to qemu\+tcp://127\.0\.0\.1:1"):
        hv.list_domains()
