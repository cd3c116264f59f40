"""Hypervisor drivers. :func:`hypervisor_for` picks one from a host row's libvirt URI."""

from __future__ import annotations

from baadal.db.models import Host
from baadal.drivers.base import Hypervisor


def hypervisor_for(host: Host) -> Hypervisor:
    from baadal.drivers.libvirt_driver import LibvirtHypervisor

    return LibvirtHypervisor(host.libvirt_uri)
