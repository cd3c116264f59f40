"""The seed's nat_mapper, database side: which public IP and VNC console mappings the
database says each VM has, and the VNC grants (limits, expiry, following a moved VM).

The database is read in short transactions and the NAT box (:mod:`baadal.net.nat`) is
programmed outside them, with plain mappings.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, Engine, delete, func, select, update
from sqlalchemy.orm import Session

from baadal import constants as C
from baadal.config import Settings
from baadal.db.models import VM, Host, PublicIpPool, VncAccess
from baadal.db.session import session_scope
from baadal.errors import BaadalError, ConflictError, NotFoundError, ValidationError
from baadal.net.nat import Mapping, PublicIpMapping, VncMapping, clear_nat_box, nat_box
from baadal.timeutil import utcnow

log = logging.getLogger("baadal")

_GRANT_WINDOW = timedelta(hours=24)


# --------------------------------------------------------------------------- per VM


def _public_mapping(engine: Engine, vm_id: int) -> PublicIpMapping | None:
    with session_scope(engine) as s:
        vm = _get_vm(s, vm_id)
        if vm.public_ip is None or vm.private_ip is None:
            return None
        return PublicIpMapping(vm.public_ip.public_ip, vm.private_ip.private_ip)


def _vnc_mapping(engine: Engine, vm_id: int) -> VncMapping:
    with session_scope(engine) as s:
        vm = _get_vm(s, vm_id)
        if vm.host is None or vm.vnc_port is None:
            raise ConflictError(f"VM {vm.vm_name} is not placed on a host (no VNC console)")
        return VncMapping(vm.id, vm.vnc_port, vm.host.address, vm.vnc_port)


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


def create_vnc_mapping_in_nat(engine: Engine, settings: Settings, vm_id: int) -> int:
    """Forward vnc_ip:<vm vnc_port> to the VM's console on its host."""
    box = nat_box(settings)
    return 0 if box is None else box.create(_vnc_mapping(engine, vm_id))


@dataclass(frozen=True)
class _Grant:
    """A vnc_access row and the forwarding it needs on the NAT box."""

    id: int
    mapping: VncMapping
    expiry_time: datetime


def _grants(session: Session, *where: ColumnElement[bool]) -> list[_Grant]:
    rows = session.execute(
        select(VncAccess.id, VncAccess.vm_id, VncAccess.vnc_source_port, Host.address,
               VncAccess.vnc_destination_port, VncAccess.expiry_time)
        .join(Host, Host.id == VncAccess.host_id)
        .where(*where)
        .order_by(VncAccess.id)
    )  # fmt: skip
    return [_Grant(r[0], VncMapping(r[1], r[2], r[3], r[4]), r[5]) for r in rows]


def _granted_now(session: Session, now: datetime) -> list[VncMapping]:
    """The forwardings active, unexpired grants need (each once, oldest grant first)."""
    active = _grants(session, VncAccess.status == "active", VncAccess.expiry_time > now)
    return list(dict.fromkeys(g.mapping for g in active))


def remove_vnc_mapping_from_nat(engine: Engine, settings: Settings, vm_id: int) -> int:
    """Revoke console access: remove the forwarding of the VM's current and granted
    placements (a grant keeps the host it was made for) and end its active grants."""
    box = nat_box(settings)
    with session_scope(engine) as s:
        vm = _get_vm(s, vm_id)
        active = _grants(s, VncAccess.vm_id == vm_id, VncAccess.status == "active")
        mappings = {g.mapping for g in active}
        if vm.host is not None and vm.vnc_port is not None:
            mappings.add(VncMapping(vm_id, vm.vnc_port, vm.host.address, vm.vnc_port))
    changed = 0 if box is None else sum(box.remove(m) for m in mappings)
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
    new = {replace(g.mapping, host_ip=address, host_port=port) for g in stale}
    box = nat_box(settings)
    if box is not None:
        for mapping in {g.mapping for g in stale} - new:
            box.remove(mapping)
        for mapping in new:
            box.create(mapping)
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
        for mapping in new:  # grants the expiry job ended meanwhile lose their rules
            if mapping.public_port not in live:
                box.remove(mapping)
    log.info("VNC grants of VM %d moved to %s: %d", vm_id, address, moved)
    return moved


# --------------------------------------------------------------------------- VNC grants


@dataclass(frozen=True)
class VncGrant:
    """What the user needs to open the console; the password never appears in repr."""

    vm_id: int
    token: str
    vnc_ip: str
    port: int
    expiry_time: datetime
    password: str | None = field(repr=False)


def grant_vnc_access(
    engine: Engine,
    settings: Settings,
    vm_id: int,
    requester_id: int | None,
    duration_s: int = C.VNC_ACCESS_DURATION_S,
) -> VncGrant:
    """Open the VM's console for ``duration_s``. Refused, with nothing changed, for a VM
    that is not running or not placed and for the 11th grant within 24 h. Each grant is
    its own row (that is what the limit counts); grants of one VM share one set of rules,
    which stay until the last grant expires."""
    if isinstance(duration_s, bool) or not isinstance(duration_s, int) or duration_s < 1:
        raise ValidationError(f"VNC access duration {duration_s!r} is not a positive number")
    box = nat_box(settings)
    now = utcnow()
    with session_scope(engine) as s:
        vm = s.scalars(select(VM).where(VM.id == vm_id).with_for_update()).first()
        if vm is None:
            raise NotFoundError(f"VM {vm_id} does not exist")
        if vm.status != C.VMStatus.RUNNING:
            raise ConflictError(f"VM {vm.vm_name} is not running: start it to open its console")
        if vm.host is None or vm.vnc_port is None:
            raise ConflictError(f"VM {vm.vm_name} is not placed on a host (no VNC console)")
        recent = s.scalar(
            select(func.count())
            .select_from(VncAccess)
            .where(VncAccess.vm_id == vm_id, VncAccess.time_requested > now - _GRANT_WINDOW)
        )
        if recent >= C.MAX_VNC_ALLOWED_IN_A_DAY:
            raise ConflictError(
                f"VM {vm.vm_name} already had {recent} VNC grants in the last 24 hours "
                f"(at most {C.MAX_VNC_ALLOWED_IN_A_DAY}); try again later"
            )
        mapping = VncMapping(vm.id, vm.vnc_port, vm.host.address, vm.vnc_port)
        row = VncAccess(
            vm_id=vm.id,
            token=secrets.token_hex(10),
            host_id=vm.host_id,
            vnc_source_port=vm.vnc_port,
            vnc_destination_port=vm.vnc_port,
            duration=duration_s,
            status="active",
            time_requested=now,
            expiry_time=now + timedelta(seconds=duration_s),
        )
        s.add(row)
        s.flush()
        grant = VncGrant(
            vm.id,
            row.token,
            settings.nat.vnc_ip or settings.nat.nat_ip or vm.host.address,
            vm.vnc_port,
            row.expiry_time,
            vm.vnc_password,
        )
        row_id = row.id
    if box is not None:
        try:
            box.create(mapping)
        except BaseException:
            with session_scope(engine) as s:  # the grant did not happen: it must not count
                s.execute(delete(VncAccess).where(VncAccess.id == row_id))
            raise
    log.info(
        "VNC access to VM %d granted to user %s until %s (grant %d)",
        vm_id,
        requester_id,
        grant.expiry_time,
        row_id,
    )
    return grant


def clear_all_timedout_vnc_mappings(
    engine: Engine, settings: Settings, now: datetime | None = None
) -> int:
    """End every active grant whose expiry has passed; the forwarding goes unless another
    grant of the same VM, to the same host and port, is still running. Returns how many
    grants ended. The DB bookkeeping happens whatever the NAT type."""
    box = nat_box(settings)
    now = now or utcnow()
    with session_scope(engine) as s:
        active = _grants(s, VncAccess.status == "active")
    expired: dict[VncMapping, list[int]] = {}
    still_used: set[VncMapping] = set()
    for grant in active:
        if grant.expiry_time <= now:
            expired.setdefault(grant.mapping, []).append(grant.id)
        else:
            still_used.add(grant.mapping)
    ended: list[int] = []
    removed: list[VncMapping] = []
    failure: BaadalError | None = None
    for mapping, ids in expired.items():
        if box is not None and mapping not in still_used:
            try:
                box.remove(mapping)
            except BaadalError as exc:  # other grants must still expire
                log.error("cannot revoke VNC access %s: %s", mapping.tag, exc)
                failure = failure or exc
                continue
            removed.append(mapping)
        ended += ids
    if ended:
        with session_scope(engine) as s:
            s.execute(
                update(VncAccess)
                .where(VncAccess.id.in_(ended), VncAccess.status == "active")
                .values(status="inactive")
            )
            # where the ended grants point now (a migration may have moved them meanwhile)
            now_pointing = {g.mapping for g in _grants(s, VncAccess.id.in_(ended))}
            # a grant made while the rules were going: it keeps its forwarding
            granted = set(_granted_now(s, now))
        if box is not None:
            for mapping in removed:
                if mapping in granted:
                    box.create(mapping)
            for mapping in now_pointing - set(removed) - granted:
                box.remove(mapping)
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
    """Re-create from the database every VM's public IP mapping and every active VNC grant
    (after a NAT box reboot or a clear). Returns how many rules/aliases were added."""
    box = nat_box(settings)
    if box is None:
        return 0
    now = utcnow()
    with session_scope(engine) as s:
        mappings: list[Mapping] = [
            PublicIpMapping(vm.public_ip.public_ip, vm.private_ip.private_ip)
            for vm in s.scalars(
                select(VM).where(VM.public_ip_id.is_not(None), VM.private_ip_id.is_not(None))
            )
        ]
        mappings += _granted_now(s, now)
    return sum(box.create(m) for m in mappings)
