"""What a new or changed VM must meet, shared by the VM service and the request workflow
(not service functions: their callers are, and have checked the policy first)."""

from __future__ import annotations

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from baadal import address_pools
from baadal import constants as C
from baadal.config import Settings
from baadal.db.models import VM, SecurityDomain, Template, User
from baadal.errors import ConflictError, NotFoundError, ValidationError
from baadal.net.validators import check_identity, check_no_control, check_safe_name
from baadal.services import lookup
from baadal.services.policy import Action, Actor, require
from baadal.vm import storage


def vm_identity(owner: User, vm_name: str) -> str:
    """<organisation>~<owner username>~<vm name>: the libvirt domain name, and the name of
    the VM's files. No part may hold the separator, so two owners' VMs never share one
    (VMs made before kept their '_'-joined identities: their domains and disks have them)."""
    org = owner.organisation.name if owner.organisation else "NOORG"
    parts = [
        check_safe_name(org, "organisation name", C.VM_NAME_MAX),
        check_safe_name(owner.username, "username", C.VM_NAME_MAX),
        check_safe_name(vm_name, "VM name", C.VM_NAME_MAX),
    ]
    return check_identity(C.IDENTITY_SEPARATOR.join(parts), "VM identity", C.VM_NAME_MAX)


def template_for(session: Session, actor: Actor, settings: Settings, ref: str | int) -> Template:
    template = lookup.template(session, ref)
    require(session, actor, Action.TEMPLATE_LIST, template, f"template {template.name}")
    if not template.is_active:
        raise NotFoundError(f"template {template.name!r} is not active")
    if not storage.template_path(settings, template).is_file():
        raise NotFoundError(f"template {template.name}: image file is missing on the datastore")
    return template


def security_domain_for(session: Session, actor: Actor, name: str | None) -> SecurityDomain | None:
    if name is None:
        return None
    domain = lookup.security_domain(session, name)
    require(session, actor, Action.NETWORK_LIST, domain, f"security domain {domain.name}")
    return domain


def new_vm_domain(
    session: Session, actor: Actor, settings: Settings, name: str | None, network: bool
) -> SecurityDomain | None:
    """The security domain of a new VM: the one asked for, else the settings' default.
    A VM without one gets no private IP, MAC or DHCP entry (and a public IP maps to
    nothing), so that happens only when ``network`` is False, never by omission."""
    if not network:
        if name is not None:
            raise ValidationError("a VM without a network cannot have a security domain")
        return None
    if name is not None:
        return security_domain_for(session, actor, name)
    default = settings.network.default_security_domain
    if not default:
        raise ValidationError(
            "no security domain given and no default set ([network] default_security_domain):"
            " name a security domain, or ask for a VM without a network"
        )
    try:
        return security_domain_for(session, actor, default)
    except NotFoundError:
        raise NotFoundError(
            f"the default security domain {default!r} ([network] default_security_domain)"
            " does not exist"
        ) from None


def check_purpose(purpose: str | None) -> str | None:
    """The request's free text: printable and as long as its column."""
    if not purpose:
        return None
    if not isinstance(purpose, str) or len(purpose) > C.VM_PURPOSE_MAX:
        raise ValidationError(f"purpose must be text of at most {C.VM_PURPOSE_MAX} characters")
    return check_no_control(purpose, "purpose")


def name_taken(session: Session, owner: User, vm_name: str, identity: str) -> bool:
    """By owner and name, not only by identity: an older VM of this owner has the older
    '_'-joined identity, and the name is still theirs."""
    return (
        session.scalar(
            select(VM.id).where(
                or_(
                    VM.vm_identity == identity,
                    and_(VM.owner_id == owner.id, VM.vm_name == vm_name),
                )
            )
        )
        is not None
    )


def check_name_free(session: Session, owner: User, vm_name: str) -> str:
    identity = vm_identity(owner, vm_name)
    if name_taken(session, owner, vm_name, identity):
        raise ConflictError(f"{owner.username} already has a VM named {vm_name!r}")
    return identity


def require_installed(vm: VM) -> None:
    if vm.status in (C.VMStatus.IN_QUEUE, C.VMStatus.UNKNOWN) or vm.host_id is None:
        raise ConflictError(f"VM {vm.vm_name} is not installed")


def check_domain_change(session: Session, vm: VM, domain: SecurityDomain) -> None:
    """A move must go somewhere else and have a free address there before it is queued."""
    if vm.security_domain_id == domain.id:
        raise ConflictError(f"{vm.vm_name} is already in security domain {domain.name!r}")
    if vm.status == C.VMStatus.SUSPENDED:
        raise ConflictError(f"{vm.vm_name} is paused: resume or stop it before moving it")
    if not address_pools.free_private_count(session, domain.vlan_id):
        raise ConflictError(f"no free private IP left in security domain {domain.name!r}")
