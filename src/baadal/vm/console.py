"""VNC console passwords: a fresh one per grant, set live on the running console, and
another (told to nobody) when the last grant ends, so a handed-out password works only
while its grant lasts. Passwords are never stored: a domain is defined with a random one
nobody learns, and a grant's is handed to its holder once.

Grants and expiry hold :func:`console_lock` around deciding and changing a password, so an
expiry never replaces the password of a grant made meanwhile.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections.abc import Iterator

from sqlalchemy import Engine

from baadal import constants as C
from baadal.config import Settings
from baadal.db.session import session_scope
from baadal.drivers import domain_xml
from baadal.drivers.base import DomainNotFound, Hypervisor
from baadal.errors import ConflictError
from baadal.filelock import flocked
from baadal.vm.common import find_placed_vm, load_vm, placed_hypervisor, vm_hypervisor

log = logging.getLogger("baadal")

#: VNC authentication uses at most 8 characters of a password
VNC_PASSWORD_LENGTH = 8


def new_password() -> str:
    """A random VNC password of the full length VNC uses."""
    return secrets.token_urlsafe(VNC_PASSWORD_LENGTH)[:VNC_PASSWORD_LENGTH]


@contextlib.contextmanager
def console_lock(settings: Settings) -> Iterator[None]:
    """Serialises password changes of grants and expiries across processes (they all run
    on the controller); not re-entrant."""
    settings.home.mkdir(parents=True, exist_ok=True)
    with flocked(settings.home / "console.lock"):
        yield


def set_new_password(engine: Engine, vm_id: int) -> str:
    """Give the VM's running console a fresh password and return it (to hand out once)."""
    with session_scope(engine) as session:
        vm = load_vm(session, vm_id)
        if vm.vm_identity is None:
            raise ConflictError(f"VM {vm.vm_name} has no domain (no VNC console)")
        hv, identity = vm_hypervisor(vm), vm.vm_identity
    password = new_password()
    hv.set_vnc_password(identity, password)
    return password


def forget_password(engine: Engine, vm_id: int, *, definition: bool = False) -> bool:
    """Replace the console's password with one nobody knows (its last grant ended); with
    ``definition`` the one the domain starts with too (a snapshot revert brings back the
    password of its day, perhaps an old grant's). A VM that is gone, placed nowhere, on
    a host that is not UP, or not running has no live password to replace: False.
    Errors reaching an UP host propagate, so the caller keeps the grant and retries."""
    with session_scope(engine, read=True) as session:
        vm = find_placed_vm(session, vm_id)
    if vm is None or vm.host_name is None or vm.vm_identity is None or vm.vnc_port is None:
        return False
    if vm.host_status not in (C.HostStatus.UP, C.HostStatus.MAINTENANCE):
        # its guests are fenced or unreachable, and start again with the definition's
        # password; waiting for the host would keep the grant (and the host) forever
        log.warning(
            "VNC password of VM %d not replaced: host %s is %s",
            vm_id,
            vm.host_name,
            C.HostStatus(vm.host_status).name,
        )
        return False
    return replace_password(placed_hypervisor(vm), vm.vm_identity, vm_id, definition=definition)


def replace_password(hv: Hypervisor, identity: str, vm_id: int, *, definition: bool) -> bool:
    """:func:`forget_password` on a domain whose host the caller has checked."""
    try:
        running = hv.domain_info(identity).active
        # a driver without a live console password (test:///) sets a running domain's
        # in its definition: then the live change below replaces both
        if definition and (hv.capabilities.live_console_password or not running):
            persistent = hv.xml(identity, inactive=True, secure=True)
            hv.define(domain_xml.set_vnc_password(persistent, new_password()))
        if not running:
            return False  # it starts again with its definition's password, told to nobody
        hv.set_vnc_password(identity, new_password())
    except DomainNotFound:
        return False
    log.info("VNC password of VM %d replaced", vm_id)
    return True
