"""IP pools for the doors: VLANs, private and public addresses an admin fills and drains,
and how full they are (thin, guarded wrappers over :mod:`baadal.address_pools`)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.orm import Session

from baadal import address_pools as ip_pools
from baadal.address_pools import PoolUsage, VlanUsage
from baadal.db.models import Vlan
from baadal.services.policy import Action, Actor, guarded
from baadal.services.rows import Page, keyset


@guarded(Action.NETWORK_MANAGE)
def add_vlan(session: Session, actor: Actor, name: str, tag: int, cidr: str) -> Vlan:
    """A VLAN whose network overlaps no other VLAN's."""
    return ip_pools.create_vlan(session, name, tag, cidr)


@guarded(Action.NETWORK_MANAGE)
def add_private_ips(
    session: Session,
    actor: Actor,
    vlan: str,
    ip_from: str,
    ip_to: str,
    macs: Sequence[str] | None = None,
) -> int:
    """Private addresses (each with a MAC, generated unless given) for the VLAN named
    ``vlan``: all of them or none. Returns how many."""
    target = ip_pools.get_vlan_by_name(session, vlan)
    return ip_pools.add_private_ips(
        session, target.id, ip_from, ip_to, list(macs) if macs else None
    )


@guarded(Action.NETWORK_MANAGE)
def add_public_ips(session: Session, actor: Actor, ip_from: str, ip_to: str) -> int:
    return ip_pools.add_public_ips(session, ip_from, ip_to)


@guarded(Action.NETWORK_MANAGE)
def remove_private_ips(session: Session, actor: Actor, ip_from: str, ip_to: str) -> int:
    """Refused if any address of the range is in use."""
    return ip_pools.remove_private_ips(session, ip_from, ip_to)


@guarded(Action.NETWORK_MANAGE)
def remove_public_ips(session: Session, actor: Actor, ip_from: str, ip_to: str) -> int:
    """Refused if any address of the range is in use."""
    return ip_pools.remove_public_ips(session, ip_from, ip_to)


@guarded(Action.NETWORK_MANAGE, reads=True)
def usage(session: Session, actor: Actor) -> PoolUsage:
    """Public addresses and VNC ports: total, used, free."""
    return ip_pools.pool_usage(session)


@guarded(Action.NETWORK_MANAGE, reads=True)
def list_vlans(
    session: Session, actor: Actor, *, after: int | None = None, limit: int | None = None
) -> Page[VlanUsage]:
    """VLANs by id with their private addresses (total, used, free): one query a page
    (no limit: all of them)."""
    query = keyset(ip_pools.vlan_usage(), Vlan.id, after, limit)
    return Page.of([VlanUsage(*row) for row in session.execute(query)], limit, lambda v: v.id)
