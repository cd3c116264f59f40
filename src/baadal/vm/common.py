"""What every VM handler needs: the VM row, its host's hypervisor, the event log."""

from __future__ import annotations

from sqlalchemy.orm import Session

from baadal import constants as C
from baadal.db.models import VM, Host, VMEventLog
from baadal.drivers import hypervisor_for
from baadal.drivers.base import Hypervisor
from baadal.errors import ConflictError, NotFoundError


def load_vm(session: Session, vm_id: int | None) -> VM:
    vm = session.get(VM, vm_id) if vm_id is not None else None
    if vm is None:
        raise NotFoundError(f"no VM with id {vm_id}")
    return vm


def host_hypervisor(host: Host | None, vm_name: str = "") -> Hypervisor:
    """The hypervisor of an UP host; a clear error when there is none."""
    if host is None:
        raise ConflictError(f"VM {vm_name} is not placed on any host")
    if host.status != C.HostStatus.UP:
        raise ConflictError(f"host {host.host_name} is {C.HostStatus(host.status).name}")
    return hypervisor_for(host)


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
