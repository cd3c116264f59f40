"""Security domains: each owns one VLAN and that VLAN's private IP pool (manage_security_domain).

VMs in one domain share a VLAN and reach each other; different domains are different
VLANs, and the NAT box does not route between them, so they cannot.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from baadal import address_pools
from baadal import constants as C
from baadal.config import Settings
from baadal.db.models import VM, PrivateIpPool, SecurityDomain, Vlan
from baadal.db.session import session_scope
from baadal.errors import ConflictError
from baadal.net import dhcp, nat_box
from baadal.net import validators as V
from baadal.services import lookup
from baadal.services.policy import Action, Actor, guarded, require, security_domain_filter
from baadal.services.rows import Page, keyset
from baadal.vm import nat as vm_nat
from baadal.vm.common import network_lock
from baadal.vm.network import dhcp_entries_from_db

DOMAIN_NAME_MAX = C.SECURITY_DOMAIN_NAME_MAX


@dataclass(frozen=True)
class DomainSummary:
    id: int
    name: str
    vlan_name: str
    vlan_tag: int
    network: str
    pool_size: int
    pool_used: int
    vms: int
    visible_to_all: bool


@guarded(Action.NETWORK_MANAGE)
def add_security_domain(
    session: Session,
    actor: Actor,
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
    vlan = address_pools.create_vlan(session, f"{name}-vlan{vlan_tag}"[:30], vlan_tag, cidr)
    if ip_from is not None and ip_to is not None:
        address_pools.add_private_ips(session, vlan.id, ip_from, ip_to)
    domain = SecurityDomain(name=name, vlan_id=vlan.id, visible_to_all=visible_to_all)
    session.add(domain)
    session.flush()
    return domain


@guarded(Action.NETWORK_MANAGE)
def remove_security_domain(session: Session, actor: Actor, name_or_id: str | int) -> None:
    """Remove a domain, its VLAN and its free pool; refused while any VM uses it."""
    domain = lookup.security_domain(session, name_or_id)
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
        address_pools.remove_private_ips(session, ordered[0], ordered[-1])
    session.delete(vlan)
    session.flush()


@guarded(Action.NETWORK_LIST)
def list_security_domains(
    session: Session, actor: Actor, *, after: int | None = None, limit: int | None = None
) -> Page[DomainSummary]:
    """The domains the actor may put VMs in, with their pool usage, by id: one query a
    page (no limit: all of them)."""
    require(session, actor, Action.NETWORK_LIST)
    size = (
        select(func.count())
        .select_from(PrivateIpPool)
        .where(PrivateIpPool.vlan_id == Vlan.id)
        .scalar_subquery()
    )
    used = (
        select(func.count())
        .select_from(VM)
        .join(PrivateIpPool, PrivateIpPool.id == VM.private_ip_id)
        .where(PrivateIpPool.vlan_id == Vlan.id)
        .scalar_subquery()
    )
    vms = (
        select(func.count())
        .select_from(VM)
        .where(VM.security_domain_id == SecurityDomain.id)
        .scalar_subquery()
    )
    query = (
        select(
            SecurityDomain.id,
            SecurityDomain.name,
            Vlan.name,
            Vlan.vlan_tag,
            Vlan.vlan_addr,
            size,
            used,
            vms,
            SecurityDomain.visible_to_all,
        )
        .join(Vlan, Vlan.id == SecurityDomain.vlan_id)
        .where(security_domain_filter(actor))
    )
    rows = [
        DomainSummary(*row)
        for row in session.execute(keyset(query, SecurityDomain.id, after, limit))
    ]
    return Page.of(rows, limit, lambda d: d.id)


# --- DHCP reservations and NAT mappings ---------------------------------------------


@guarded(Action.NETWORK_MANAGE, reads=True)
def dhcp_entries(actor: Actor, settings: Settings) -> list[dhcp.DhcpEntry]:
    """The reservations in the DHCP server's file."""
    return dhcp.read_dhcp_entries(settings)


@guarded(Action.NETWORK_MANAGE)
def rebuild_dhcp(engine: Engine, actor: Actor, settings: Settings) -> int:
    """Rewrite the reservations from the database (after the file was lost). The rows
    are read in a short transaction of their own: the file write and the server's
    reload may take seconds, and on SQLite an open transaction blocks every writer."""
    with network_lock(settings):
        entries = []
        if dhcp.managed(settings):
            with session_scope(engine) as session:
                entries = dhcp_entries_from_db(session)
        return dhcp.rebuild_dhcp_entries(settings, entries)


@guarded(Action.NETWORK_MANAGE, reads=True)
def nat_rules(actor: Actor, settings: Settings) -> list[str]:
    """The rules Baadal made on the NAT box."""
    return list(nat_box.baadal_rules(settings))


@guarded(Action.NETWORK_MANAGE)
def reapply_nat(engine: Engine, actor: Actor, settings: Settings) -> int:
    """Re-create every mapping from the database (after a NAT box reboot); mappings no
    VM holds go."""
    with network_lock(settings):
        return vm_nat.reapply_nat_mappings(engine, settings)


@guarded(Action.NETWORK_MANAGE)
def clear_nat(engine: Engine, actor: Actor, settings: Settings) -> int:
    """Remove every Baadal mapping from the NAT box (the database keeps them)."""
    return vm_nat.clear_all_nat_mappings(engine, settings)
