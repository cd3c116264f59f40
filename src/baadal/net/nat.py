"""The seed's nat_mapper: public IP and VNC console mappings on the NAT box, and VNC grants.

Software NAT is iptables over SSH on the NAT box: a public IP is a ``/32`` alias on the
public interface plus a DNAT rule (public -> private) and an SNAT rule (private -> public,
inserted first so it wins over any MASQUERADE); a VNC console is a DNAT rule from
``vnc_ip:<vm vnc_port>`` to ``<host>:<vm vnc_port>`` plus a MASQUERADE towards the host so
hosts need no route back to users. Every rule carries ``-m comment --comment baadal:...``:
Baadal finds and removes only its own rules and never touches anyone else's.

Commands are argument lists built by pure functions; the database is read in short
transactions and SSH always runs outside them.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import secrets
import shlex
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, Engine, delete, func, select, update
from sqlalchemy.orm import Session

from baadal import constants as C
from baadal.config import Settings
from baadal.db.models import VM, Host, PublicIpPool, VncAccess
from baadal.db.session import session_scope
from baadal.drivers.remote import RemoteTarget, execute_remote_cmd
from baadal.errors import (
    BaadalError,
    ConfigError,
    ConflictError,
    NotFoundError,
    RemoteCommandError,
    ValidationError,
)
from baadal.timeutil import utcnow

log = logging.getLogger("baadal")

#: every Baadal rule's comment starts with this (the lab's own rules use "baadal-lab")
TAG_PREFIX = "baadal:"
_IFACE_RE = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")
_GRANT_WINDOW = timedelta(hours=24)


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class NatDetails:
    """The seed's get_nat_details, plus how to SSH there and where consoles are served."""

    type: C.NatType
    ip: str
    user: str
    port: int
    key_file: str | None
    public_interface: str
    #: the public address users connect to for VNC (vnc_ip, else the NAT box's nat_ip)
    vnc_ip: str


def get_nat_details(settings: Settings) -> NatDetails:
    nat = settings.nat
    return NatDetails(
        type=nat.nat_type,
        ip=nat.nat_ip,
        user=nat.nat_user,
        port=nat.nat_ssh_port,
        key_file=nat.nat_ssh_key or None,
        public_interface=nat.public_interface,
        vnc_ip=nat.vnc_ip or nat.nat_ip,
    )


def _software_nat(settings: Settings) -> NatDetails | None:
    """The details when Baadal must program the NAT box; None when it maps nothing."""
    nat = get_nat_details(settings)
    if nat.type in (C.NatType.NONE, C.NatType.MAPPING):
        return None
    if nat.type == C.NatType.HARDWARE:
        raise ConfigError("nat.nat_type hardware_nat is not supported (as upstream)")
    if not nat.ip:
        raise ConfigError("nat.nat_type is software_nat but nat.nat_ip is empty")
    try:
        _check_ip(nat.vnc_ip, "nat.vnc_ip (or nat.nat_ip when it is empty)")
        _check_iface(nat.public_interface)
    except ValidationError as exc:
        raise ConfigError(str(exc)) from None
    return nat


def _target(nat: NatDetails, settings: Settings) -> RemoteTarget:
    return RemoteTarget.for_address(
        nat.ip, settings, user=nat.user, port=nat.port, key_file=nat.key_file
    )


def nat_box_target(settings: Settings) -> RemoteTarget | None:
    """Where Baadal reaches the NAT box over SSH; None when it programs no NAT box."""
    nat = _software_nat(settings)
    return None if nat is None else _target(nat, settings)


# --------------------------------------------------------------------------- validation


def _check_ip(value: str, what: str) -> str:
    try:
        return str(ipaddress.IPv4Address(value))
    except (ValueError, TypeError):
        raise ValidationError(f"{what} {value!r} is not an IPv4 address") from None


def _check_port(value: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise ValidationError(f"{what} {value!r} is not a TCP port (1-65535)")
    return value


def _check_iface(value: str) -> str:
    if not isinstance(value, str) or not _IFACE_RE.match(value):
        raise ValidationError(f"nat.public_interface {value!r} is not an interface name")
    return value


# --------------------------------------------------------------------------- pure builders


@dataclass(frozen=True)
class PublicIpMapping:
    public_ip: str
    private_ip: str

    def __post_init__(self) -> None:
        _check_ip(self.public_ip, "public IP")
        _check_ip(self.private_ip, "private IP")

    @property
    def tag(self) -> str:
        return public_tag(self.public_ip)


@dataclass(frozen=True)
class VncMapping:
    vm_id: int
    #: the port users connect to on vnc_ip
    public_port: int
    host_ip: str
    host_port: int

    def __post_init__(self) -> None:
        if isinstance(self.vm_id, bool) or not isinstance(self.vm_id, int) or self.vm_id < 1:
            raise ValidationError(f"VM id {self.vm_id!r} is not a positive integer")
        _check_port(self.public_port, "VNC public port")
        _check_ip(self.host_ip, "host address")
        _check_port(self.host_port, "host VNC port")

    @property
    def tag(self) -> str:
        return vnc_tag(self.vm_id, self.public_port)


Mapping = PublicIpMapping | VncMapping


def public_tag(public_ip: str) -> str:
    return f"{TAG_PREFIX}public:{_check_ip(public_ip, 'public IP')}"


def vnc_tag(vm_id: int, port: int) -> str:
    return f"{TAG_PREFIX}vnc:{vm_id}:{_check_port(port, 'VNC public port')}"


@dataclass(frozen=True)
class Rule:
    """One nat-table rule: ``spec`` is what -A/-I/-C/-D all take after the chain."""

    chain: str
    spec: tuple[str, ...]
    #: insert at the top of the chain instead of appending
    first: bool = False

    def add(self) -> list[str]:
        where = ["-I", self.chain, "1"] if self.first else ["-A", self.chain]
        return ["iptables", "-t", "nat", *where, *self.spec]

    def check(self) -> list[str]:
        return ["iptables", "-t", "nat", "-C", self.chain, *self.spec]

    def delete(self) -> list[str]:
        return ["iptables", "-t", "nat", "-D", self.chain, *self.spec]


def _comment(tag: str) -> tuple[str, ...]:
    return ("-m", "comment", "--comment", tag)


def public_ip_rules(mapping: PublicIpMapping) -> list[Rule]:
    tag = _comment(mapping.tag)
    pub, priv = mapping.public_ip, mapping.private_ip
    return [
        Rule("PREROUTING", ("-d", pub, *tag, "-j", "DNAT", "--to-destination", priv)),
        Rule("POSTROUTING", ("-s", priv, *tag, "-j", "SNAT", "--to-source", pub), first=True),
    ]


def vnc_rules(mapping: VncMapping, vnc_ip: str) -> list[Rule]:
    tag = _comment(mapping.tag)
    dnat = ["-d", _check_ip(vnc_ip, "VNC IP"), "-p", "tcp", "--dport", str(mapping.public_port)]
    masq = ["-d", mapping.host_ip, "-p", "tcp", "--dport", str(mapping.host_port)]
    dest = f"{mapping.host_ip}:{mapping.host_port}"
    return [
        Rule("PREROUTING", (*dnat, *tag, "-j", "DNAT", "--to-destination", dest)),
        Rule("POSTROUTING", (*masq, *tag, "-j", "MASQUERADE")),
    ]


def alias_add_argv(ip: str, interface: str) -> list[str]:
    return ["ip", "addr", "add", f"{_check_ip(ip, 'alias')}/32", "dev", _check_iface(interface)]


def alias_del_argv(ip: str, interface: str) -> list[str]:
    return ["ip", "addr", "del", f"{_check_ip(ip, 'alias')}/32", "dev", _check_iface(interface)]


def public_ip_mapping_argv(mapping: PublicIpMapping, interface: str) -> list[list[str]]:
    """Every command that creates a public IP mapping, in order."""
    return [alias_add_argv(mapping.public_ip, interface)] + [
        r.add() for r in public_ip_rules(mapping)
    ]


def public_ip_unmapping_argv(mapping: PublicIpMapping, interface: str) -> list[list[str]]:
    """Every command that removes a public IP mapping, in order."""
    return [r.delete() for r in public_ip_rules(mapping)] + [
        alias_del_argv(mapping.public_ip, interface)
    ]


def vnc_mapping_argv(mapping: VncMapping, vnc_ip: str) -> list[list[str]]:
    return [r.add() for r in vnc_rules(mapping, vnc_ip)]


def vnc_unmapping_argv(mapping: VncMapping, vnc_ip: str) -> list[list[str]]:
    return [r.delete() for r in vnc_rules(mapping, vnc_ip)]


def tagged_rule_deletions(iptables_save: str) -> list[list[str]]:
    """-D commands for every Baadal-tagged rule in ``iptables-save -t nat`` output;
    rules with any other comment (or none) are never touched."""
    return [
        ["iptables", "-t", "nat", "-D", *shlex.split(line)[1:]]
        for line in iptables_save.splitlines()
        if any(map(_is_baadal_tag, _rule_tags(line)))
    ]


def _rule_tags(line: str) -> list[str]:
    """The comments of one ``iptables-save`` rule line (iptables quotes them)."""
    if not line.startswith("-A "):
        return []
    words = shlex.split(line)
    return [words[i + 1] for i, w in enumerate(words[:-1]) if w == "--comment"]


def _is_baadal_tag(tag: str) -> bool:
    return tag.startswith(TAG_PREFIX)


def parse_addresses(ip_addr_output: str) -> dict[str, int]:
    """address -> prefix length from ``ip -o -4 addr show`` output."""
    found = {}
    for line in ip_addr_output.splitlines():
        words = line.split()
        if "inet" in words:
            addr, _, prefix = words[words.index("inet") + 1].partition("/")
            found[addr] = int(prefix or 32)
    return found


# --------------------------------------------------------------------------- on the NAT box


def _addresses(target: RemoteTarget, interface: str | None = None) -> dict[str, int]:
    argv = ["ip", "-o", "-4", "addr", "show"] + (["dev", interface] if interface else [])
    return parse_addresses(execute_remote_cmd(target, argv).stdout)


def _ensure_rules(target: RemoteTarget, rules: list[Rule]) -> int:
    """Add the rules that are missing (iptables -C exits 1 for a missing rule)."""
    added = 0
    for rule in rules:
        checked = execute_remote_cmd(target, rule.check(), check=False)
        if checked.exit_code == 1:
            execute_remote_cmd(target, rule.add())
            added += 1
        elif checked.exit_code != 0:
            reason = checked.stderr.strip() or f"exit {checked.exit_code}"
            raise RemoteCommandError(target.label, rule.check(), reason, checked.exit_code)
    return added


def _drop_rules(target: RemoteTarget, rules: list[Rule]) -> int:
    """Delete every copy of the rules; a missing rule is not an error."""
    removed = 0
    for rule in rules:
        while execute_remote_cmd(target, rule.check(), check=False).exit_code == 0:
            execute_remote_cmd(target, rule.delete())
            removed += 1
    return removed


def _ensure_alias(target: RemoteTarget, ip: str, interface: str) -> int:
    """Make the NAT box answer on ``ip``; nothing if it already has that address anywhere."""
    if ip in _addresses(target):
        return 0
    execute_remote_cmd(target, alias_add_argv(ip, interface))
    return 1


def _drop_alias(target: RemoteTarget, ip: str, interface: str) -> int:
    if _addresses(target, interface).get(ip) != 32:
        return 0
    execute_remote_cmd(target, alias_del_argv(ip, interface))
    return 1


def mapped_destination(iptables_save: str, tag: str) -> str | None:
    """Where the DNAT rule tagged exactly ``tag`` sends traffic, if there is one."""
    for line in iptables_save.splitlines():
        if tag in _rule_tags(line):
            words = shlex.split(line)
            if "DNAT" in words and "--to-destination" in words:
                return words[words.index("--to-destination") + 1]
    return None


def _create(nat: NatDetails, target: RemoteTarget, mapping: Mapping) -> int:
    if isinstance(mapping, PublicIpMapping):
        saved = execute_remote_cmd(target, ["iptables-save", "-t", "nat"]).stdout
        other = mapped_destination(saved, mapping.tag)
        if other is not None and other != mapping.private_ip:
            raise ConflictError(f"public IP {mapping.public_ip} is already mapped to {other}")
        changed = _ensure_alias(target, mapping.public_ip, nat.public_interface)
        changed += _ensure_rules(target, public_ip_rules(mapping))
    else:
        changed = _ensure_alias(target, nat.vnc_ip, nat.public_interface)
        changed += _ensure_rules(target, vnc_rules(mapping, nat.vnc_ip))
    log.info("NAT %s: %d change(s) on %s", mapping.tag, changed, nat.ip)
    return changed


def _remove(nat: NatDetails, target: RemoteTarget, mapping: Mapping) -> int:
    if isinstance(mapping, PublicIpMapping):
        changed = _drop_rules(target, public_ip_rules(mapping))
        changed += _drop_alias(target, mapping.public_ip, nat.public_interface)
    else:
        # the vnc_ip alias stays: other consoles share it and it forwards nothing alone
        changed = _drop_rules(target, vnc_rules(mapping, nat.vnc_ip))
    log.info("NAT %s removed: %d change(s) on %s", mapping.tag, changed, nat.ip)
    return changed


def create_mapping(settings: Settings, mapping: Mapping) -> int:
    """Create a mapping on the NAT box; returns how many rules/aliases were added (0 when
    it already exists or Baadal maps nothing)."""
    nat = _software_nat(settings)
    if nat is None:
        return 0
    return _create(nat, _target(nat, settings), mapping)


def remove_mapping(settings: Settings, mapping: Mapping) -> int:
    """Remove a mapping from the NAT box; returns how many rules/aliases went (0 if none)."""
    nat = _software_nat(settings)
    if nat is None:
        return 0
    return _remove(nat, _target(nat, settings), mapping)


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
    if _software_nat(settings) is None:
        return 0
    mapping = _public_mapping(engine, vm_id)
    return 0 if mapping is None else create_mapping(settings, mapping)


def remove_public_ip_mapping_from_nat(engine: Engine, settings: Settings, vm_id: int) -> int:
    """Unmap the VM's public IP (call before the IPs are released)."""
    if _software_nat(settings) is None:
        return 0
    mapping = _public_mapping(engine, vm_id)
    return 0 if mapping is None else remove_mapping(settings, mapping)


def create_vnc_mapping_in_nat(engine: Engine, settings: Settings, vm_id: int) -> int:
    """Forward vnc_ip:<vm vnc_port> to the VM's console on its host."""
    if _software_nat(settings) is None:
        return 0
    return create_mapping(settings, _vnc_mapping(engine, vm_id))


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
    nat = _software_nat(settings)
    with session_scope(engine) as s:
        vm = _get_vm(s, vm_id)
        active = _grants(s, VncAccess.vm_id == vm_id, VncAccess.status == "active")
        mappings = {g.mapping for g in active}
        if vm.host is not None and vm.vnc_port is not None:
            mappings.add(VncMapping(vm_id, vm.vnc_port, vm.host.address, vm.vnc_port))
    changed = 0
    if nat is not None:
        target = _target(nat, settings)
        changed = sum(_remove(nat, target, m) for m in mappings)
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
    nat = _software_nat(settings)
    target = _target(nat, settings) if nat is not None else None
    if nat is not None and target is not None:
        for mapping in {g.mapping for g in stale} - new:
            _remove(nat, target, mapping)
        for mapping in new:
            _create(nat, target, mapping)
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
    if nat is not None and target is not None:
        for mapping in new:  # grants the expiry job ended meanwhile lose their rules
            if mapping.public_port not in live:
                _remove(nat, target, mapping)
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
    nat = _software_nat(settings)
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
    if nat is not None:
        try:
            _create(nat, _target(nat, settings), mapping)
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
    nat = _software_nat(settings)
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
    target = _target(nat, settings) if nat is not None else None
    for mapping, ids in expired.items():
        if nat is not None and target is not None and mapping not in still_used:
            try:
                _remove(nat, target, mapping)
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
        if nat is not None and target is not None:
            for mapping in removed:
                if mapping in granted:
                    _create(nat, target, mapping)
            for mapping in now_pointing - set(removed) - granted:
                _remove(nat, target, mapping)
    if failure is not None:
        raise failure
    return len(ended)


# --------------------------------------------------------------------------- whole box


def baadal_rules(settings: Settings) -> list[str]:
    """The NAT box's rules that Baadal made (``iptables-save`` lines with its tag)."""
    nat = _software_nat(settings)
    if nat is None:
        return []
    saved = execute_remote_cmd(_target(nat, settings), ["iptables-save", "-t", "nat"]).stdout
    return [line for line in saved.splitlines() if any(map(_is_baadal_tag, _rule_tags(line)))]


def clear_all_nat_mappings(engine: Engine, settings: Settings) -> int:
    """Remove every Baadal-tagged rule, and the /32 aliases of pool public IPs and vnc_ip,
    from the NAT box; other rules and addresses stay. The database is not changed, so
    :func:`reapply_nat_mappings` restores everything. Returns how many things went."""
    nat = _software_nat(settings)
    if nat is None:
        return 0
    with session_scope(engine) as s:
        ours = set(s.scalars(select(PublicIpPool.public_ip))) | {nat.vnc_ip}
    target = _target(nat, settings)
    saved = execute_remote_cmd(target, ["iptables-save", "-t", "nat"]).stdout
    commands = tagged_rule_deletions(saved)
    public = f"{TAG_PREFIX}public:"
    ours |= {w.removeprefix(public) for argv in commands for w in argv if w.startswith(public)}
    for argv in commands:
        execute_remote_cmd(target, argv)
    aliases = [
        ip for ip, prefix in _addresses(target, nat.public_interface).items()
        if prefix == 32 and ip in ours and ip != nat.ip
    ]  # fmt: skip
    for ip in aliases:
        execute_remote_cmd(target, alias_del_argv(ip, nat.public_interface))
    log.info("NAT box %s cleared: %d rule(s), %d alias(es)", nat.ip, len(commands), len(aliases))
    return len(commands) + len(aliases)


def reapply_nat_mappings(engine: Engine, settings: Settings) -> int:
    """Re-create from the database every VM's public IP mapping and every active VNC grant
    (after a NAT box reboot or a clear). Returns how many rules/aliases were added."""
    nat = _software_nat(settings)
    if nat is None:
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
    target = _target(nat, settings)
    return sum(_create(nat, target, m) for m in mappings)
