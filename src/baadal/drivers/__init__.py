"""Hypervisor drivers. :func:`hypervisor_for` picks one from a libvirt URI.

Drivers take plain values (URIs, XML, names), never database rows: everything that talks
to another machine sits here, below the code that reads the database.
"""

from __future__ import annotations

from baadal.drivers.base import Hypervisor
from baadal.drivers.fake import FakeHypervisor, is_fake_uri
from baadal.drivers.uri import require_openable


def hypervisor_for(uri: str) -> Hypervisor:
    """``fake:///<node>`` is the in-memory driver; any other URI goes to libvirt (imported
    lazily: code that only needs the contract does not load libvirt). A URI the host checks
    refuse (drivers/uri.py) is refused here too."""
    require_openable(uri)
    if is_fake_uri(uri):
        return FakeHypervisor(uri)
    from baadal.drivers.libvirt_driver import LibvirtHypervisor

    return LibvirtHypervisor(uri)
