"""Hypervisor drivers. :func:`hypervisor_for` picks one from a libvirt URI.

Drivers take plain values (URIs, XML, names), never database rows: everything that talks
to another machine sits here, below the code that reads the database.
"""

from __future__ import annotations

from baadal.drivers.base import Hypervisor
from baadal.drivers.uri import require_openable


def hypervisor_for(uri: str) -> Hypervisor:
    """``fake:///<node>`` is the in-memory driver; any other URI goes to libvirt. Both are
    imported here, at the first call: code that only checks a URI (``baadal host list``
    reads ``drivers.uri``) loads neither libvirt nor the domain XML code and lxml (20-35
    ms of a CLI process). A URI the host checks refuse (drivers/uri.py) is refused here."""
    require_openable(uri)
    from baadal.drivers.fake import FakeHypervisor, is_fake_uri

    if is_fake_uri(uri):
        return FakeHypervisor(uri)
    from baadal.drivers.libvirt_driver import LibvirtHypervisor

    return LibvirtHypervisor(uri)
