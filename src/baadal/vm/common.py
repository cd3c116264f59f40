"""What every VM handler needs: the VM row, its host's hypervisor, the event log, a
graceful stop."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

from sqlalchemy.orm import Session
from sqlalchemy.orm.interfaces import ORMOption

from baadal import constants as C
from baadal.config import Settings
from baadal.db.models import VM, Host, VMEventLog
from baadal.drivers import hypervisor_for
from baadal.drivers.base import Hypervisor
from baadal.errors import ConflictError, NotFoundError
from baadal.filelock import flocked
from baadal.home import secure_home

STOP_POLL_S = 0.5


@contextlib.contextmanager
def network_lock(settings: Settings) -> Iterator[None]:
    """Held by a change of a VM's addresses from its database change to its last write on
    the DHCP server and the NAT box, and by a restore from its database read to its last
    write: so a restore never writes back a picture a concurrent change made stale (a
    deleted VM's NAT rule). Across processes (the workers run on the controller); not
    re-entrant."""
    secure_home(settings)
    with flocked(settings.home / "network.lock"):
        yield


def load_vm(session: Session, vm_id: int | None, *options: ORMOption) -> VM:
    """The VM (loaded with ``options``, e.g. its host joined), or NotFoundError."""
    vm = session.get(VM, vm_id, options=options) if vm_id is not None else None
    if vm is None:
        raise NotFoundError(f"no VM with id {vm_id}")
    return vm


def host_hypervisor(host: Host | None, vm_name: str = "") -> Hypervisor:
    """The hypervisor of an UP host (or one in maintenance: its VMs are still being
    stopped or moved away); a clear error when there is none."""
    if host is None:
        raise ConflictError(f"VM {vm_name} is not placed on any host")
    if host.status not in (C.HostStatus.UP, C.HostStatus.MAINTENANCE):
        raise ConflictError(f"host {host.host_name} is {C.HostStatus(host.status).name}")
    return hypervisor_for(host.libvirt_uri)


def vm_hypervisor(vm: VM) -> Hypervisor:
    return host_hypervisor(vm.host, vm.vm_name)


def log_vm_event(
    session: Session,
    vm: VM,
    attribute: str,
    old: object,
    new: object,
    requester_id: int | None = None,
) -> None:
    session.add(
        VMEventLog(
            vm_id=vm.id,
            vm_identity=vm.vm_identity,
            attribute=attribute,
            old_value=None if old is None else str(old)[:255],
            new_value=None if new is None else str(new)[:255],
            requester_id=requester_id,
        )
    )


def set_status(session: Session, vm: VM, status: C.VMStatus, requester_id: int | None) -> None:
    if vm.status != status:
        log_vm_event(session, vm, "status", C.VMStatus(vm.status).name, status.name, requester_id)
        vm.status = status


def graceful_stop(hv: Hypervisor, name: str, settings: Settings) -> None:
    """Ask the guest to shut down; force it off if it has not within stop_timeout_s.

    Upstream's 'Stop VM' was a hard power off; a user expects their OS to shut down.
    """
    if hv.domain_info(name).status == C.VMStatus.SUSPENDED:
        hv.destroy(name)
        return
    hv.shutdown(name)
    deadline = time.monotonic() + settings.vm.stop_timeout_s
    while time.monotonic() < deadline:
        if hv.domain_info(name).status == C.VMStatus.SHUTDOWN:
            return
        time.sleep(STOP_POLL_S)
    hv.destroy(name)
