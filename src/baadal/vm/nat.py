"""The seed's nat_mapper, database side: which public IP and VNC console mappings the
database says each VM has, and the VNC grants' rules (expiry, following a moved VM). Who
may have a grant, how long and how often is the VM service's decision
(:func:`baadal.services.vms.grant_vnc_access`).

The database is read in short transactions and the NAT box (:mod:`baadal.net.nat_box`) is
programmed outside them, with plain mappings.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, replace
from datetime import datetime

from sqlalchemy import ColumnElement, Engine, Select, select, update
from sqlalchemy.orm import Session

from baadal.config import Settings
from baadal.db.models import VM, Host, PublicIpPool, VncAccess
from baadal.db.session import session_scope
from baadal.errors import BaadalError, ConflictError, NotFoundError, ResourceExhausted
from baadal.net.nat_box import Mapping, PublicIpMapping, VncMapping, clear_nat_box, nat_box
from baadal.timeutil import utcnow
from baadal.vm import console

log = logging.getLogger("baadal")

#: random public ports tried before looking at every active grant's
_PUBLIC_PORT_TRIES = 8
_rng = random.SystemRandom()

# --------------------------------------------------------------------------- per VM


def _public_mapping(engine: Engine, vm_id: int) -> PublicIpMapping | None:
    with session_scope(engine) as s:
        vm = _get_vm(s, vm_id)
        if vm.public_ip is None or vm.private_ip is None:
            return None
        return PublicIpMapping(vm.public_ip.public_ip, vm.private_ip.private_ip)


def _vnc_mapping(engine: Engine, vm_id: int, public_port: int) -> VncMapping:
    with session_scope(engine) as s:
        vm = _get_vm(s, vm_id)
        if vm.host is None or vm.vnc_port is None:
            raise ConflictError(f"VM {vm.vm_name} is not placed on a host (no VNC console)")
        return VncMapping(vm.id, public_port, vm.host.address, vm.vnc_port)


def public_vnc_port(session: Session, vm: VM, start: int, end: int) -> int:
    """The port on vnc_ip a new grant of the VM forwards: the one its active grants use,
    else its own VNC port unless another VM's active grant uses that (ports are unique
    per host only, the NAT box's are cloud-wide), else a free one of ``start``-``end``.
    Grants are made one at a time (the console lock), so checking is claiming."""
    own = _first(
        session,
        select(VncAccess.vnc_source_port).where(
            VncAccess.vm_id == vm.id, VncAccess.status == "active"
        ),
    )
    if own is not None:
        return own

    def free(port: int) -> bool:
        query = select(VncAccess.id).where(
            VncAccess.vnc_source_port == port,
            VncAccess.status == "active",
            VncAccess.vm_id != vm.id,
        )
        return _first(session, query) is None

    if vm.vnc_port is not None and free(vm.vnc_port):
        return vm.vnc_port
    for _ in range(_PUBLIC_PORT_TRIES):
        port = _rng.randint(start, end)
        if free(port):
            return port
    used = set(
        session.scalars(
            select(VncAccess.vnc_source_port).where(VncAccess.status == "active").distinct()
        )
    )
    port = next((p for p in range(start, end + 1) if p not in used), None)
    if port is None:
        raise ResourceExhausted(f"no free VNC port left on the NAT box in {start}-{end}")
    return port


def _first(session: Session, query: Select[tuple[int]]) -> int | None:
    return session.scalar(query.limit(1))


def _get_vm(session: Session, vm_id: int) -> VM:
    vm = session.get(VM, vm_id)
    if vm is None:
        raise NotFoundError(f"VM {vm_id} does not exist")
    return vm


def create_public_ip_mapping_in_nat(engine: Engine, settings: Settings, vm_id: int) -> int:
    """Map the VM's public IP to its private IP (call after the IPs are allocated)."""
    box = nat_box(settings)
    if box is None:
        return 0
    mapping = _public_mapping(engine, vm_id)
    return 0 if mapping is None else box.create(mapping)


def remove_public_ip_mapping_from_nat(engine: Engine, settings: Settings, vm_id: int) -> int:
    """Unmap the VM's public IP (call before the IPs are released)."""
    box = nat_box(settings)
    if box is None:
        return 0
    mapping = _public_mapping(engine, vm_id)
    return 0 if mapping is None else box.remove(mapping)


def create_vnc_mapping_in_nat(
    engine: Engine, settings: Settings, vm_id: int, public_port: int
) -> int:
    """Forward vnc_ip:<public_port> to the VM's console on its host."""
    box = nat_box(settings)
    return 0 if box is None else box.create(_vnc_mapping(engine, vm_id, public_port))


@dataclass(frozen=True)
class _Console:
    """Where a grant forwards to: plain values, so grants without a NAT box (whose hosts
    may be known by DNS name) never need a NAT mapping's IPv4 host address."""

    vm_id: int
    public_port: int
    host_address: str
    host_port: int

    @property
    def mapping(self) -> VncMapping:
        """The forwarding on the NAT box (software NAT only)."""
        return VncMapping(self.vm_id, self.public_port, self.host_address, self.host_port)


@dataclass(frozen=True)
class _Grant:
    """A vnc_access row and the console it opens."""

    id: int
    console: _Console
    expiry_time: datetime


def _grants(session: Session, *where: ColumnElement[bool]) -> list[_Grant]:
    rows = session.execute(
        select(VncAccess.id, VncAccess.vm_id, VncAccess.vnc_source_port, Host.address,
               VncAccess.vnc_destination_port, VncAccess.expiry_time)
        .join(Host, Host.id == VncAccess.host_id)
        .where(*where)
        .order_by(VncAccess.id)
    )  # fmt: skip
    return [_Grant(r[0], _Console(r[1], r[2], r[3], r[4]), r[5]) for r in rows]


def _granted_now(session: Session, now: datetime) -> list[_Console]:
    """The consoles active, unexpired grants open (each once, oldest grant first)."""
    active = _grants(session, VncAccess.status == "active", VncAccess.expiry_time > now)
    return list(dict.fromkeys(g.console for g in active))


def remove_vnc_mapping_from_nat(engine: Engine, settings: Settings, vm_id: int) -> int:
    """Revoke console access: remove the forwarding of the VM's current and granted
    placements (a grant keeps the host it was made for) and end its active grants."""
    box = nat_box(settings)
    with session_scope(engine) as s:
        vm = _get_vm(s, vm_id)
        active = _grants(s, VncAccess.vm_id == vm_id, VncAccess.status == "active")
        consoles = {g.console for g in active}
        if vm.host is not None and vm.vnc_port is not None:
            consoles.add(_Console(vm_id, vm.vnc_port, vm.host.address, vm.vnc_port))
    changed = 0 if box is None else sum(box.remove(c.mapping) for c in consoles)
    end_vnc_grants(engine, vm_id)
    return changed


def end_vnc_grants(engine: Engine, vm_id: int) -> None:
    """Mark the VM's active console grants ended (their rules are the caller's affair)."""
    with session_scope(engine) as s:
        s.execute(
            update(VncAccess)
            .where(VncAccess.vm_id == vm_id, VncAccess.status == "active")
            .values(status="inactive")
        )


def move_vnc_grants(engine: Engine, settings: Settings, vm_id: int) -> int:
    """After the VM changed hosts (migration, respawn): point its active console grants at
    where it runs now, keeping their public port and expiry, so an open console survives
    the move. The NAT box changes first and the rows after, so a failure leaves rows that
    still name every rule there is to revoke. Returns how many grants moved."""
    with session_scope(engine) as s:
        vm = _get_vm(s, vm_id)
        if vm.host is None or vm.vnc_port is None:
            return 0
        host_id, address, port = vm.host_id, vm.host.address, vm.vnc_port
        stale = _grants(
            s,
            VncAccess.vm_id == vm_id,
            VncAccess.status == "active",
            (VncAccess.host_id != host_id) | (VncAccess.vnc_destination_port != port),
        )
    if not stale:
        return 0
    new = {replace(g.console, host_address=address, host_port=port) for g in stale}
    box = nat_box(settings)
    if box is not None:
        for console in {g.console for g in stale} - new:
            box.remove(console.mapping)
        for console in new:
            box.create(console.mapping)
    with session_scope(engine) as s:
        moved = s.execute(
            update(VncAccess)
            .where(VncAccess.id.in_([g.id for g in stale]), VncAccess.status == "active")
            .values(host_id=host_id, vnc_destination_port=port)
        ).rowcount
        live = set(
            s.scalars(
                select(VncAccess.vnc_source_port).where(
                    VncAccess.vm_id == vm_id,
                    VncAccess.status == "active",
                    VncAccess.host_id == host_id,
                )
            )
        )
    if box is not None:
        for console in new:  # grants the expiry job ended meanwhile lose their rules
            if console.public_port not in live:
                box.remove(console.mapping)
    log.info("VNC grants of VM %d moved to %s: %d", vm_id, address, moved)
    return moved


# --------------------------------------------------------------------------- VNC grants


def clear_all_timedout_vnc_mappings(
    engine: Engine, settings: Settings, now: datetime | None = None
) -> int:
    """End every active grant whose expiry has passed: the forwarding goes unless another
    grant of the same VM, to the same host and port, is still running, and the console's
    password is replaced unless another grant of the VM still runs (its holder has the
    current one). A grant whose rule or password could not be changed stays active, to be
    retried. Returns how many grants ended. Holds the console lock: a grant made
    meanwhile waits, so its fresh password is never replaced here."""
    with console.console_lock(settings):
        return _end_timedout_grants(engine, settings, now or utcnow())


def _end_timedout_grants(engine: Engine, settings: Settings, now: datetime) -> int:
    box = nat_box(settings)
    with session_scope(engine) as s:
        active = _grants(s, VncAccess.status == "active")
    expired: dict[_Console, list[int]] = {}
    still_used: set[_Console] = set()
    for grant in active:
        if grant.expiry_time <= now:
            expired.setdefault(grant.console, []).append(grant.id)
        else:
            still_used.add(grant.console)
    vms_still_granted = {c.vm_id for c in still_used}
    ended: list[int] = []
    removed: list[_Console] = []
    replaced: set[int] = set()  # VMs whose console password is already replaced
    failure: BaadalError | None = None
    for target, ids in expired.items():
        try:
            if box is not None and target not in still_used:
                box.remove(target.mapping)
                removed.append(target)
            if target.vm_id not in vms_still_granted | replaced:
                console.forget_password(engine, target.vm_id)
                replaced.add(target.vm_id)
        except BaadalError as exc:  # other grants must still expire
            log.error("cannot revoke VNC access to VM %d: %s", target.vm_id, exc)
            failure = failure or exc
            continue
        ended += ids
    if ended:
        with session_scope(engine) as s:
            s.execute(
                update(VncAccess)
                .where(VncAccess.id.in_(ended), VncAccess.status == "active")
                .values(status="inactive")
            )
            # where the ended grants point now (a migration may have moved them meanwhile)
            now_pointing = {g.console for g in _grants(s, VncAccess.id.in_(ended))}
            # a grant made while the rules were going: it keeps its forwarding
            granted = set(_granted_now(s, now))
        if box is not None:
            for target in removed:
                if target in granted:
                    box.create(target.mapping)
            for target in now_pointing - set(removed) - granted:
                box.remove(target.mapping)
    if failure is not None:
        raise failure
    return len(ended)


# --------------------------------------------------------------------------- whole box


def clear_all_nat_mappings(engine: Engine, settings: Settings) -> int:
    """Remove every Baadal-tagged rule, and the /32 aliases of pool public IPs and vnc_ip,
    from the NAT box; other rules and addresses stay. The database is not changed, so
    :func:`reapply_nat_mappings` restores everything. Returns how many things went."""
    box = nat_box(settings)
    if box is None:
        return 0
    with session_scope(engine) as s:
        pool = set(s.scalars(select(PublicIpPool.public_ip)))
    return clear_nat_box(box, pool)


def reapply_nat_mappings(engine: Engine, settings: Settings) -> int:
    """Make the NAT box map what the database says (after a NAT box reboot or a clear):
    public IP mappings no VM holds any more go first (a VM deleted or moved while the
    box was away), then every VM's public IP mapping and every active VNC grant is
    re-created. Returns how many rules/aliases were added. Callers hold
    :func:`baadal.vm.network.network_lock`, so the picture read here is still true."""
    box = nat_box(settings)
    if box is None:
        return 0
    now = utcnow()
    with session_scope(engine) as s:
        public = {
            PublicIpMapping(vm.public_ip.public_ip, vm.private_ip.private_ip)
            for vm in s.scalars(
                select(VM).where(VM.public_ip_id.is_not(None), VM.private_ip_id.is_not(None))
            )
        }
        mappings: list[Mapping] = [*sorted(public, key=lambda m: m.public_ip)]
        mappings += [c.mapping for c in _granted_now(s, now)]
    for stale in box.public_mappings() - public:
        log.warning("NAT: %s -> %s is no VM's mapping, removed", stale.public_ip, stale.private_ip)
        box.remove(stale)
    return sum(box.create(m) for m in mappings)
