"""Resource pools: VLANs, private IP + MAC per VLAN, public IPs and VNC ports.

The seed's VM_network get_private_ip_mac / choose_mac_ip / choose_mac_ip_vncport picked a
free address and wrote it down later, so two requests could be handed the same one. Here a
claim *is* the write: the VM row takes the address through a UNIQUE column
(vm_data.private_ip_id, public_ip_id; vnc_port with host_id) inside a SAVEPOINT; losing a race is an
IntegrityError that only undoes the savepoint, and the allocator tries another candidate.
Candidates are picked at random so concurrent allocators rarely collide at all.

Every function works inside the caller's transaction (it flushes, never commits), so an
allocation is undone together with whatever else the caller's unit of work fails to do.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import (
    ColumnElement,
    Select,
    delete,
    exists,
    func,
    insert,
    select,
    text,
    union,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import InstrumentedAttribute, Session, aliased

from baadal import constants as C
from baadal.db.constants_table import get_constant
from baadal.db.models import VM, Host, PrivateIpPool, PublicIpPool, SecurityDomain, Vlan
from baadal.errors import (
    ConfigError,
    ConflictError,
    NotFoundError,
    ResourceExhausted,
    ValidationError,
)
from baadal.net import validators as V

#: claims tried before giving up; each lost race means another allocator won a row
MAX_CLAIM_ATTEMPTS = 32
#: fresh MACs generated per address before giving up (2**24 choices: never in practice)
MAX_MAC_ATTEMPTS = 100
#: addresses per IN (...) query (SQLite caps bound parameters)
_CHUNK = 500
VLAN_NAME_MAX = 30
VNC_START_CONSTANT = "vncport_start_range"
VNC_END_CONSTANT = "vncport_end_range"

_rng = random.SystemRandom()


@dataclass(frozen=True)
class PrivateAddress:
    """What the seed's get_private_ip_mac returned, plus the pool row claimed."""

    private_ip: str
    mac_addr: str | None
    vlan_name: str
    vlan_tag: int
    pool_id: int


@dataclass(frozen=True)
class VlanUsage:
    id: int
    name: str
    tag: int
    cidr: str
    total: int
    used: int
    #: active and unused; inactive unused rows count in total only
    free: int


@dataclass(frozen=True)
class PoolUsage:
    """The public addresses and VNC ports (each VLAN's: :func:`vlan_usage`)."""

    public_total: int
    public_used: int
    public_free: int
    vnc_range: tuple[int, int]
    #: ports held, all hosts together
    vnc_used: int
    #: ports held on the host holding most (the range is each host's: its free ones bound)
    vnc_used_busiest_host: int


# --- helpers -------------------------------------------------------------------------


def _is_postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def _chunks(values: Sequence[str]) -> Iterable[Sequence[str]]:
    for start in range(0, len(values), _CHUNK):
        yield values[start : start + _CHUNK]


def _existing(
    session: Session, column: InstrumentedAttribute[str], values: Sequence[str]
) -> set[str]:
    found: set[str] = set()
    for chunk in _chunks(values):
        found.update(session.scalars(select(column).where(column.in_(chunk))))
    return found


def _lock_pools(session: Session) -> None:
    """Serialise pool edits on PostgreSQL: the private/public cross check and generated
    MACs have no constraint behind them. SHARE ROW EXCLUSIVE does not block allocators
    (they only take row locks on the pools)."""
    if _is_postgres(session):
        session.execute(
            text("LOCK TABLE private_ip_pool, public_ip_pool IN SHARE ROW EXCLUSIVE MODE")
        )


def _check_no_clash(session: Session, ips: list[str]) -> None:
    """Refuse addresses already in either pool, naming the first in range order."""
    for column, pool in (
        (PrivateIpPool.private_ip, "private"),
        (PublicIpPool.public_ip, "public"),
    ):
        clashes = _existing(session, column, ips)
        if clashes:
            first = next(ip for ip in ips if ip in clashes)
            more = f" (and {len(clashes) - 1} more)" if len(clashes) > 1 else ""
            raise ConflictError(f"{first} is already in the {pool} IP pool{more}")


def _bulk_insert(
    session: Session, model: type[PrivateIpPool | PublicIpPool], rows: list[dict[str, object]]
) -> None:
    """Insert all rows or none: a race lost at this point undoes only our savepoint."""
    try:
        with session.begin_nested():
            session.execute(insert(model), rows)
    except IntegrityError:
        raise ConflictError(
            "the IP pools changed while adding these addresses; nothing was added, try again"
        ) from None


def get_vlan(session: Session, vlan_id: int) -> Vlan:
    vlan = session.get(Vlan, vlan_id)
    if vlan is None:
        raise NotFoundError(f"no VLAN with id {vlan_id}")
    return vlan


def get_vlan_by_name(session: Session, name: str) -> Vlan:
    vlan = session.scalar(select(Vlan).where(Vlan.name == name))
    if vlan is None:
        raise NotFoundError(f"no VLAN named {name!r}")
    return vlan


def _get_vm(session: Session, vm_id: int) -> VM:
    vm = session.get(VM, vm_id)
    if vm is None:
        raise NotFoundError(f"no VM with id {vm_id}")
    return vm


# --- VLANs and adding addresses ----------------------------------------------------


def create_vlan(session: Session, name: str, tag: int, cidr: str) -> Vlan:
    """A VLAN whose network overlaps no other, so an address belongs to one VLAN only."""
    V.check_safe_name(name, "VLAN name", VLAN_NAME_MAX)
    V.check_vlan_tag(tag)
    network = V.check_cidr(cidr)
    if network.prefixlen > 30:
        raise ValidationError(f"network {cidr} is too small: it has no host addresses")
    if _is_postgres(session):
        session.execute(text("LOCK TABLE vlan IN SHARE ROW EXCLUSIVE MODE"))
    for other in session.scalars(select(Vlan).order_by(Vlan.id)):
        if other.name == name:
            raise ConflictError(f"VLAN {name!r} already exists")
        if other.vlan_tag == tag:
            raise ConflictError(f"VLAN id {tag} is already used by VLAN {other.name!r}")
        try:
            other_net = ipaddress.IPv4Network(other.vlan_addr, strict=False)
        except ValueError:
            continue  # a legacy row without a usable network cannot overlap
        if network.overlaps(other_net):
            raise ConflictError(
                f"network {network} overlaps VLAN {other.name!r} ({other.vlan_addr})"
            )
    vlan = Vlan(name=name, vlan_tag=tag, vlan_addr=str(network))
    session.add(vlan)
    session.flush()
    return vlan


def _macs_for(session: Session, count: int, macs: list[str] | None) -> list[str]:
    taken = {
        m.upper()
        for m in session.scalars(
            select(PrivateIpPool.mac_addr).where(PrivateIpPool.mac_addr.is_not(None))
        )
        if m
    }
    if macs is not None:
        if len(macs) != count:
            raise ValidationError(f"{len(macs)} MAC addresses given for {count} IP addresses")
        normalized = [V.normalize_mac(m) for m in macs]
        seen: set[str] = set()
        for mac in normalized:
            if mac in seen:
                raise ValidationError(f"MAC address {mac} is given twice")
            if mac in taken:
                raise ConflictError(f"MAC address {mac} is already in the private IP pool")
            seen.add(mac)
        return normalized
    generated: list[str] = []
    for _ in range(count):
        for _attempt in range(MAX_MAC_ATTEMPTS):
            mac = V.generate_random_mac()
            if mac not in taken:
                break
        else:
            raise ResourceExhausted("could not generate a unique MAC address")
        taken.add(mac)
        generated.append(mac)
    return generated


def add_private_ips(
    session: Session, vlan_id: int, ip_from: str, ip_to: str, macs: list[str] | None = None
) -> int:
    """Add a range to a VLAN's pool; all or nothing, every check done before inserting."""
    vlan = get_vlan(session, vlan_id)
    first, last = V.check_ip_range(ip_from, ip_to)
    network = ipaddress.IPv4Network(vlan.vlan_addr, strict=False)
    for address in (first, last):
        if address not in network:
            raise ValidationError(f"{address} is outside VLAN {vlan.name!r} ({network})")
    for address, what in (
        (network.network_address, "network"),
        (network.broadcast_address, "broadcast"),
    ):
        if first <= address <= last:
            raise ValidationError(f"{address} is the {what} address of VLAN {vlan.name!r}")
    ips = V.get_ips_in_range(ip_from, ip_to)
    _lock_pools(session)
    _check_no_clash(session, ips)
    mac_list = _macs_for(session, len(ips), macs)
    rows: list[dict[str, object]] = [
        {"private_ip": ip, "mac_addr": mac, "vlan_id": vlan.id, "is_active": True}
        for ip, mac in zip(ips, mac_list, strict=True)
    ]
    _bulk_insert(session, PrivateIpPool, rows)
    return len(rows)


#: what can never be a VM's public address: a NAT rule for it would capture traffic the
#: NAT box needs for itself, or match packets that never come from one host
_NOT_PUBLIC: tuple[tuple[ipaddress.IPv4Network, str], ...] = (
    (ipaddress.IPv4Network("0.0.0.0/8"), "an unspecified ('this network') address"),
    (ipaddress.IPv4Network("127.0.0.0/8"), "a loopback address"),
    (ipaddress.IPv4Network("169.254.0.0/16"), "a link-local address"),
    (ipaddress.IPv4Network("224.0.0.0/4"), "a multicast address"),
    (ipaddress.IPv4Network("240.0.0.0/4"), "a reserved or broadcast address"),
)


def _check_public_range(
    session: Session, first: ipaddress.IPv4Address, last: ipaddress.IPv4Address
) -> None:
    """Refuse a range touching a special network or any VLAN's private network (naming the
    lowest such address): a VM's private address must never be someone's public one."""
    span = []
    for vlan in session.scalars(select(Vlan).order_by(Vlan.id)):
        try:
            span.append((ipaddress.IPv4Network(vlan.vlan_addr, strict=False), vlan.name))
        except ValueError:
            continue  # a legacy row without a usable network holds no address
    inside = [(network, f"inside VLAN {name!r}") for network, name in span]
    clashes = [
        (max(first, network.network_address), network, what)
        for network, what in (*_NOT_PUBLIC, *inside)
        if first <= network.broadcast_address and network.network_address <= last
    ]
    if clashes:
        address, network, what = min(clashes, key=lambda c: c[0])
        where = f" ({network})" if what.startswith("inside") else ""
        raise ValidationError(f"{address} cannot be a public IP: it is {what}{where}")


def add_public_ips(session: Session, ip_from: str, ip_to: str) -> int:
    """Add a range of public addresses; all or nothing."""
    first, last = V.check_ip_range(ip_from, ip_to)
    ips = V.get_ips_in_range(ip_from, ip_to)
    _lock_pools(session)
    _check_public_range(session, first, last)
    _check_no_clash(session, ips)
    rows: list[dict[str, object]] = [{"public_ip": ip, "is_active": True} for ip in ips]
    _bulk_insert(session, PublicIpPool, rows)
    return len(rows)


# --- claiming ----------------------------------------------------------------------


def _free_private(vlan_id: int) -> Select[tuple[int]]:
    return select(PrivateIpPool.id).where(
        PrivateIpPool.vlan_id == vlan_id,
        PrivateIpPool.is_active.is_(True),
        ~exists().where(VM.private_ip_id == PrivateIpPool.id),
        ~exists().where(Host.host_ip_id == PrivateIpPool.id),
    )


def private_ip_is_free(session: Session, pool_id: int) -> bool:
    """The pool row exists, is active, and no VM or host holds it."""
    return (
        session.scalar(
            select(PrivateIpPool.id).where(
                PrivateIpPool.id == pool_id, PrivateIpPool.is_active.is_(True), ~_private_used()
            )
        )
        is not None
    )


def free_private_count(session: Session, vlan_id: int) -> int:
    """How many addresses of the VLAN no VM or host holds."""
    return session.scalar(select(func.count()).select_from(_free_private(vlan_id).subquery())) or 0


def _free_public() -> Select[tuple[int]]:
    return select(PublicIpPool.id).where(
        PublicIpPool.is_active.is_(True),
        ~exists().where(VM.public_ip_id == PublicIpPool.id),
        ~exists().where(Host.public_ip_id == PublicIpPool.id),
    )


def free_public_count(session: Session) -> int:
    """How many active public addresses no VM or host holds."""
    return session.scalar(select(func.count()).select_from(_free_public().subquery())) or 0


def _set_if_unset(
    session: Session, vm_id: int, column: InstrumentedAttribute[int | None], value: int
) -> bool:
    """The claim itself; False when the VM got a value meanwhile (its other handler won)."""
    result = session.execute(
        update(VM)
        .where(VM.id == vm_id, column.is_(None))
        .values({column.key: value})
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


def _current(session: Session, vm_id: int, column: InstrumentedAttribute[int | None]) -> int | None:
    """The committed value now (a new statement sees other transactions' commits)."""
    row = session.execute(select(column).where(VM.id == vm_id)).first()
    if row is None:
        raise NotFoundError(f"no VM with id {vm_id}")
    vm = session.get(VM, vm_id)
    if vm is not None:
        session.expire(vm, [column.key])
    return row[0]


class _VmAlreadySet(Exception):
    """Raised inside the savepoint so its rollback also drops the candidate's row lock."""


def _claim(
    session: Session,
    vm_id: int,
    column: InstrumentedAttribute[int | None],
    pick: Callable[[set[int]], int | None],
    exhausted: str,
) -> int:
    """Set ``column`` of the VM to a value ``pick`` proposes (see module doc).

    ``pick`` gets the values this call already lost races for and returns None when
    nothing is free. The VM getting a value meanwhile (its other handler) wins over us.
    """
    lost: set[int] = set()
    for _attempt in range(MAX_CLAIM_ATTEMPTS):
        candidate: int | None = None
        try:
            with session.begin_nested():
                candidate = pick(lost)
                if candidate is None:
                    raise ResourceExhausted(exhausted)
                if not _set_if_unset(session, vm_id, column, candidate):
                    raise _VmAlreadySet
        except IntegrityError:
            if candidate is not None:
                lost.add(candidate)
            continue
        except _VmAlreadySet:
            current = _current(session, vm_id, column)
            if current is None:  # cleared again meanwhile: start over
                continue
            return current
        _current(session, vm_id, column)  # keep the session's VM object in step
        return candidate
    raise ResourceExhausted(f"{exhausted} (still contended after {MAX_CLAIM_ATTEMPTS} tries)")


def _row_picker(
    session: Session, free: Select[tuple[int]], pool_id: InstrumentedAttribute[int]
) -> Callable[[set[int]], int | None]:
    """A random free pool row. On PostgreSQL it is locked FOR UPDATE SKIP LOCKED so
    allocators step around rows others are claiming; only when every free row is being
    claimed do we queue on one (that claim may still roll back) and the unique constraint
    settles it.

    The queueing is a waiting FOR UPDATE, never a plain read: claiming an unlocked pick
    would write our VM row (and its unique index entry) first and only then wait on the
    row's owner in the foreign-key check, while the owner waits on our index entry, which
    PostgreSQL breaks as a deadlock."""
    postgres = _is_postgres(session)

    def pick(lost: set[int]) -> int | None:
        query = free.where(pool_id.not_in(lost)) if lost else free
        query = query.order_by(func.random()).limit(1)
        if not postgres:
            return session.scalar(query)
        candidate = session.scalar(query.with_for_update(skip_locked=True, of=pool_id.class_))
        if candidate is None:
            candidate = session.scalar(query.with_for_update(of=pool_id.class_))
        return candidate

    return pick


def _private_address(session: Session, pool_id: int) -> PrivateAddress:
    row = session.execute(
        select(PrivateIpPool.private_ip, PrivateIpPool.mac_addr, Vlan.name, Vlan.vlan_tag)
        .join(Vlan, Vlan.id == PrivateIpPool.vlan_id)
        .where(PrivateIpPool.id == pool_id)
    ).one()
    return PrivateAddress(
        private_ip=row[0], mac_addr=row[1], vlan_name=row[2], vlan_tag=row[3], pool_id=pool_id
    )


def allocate_private_ip(session: Session, vm_id: int, vlan_id: int) -> PrivateAddress:
    """Give the VM a private IP + MAC of the VLAN; re-running returns the same address."""
    vm = _get_vm(session, vm_id)
    vlan = get_vlan(session, vlan_id)
    if vm.private_ip_id is not None:
        address = _private_address(session, vm.private_ip_id)
        if address.vlan_name != vlan.name:
            raise ConflictError(
                f"VM {vm.vm_name!r} already has {address.private_ip} in VLAN {address.vlan_name!r}"
            )
        return address
    pool_id = _claim(
        session,
        vm_id,
        VM.private_ip_id,
        _row_picker(session, _free_private(vlan.id), PrivateIpPool.id),
        f"no free private IP left in VLAN {vlan.name}",
    )
    address = _private_address(session, pool_id)
    if address.vlan_name != vlan.name:  # the VM's other handler claimed elsewhere meanwhile
        raise ConflictError(
            f"VM {vm.vm_name!r} already has {address.private_ip} in VLAN {address.vlan_name!r}"
        )
    return address


def get_private_ip_mac(session: Session, vm_id: int, security_domain_id: int) -> PrivateAddress:
    """The seed's function: the security domain decides the VLAN."""
    domain = session.get(SecurityDomain, security_domain_id)
    if domain is None:
        raise NotFoundError(f"no security domain with id {security_domain_id}")
    return allocate_private_ip(session, vm_id, domain.vlan_id)


def release_private_ip(session: Session, vm_id: int) -> str | None:
    """Give the VM's private IP back; None if it had none (release is re-runnable)."""
    vm = _get_vm(session, vm_id)
    if vm.private_ip_id is None:
        return None
    ip = session.scalar(
        select(PrivateIpPool.private_ip).where(PrivateIpPool.id == vm.private_ip_id)
    )
    vm.private_ip_id = None
    session.flush()
    return ip


def allocate_public_ip(session: Session, vm_id: int) -> str:
    """Give the VM an active public IP no VM or host uses; re-running returns the same."""
    vm = _get_vm(session, vm_id)
    pool_id = vm.public_ip_id
    if pool_id is None:
        pool_id = _claim(
            session,
            vm_id,
            VM.public_ip_id,
            _row_picker(session, _free_public(), PublicIpPool.id),
            "no free public IP left",
        )
    ip = session.scalar(select(PublicIpPool.public_ip).where(PublicIpPool.id == pool_id))
    assert ip is not None  # the FK guarantees the row
    return ip


def release_public_ip(session: Session, vm_id: int) -> str | None:
    vm = _get_vm(session, vm_id)
    if vm.public_ip_id is None:
        return None
    ip = session.scalar(select(PublicIpPool.public_ip).where(PublicIpPool.id == vm.public_ip_id))
    vm.public_ip_id = None
    session.flush()
    return ip


# --- VNC ports ---------------------------------------------------------------------


def _port_constant(session: Session, name: str, default: int) -> int:
    try:
        raw = get_constant(session, name)
    except NotFoundError:
        return default
    try:
        port = int(raw)
    except ValueError:
        raise ConfigError(f"constant {name}={raw!r} is not a port number") from None
    if not 1 <= port <= 65535:
        raise ConfigError(f"constant {name}={port} is not a port number (1-65535)")
    return port


def vnc_port_range(session: Session) -> tuple[int, int]:
    """The range from the constants table (admins change it there), else the default."""
    start = _port_constant(session, VNC_START_CONSTANT, C.VNC_PORT_RANGE[0])
    end = _port_constant(session, VNC_END_CONSTANT, C.VNC_PORT_RANGE[1])
    if start > end:
        raise ConfigError(f"VNC port range {start}-{end} is reversed")
    return start, end


#: random candidates tried before the exact query for the lowest free port
_VNC_RANDOM_TRIES = 8


def vnc_port_taken(session: Session, host_id: int, port: int, vm_id: int | None = None) -> bool:
    """Whether another VM on the host holds the port (one index lookup)."""
    query = select(VM.id).where(VM.host_id == host_id, VM.vnc_port == port)
    if vm_id is not None:
        query = query.where(VM.id != vm_id)
    return session.scalar(query.limit(1)) is not None


def _lowest_free_vnc_port(session: Session, host_id: int, start: int, end: int) -> int | None:
    """The lowest port of the range no VM on the host holds, in one query."""
    if not vnc_port_taken(session, host_id, start):
        return start
    taken, above = aliased(VM), aliased(VM)
    return session.scalar(
        select(func.min(taken.vnc_port + 1)).where(
            taken.host_id == host_id,
            taken.vnc_port.between(start, end - 1),
            ~exists().where(above.host_id == host_id, above.vnc_port == taken.vnc_port + 1),
        )
    )


def allocate_vnc_port(session: Session, vm_id: int, *, prefer: int | None = None) -> int:
    """A free VNC port on the VM's host (``prefer`` first, if free there); re-running
    returns the same port. Ports are unique per host (the console listens at the host's
    address), so the range bounds one host's VMs, not the cloud's. Random candidates
    are checked one by one (an index lookup each) and the exact lowest free port is
    looked up only when they keep hitting taken ports; the unique (host, port) pair is
    what settles a race."""
    vm = _get_vm(session, vm_id)
    if vm.vnc_port is not None:
        return vm.vnc_port
    host_id = vm.host_id
    if host_id is None:
        raise ConflictError(f"VM {vm.vm_name} is not placed on a host: no VNC port for it")
    start, end = vnc_port_range(session)
    preferred = prefer if prefer is not None and start <= prefer <= end else None

    def pick(lost: set[int]) -> int | None:
        candidates = [preferred] if preferred is not None and preferred not in lost else []
        candidates += [_rng.randint(start, end) for _ in range(_VNC_RANDOM_TRIES)]
        for port in candidates:
            if port not in lost and not vnc_port_taken(session, host_id, port):
                return port
        return _lowest_free_vnc_port(session, host_id, start, end)

    return _claim(
        session, vm_id, VM.vnc_port, pick, f"no free VNC port left in {start}-{end} on its host"
    )


def release_vnc_port(session: Session, vm_id: int) -> int | None:
    vm = _get_vm(session, vm_id)
    port = vm.vnc_port
    if port is None:
        return None
    vm.vnc_port = None
    session.flush()
    return port


# --- usage and removal -------------------------------------------------------------


def _private_used() -> ColumnElement[bool]:
    return exists().where(VM.private_ip_id == PrivateIpPool.id) | exists().where(
        Host.host_ip_id == PrivateIpPool.id
    )


def _public_used() -> ColumnElement[bool]:
    return exists().where(VM.public_ip_id == PublicIpPool.id) | exists().where(
        Host.public_ip_id == PublicIpPool.id
    )


def vlan_usage() -> Select[tuple[int, str, int, str, int, int, int]]:
    """Each VLAN's private addresses: total, used, free (the columns of a
    :class:`VlanUsage`), in one query; the caller orders and pages it.

    The private addresses in use are joined as one set (the VMs' and the hosts'), not
    asked per address with EXISTS: on PostgreSQL that plan was estimated so costly that
    it was JIT-compiled at every call (0.2 s of 0.25 s at 25,000 addresses)."""
    claimed = union(
        select(VM.private_ip_id.label("id")).where(VM.private_ip_id.is_not(None)),
        select(Host.host_ip_id).where(Host.host_ip_id.is_not(None)),
    ).subquery()
    used_p = claimed.c.id.is_not(None)
    return (
        select(
            Vlan.id,
            Vlan.name,
            Vlan.vlan_tag,
            Vlan.vlan_addr,
            func.count(PrivateIpPool.id),
            func.count(PrivateIpPool.id).filter(used_p),
            func.count(PrivateIpPool.id).filter(PrivateIpPool.is_active.is_(True), ~used_p),
        )
        .outerjoin(PrivateIpPool, PrivateIpPool.vlan_id == Vlan.id)
        .outerjoin(claimed, claimed.c.id == PrivateIpPool.id)
        .group_by(Vlan.id, Vlan.name, Vlan.vlan_tag, Vlan.vlan_addr)
    )


def pool_usage(session: Session) -> PoolUsage:
    """Totals for ``baadal pool list``: public addresses, VNC ports."""
    used_q = _public_used()
    total, used, free = session.execute(
        select(
            func.count(PublicIpPool.id),
            func.count(PublicIpPool.id).filter(used_q),
            func.count(PublicIpPool.id).filter(PublicIpPool.is_active.is_(True), ~used_q),
        )
    ).one()
    start, end = vnc_port_range(session)
    per_host = (
        select(func.count().label("held"))
        .where(VM.vnc_port.between(start, end))
        .group_by(VM.host_id)
        .subquery()
    )
    vnc_used, busiest = session.execute(
        select(func.sum(per_host.c.held), func.max(per_host.c.held))
    ).one()
    return PoolUsage(
        public_total=total,
        public_used=used,
        public_free=free,
        vnc_range=(start, end),
        vnc_used=vnc_used or 0,
        vnc_used_busiest_host=busiest or 0,
    )


def _users(
    session: Session,
    pool_ids: list[int],
    vm_col: InstrumentedAttribute[int | None],
    host_col: InstrumentedAttribute[int | None],
) -> dict[int, str]:
    """Who holds each pool row, for the refusal message."""
    holders: dict[int, str] = {}
    for chunk_start in range(0, len(pool_ids), _CHUNK):
        chunk = pool_ids[chunk_start : chunk_start + _CHUNK]
        for pid, name in session.execute(select(vm_col, VM.vm_name).where(vm_col.in_(chunk))):
            holders[pid] = f"VM {name!r}"
        for pid, name in session.execute(
            select(host_col, Host.host_name).where(host_col.in_(chunk))
        ):
            holders[pid] = f"host {name!r}"
    return holders


def _remove(
    session: Session,
    model: type[PrivateIpPool | PublicIpPool],
    ip_column: InstrumentedAttribute[str],
    vm_col: InstrumentedAttribute[int | None],
    host_col: InstrumentedAttribute[int | None],
    ip_from: str,
    ip_to: str,
    pool: str,
) -> int:
    ips = V.get_ips_in_range(ip_from, ip_to)
    found: dict[str, int] = {}
    for chunk in _chunks(ips):
        query = select(ip_column, model.id).where(ip_column.in_(chunk)).order_by(model.id)
        if _is_postgres(session):
            # allocators skip locked rows; one already claiming commits first and shows up below
            query = query.with_for_update(of=model)
        found.update({ip: pid for ip, pid in session.execute(query)})
    if not found:
        raise NotFoundError(f"no {pool} IP in range {ip_from} - {ip_to}")
    holders = _users(session, list(found.values()), vm_col, host_col)
    if holders:
        first = next(ip for ip in ips if ip in found and found[ip] in holders)
        more = f" (and {len(holders) - 1} more)" if len(holders) > 1 else ""
        raise ConflictError(f"{first} is used by {holders[found[first]]}{more}; nothing removed")
    ids = list(found.values())
    for start in range(0, len(ids), _CHUNK):
        session.execute(delete(model).where(model.id.in_(ids[start : start + _CHUNK])))
    session.flush()
    return len(ids)


def remove_private_ips(session: Session, ip_from: str, ip_to: str) -> int:
    """Delete the range's pool rows; refused as a whole if any address is in use."""
    return _remove(
        session,
        PrivateIpPool,
        PrivateIpPool.private_ip,
        VM.private_ip_id,
        Host.host_ip_id,
        ip_from,
        ip_to,
        "private",
    )


def remove_public_ips(session: Session, ip_from: str, ip_to: str) -> int:
    """Delete the range's public rows; refused as a whole if any address is in use."""
    return _remove(
        session,
        PublicIpPool,
        PublicIpPool.public_ip,
        VM.public_ip_id,
        Host.public_ip_id,
        ip_from,
        ip_to,
        "public",
    )
