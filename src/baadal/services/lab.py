"""The lab for the doors: a whole cloud on this machine (up, down, status), the tiny guest
template and the demo's proof that a VM answers (thin, guarded wrappers over
:mod:`baadal.lab`)."""

from __future__ import annotations

import time
from collections.abc import Callable

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from baadal.config import Settings
from baadal.db.models import Template
from baadal.db.session import session_scope
from baadal.errors import ConflictError
from baadal.home import TINY_GUEST_ENTRY, open_for_lab
from baadal.lab import layout, topology
from baadal.lab.guest import TinyGuest, build_tiny_guest
from baadal.lab.topology import Part, UpResult
from baadal.net.ping import is_pingable
from baadal.services import inventory, lookup
from baadal.services.policy import Action, Actor, guarded

#: the lab's compute hosts (name, libvirt URI, ...), its first security domain and template
HOSTS = layout.HOSTS
FIRST_DOMAIN = layout.VLANS[0].domain
TEMPLATE_NAME = layout.TEMPLATE_NAME


@guarded(Action.SYSTEM_MANAGE)
def build_guest(settings: Settings, actor: Actor, *, force: bool = False) -> TinyGuest:
    """Build (or reuse) the tiny bootable guest (Debian kernel + busybox) in the home,
    where the hosts' QEMU must reach its kernel (the KVM probe boots it)."""
    guest = build_tiny_guest(settings.home / TINY_GUEST_ENTRY, force=force)
    open_for_lab(settings.home)
    return guest


@guarded(Action.SYSTEM_MANAGE)
def add_guest_template(
    session: Session,
    actor: Actor,
    settings: Settings,
    *,
    datastore: str | int,
    name: str = TEMPLATE_NAME,
    force: bool = False,
) -> Template:
    """Put the tiny guest on the datastore and register it as template ``name``."""
    ds = lookup.datastore(session, datastore)
    guest = build_tiny_guest(
        inventory.templates_dir(settings, ds) / layout.TEMPLATE_DIR, force=force
    )
    return inventory.add_template(
        session,
        actor,
        name=name,
        datastore=ds.id,
        hdfile=f"{layout.TEMPLATE_DIR}/tiny-disk.qcow2",
        os_version=guest.kernel_version,
        hdd_gb=1,
        os_name="Others",
        boot_kernel=f"{layout.TEMPLATE_DIR}/vmlinuz",
        boot_initrd=f"{layout.TEMPLATE_DIR}/tiny-initrd.gz",
        boot_cmdline=guest.cmdline,
        settings=settings,
    )


@guarded(Action.SYSTEM_MANAGE)
def up(
    engine: Engine,
    actor: Actor,
    settings: Settings,
    *,
    progress: Callable[[str], None] | None = None,
) -> UpResult:
    """Build the lab (idempotent; after a crash it cleans up first) and register it."""
    return topology.up(settings, lambda: session_scope(engine), progress=progress)


@guarded(Action.SYSTEM_MANAGE)
def down(engine: Engine, actor: Actor, settings: Settings) -> list[str]:
    """Remove every namespace, process, link, bridge and file the lab made."""
    return topology.down(settings, db=lambda: session_scope(engine))


@guarded(Action.SYSTEM_MANAGE, reads=True)
def status(settings: Settings, actor: Actor) -> tuple[list[Part], bool]:
    """Each part of the lab, and whether all are healthy."""
    parts = topology.status(settings)
    return parts, topology.healthy(parts)


@guarded(Action.SYSTEM_MANAGE, reads=True)
def wait_for_ping(engine: Engine, actor: Actor, vm: str | int, timeout_s: float) -> bool:
    """True once the VM answers ping on its private address, False after ``timeout_s``
    (the demo's proof that DHCP and the network work)."""
    with session_scope(engine) as session:
        row = lookup.vm(session, vm)
        if row.private_ip is None:
            raise ConflictError(f"VM {row.vm_name} has no private address")
        ip = row.private_ip.private_ip
    deadline = time.monotonic() + timeout_s
    while not is_pingable(ip, count=1, timeout_s=1.0):
        if time.monotonic() > deadline:
            return False
    return True
