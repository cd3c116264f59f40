"""What a host's libvirt holds (the seed's host_vms get_host_domains, has_running_vm and
delete_orphan_vm): read straight from the host, never from the database."""

from __future__ import annotations

from sqlalchemy import Engine, select

from baadal.db.models import VM, Host
from baadal.db.session import session_scope
from baadal.drivers import hypervisor_for
from baadal.drivers.base import DomainInfo, DomainNotFound
from baadal.errors import ConflictError, NotFoundError


def get_host_domains(host: Host) -> list[DomainInfo]:
    """Every domain defined or running on the host (read only)."""
    return hypervisor_for(host.libvirt_uri).list_domains()


def has_running_vm(host: Host) -> bool:
    """True if any domain is active; a paused one still holds the host's memory."""
    return any(domain.active for domain in get_host_domains(host))


def delete_orphan_vm(engine: Engine, host_id: int, vm_name: str) -> None:
    """Power off and undefine a domain Baadal does not know; its disk files are kept."""
    with session_scope(engine) as session:
        host = session.get(Host, host_id)
        if host is None:
            raise NotFoundError(f"no host with id {host_id}")
        if session.scalar(select(VM.id).where(VM.vm_identity == vm_name)) is not None:
            raise ConflictError(f"{vm_name} belongs to a Baadal VM: it is not an orphan")
        hv, host_name = hypervisor_for(host.libvirt_uri), host.host_name
    try:
        hv.undefine(vm_name)  # destroys it first when it runs
    except DomainNotFound:
        raise NotFoundError(f"host {host_name} has no domain {vm_name}") from None
