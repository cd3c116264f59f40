"""Security domains: each owns one VLAN and that VLAN's private IP pool (manage_security_domain).

VMs in one domain share a VLAN and reach each other; different domains are different
VLANs, and the NAT box does not route between them, so they cannot.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from baadal import constants as C
from baadal import pools
from baadal.db.models import VM, PrivateIpPool, SecurityDomain, Vlan
from baadal.errors import ConflictError, NotFoundError
from baadal.net import validators as V

DOMAIN_NAME_MAX = 30


@dataclass(frozen=True)
class DomainSummary:
    name: str
    vlan_name: str
    vlan_tag: int
    network: str
    pool_size: int
    pool_used: int
    vms: int
    visible_to_all: bool


def get_security_domain(session: Session, name_or_id: str | int) -> SecurityDomain:
    text = str(name_or_id)
    domain = session.get(SecurityDomain, int(text)) if text.isdigit() else None
    if domain is None:
        domain = session.scalar(select(SecurityDomain).where(SecurityDomain.name == text))
    if domain is None:
        raise NotFoundError(f"no security domain named {text!r}")
    return domain


def add_security_domain(
    session: Session,
    name: str,
    *,
    vlan_tag: int,
    cidr: str,
    ip_from: str | None = None,
    ip_to: str | None = None,
    visible_to_all: bool = True,
) -> SecurityDomain:
    """A domain with its own new VLAN and (optionally) a private pool, all or nothing.

    Every check (name, VLAN id, overlapping networks, range inside the network) is made
    by the pool layer before anything is written; the caller's transaction makes the
    three rows land together.
    """
    V.check_safe_name(name, "security domain name", DOMAIN_NAME_MAX)
    if session.scalar(select(SecurityDomain.id).where(SecurityDomain.name == name)):
        raise ConflictError(f"security domain {name!r} already exists")
    if (ip_from is None) != (ip_to is None):
        raise ConflictError("give both ends of the private IP range, or neither")
    vlan = pools.create_vlan(session, f"{name}-vlan{vlan_tag}"[:30], vlan_tag, cidr)
    if ip_from is not None and ip_to is not None:
        pools.add_private_ips(session, vlan.id, ip_from, ip_to)
    domain = SecurityDomain(name=name, vlan_id=vlan.id, visible_to_all=visible_to_all)
    session.add(domain)
    session.flush()
    return domain


def remove_security_domain(session: Session, name_or_id: str | int) -> None:
    """Remove a domain, its VLAN and its free pool; refused while any VM uses it."""
    domain = get_security_domain(session, name_or_id)
    users = session.scalar(
        select(func.count()).select_from(VM).where(VM.security_domain_id == domain.id)
    )
    if users:
        raise ConflictError(f"security domain {domain.name!r} has {users} VM(s)")
    vlan = domain.vlan
    session.delete(domain)
    session.flush()
    addresses = session.scalars(
        select(PrivateIpPool.private_ip).where(PrivateIpPool.vlan_id == vlan.id)
    ).all()
    if addresses:
        ordered = sorted(addresses, key=ipaddress.IPv4Address)
        # the pool layer refuses (and rolls back) when an address is still in use
        pools.remove_private_ips(session, ordered[0], ordered[-1])
    session.delete(vlan)
    session.flush()


def list_security_domains(session: Session) -> list[DomainSummary]:
    rows = []
    for domain in session.scalars(select(SecurityDomain).order_by(SecurityDomain.name)):
        vlan: Vlan = domain.vlan
        size = session.scalar(
            select(func.count()).select_from(PrivateIpPool).where(PrivateIpPool.vlan_id == vlan.id)
        )
        used = session.scalar(
            select(func.count())
            .select_from(VM)
            .join(PrivateIpPool, PrivateIpPool.id == VM.private_ip_id)
            .where(PrivateIpPool.vlan_id == vlan.id)
        )
        vms = session.scalar(
            select(func.count()).select_from(VM).where(VM.security_domain_id == domain.id)
        )
        rows.append(
            DomainSummary(
                domain.name,
                vlan.name,
                vlan.vlan_tag,
                vlan.vlan_addr,
                size or 0,
                used or 0,
                vms or 0,
                domain.visible_to_all,
            )
        )
    return rows


def check_domain_change(session: Session, vm: VM, domain: SecurityDomain) -> None:
    """A move must go somewhere else and have a free address there before it is queued."""
    if vm.security_domain_id == domain.id:
        raise ConflictError(f"{vm.vm_name} is already in security domain {domain.name!r}")
    if vm.status in (C.VMStatus.IN_QUEUE, C.VMStatus.UNKNOWN):
        raise ConflictError(f"{vm.vm_name} is not installed")
    if vm.status == C.VMStatus.SUSPENDED:
        raise ConflictError(f"{vm.vm_name} is paused: resume or stop it before moving it")
    free = pools.free_private_count(session, domain.vlan_id)
    if not free:
        raise ConflictError(f"no free private IP left in security domain {domain.name!r}")
