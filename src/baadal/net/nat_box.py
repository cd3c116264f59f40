"""The seed's nat_mapper, NAT box side: public IP and VNC console mappings on the NAT box.

Software NAT is iptables over SSH on the NAT box: a public IP is a ``/32`` alias on the
public interface plus a DNAT rule (public -> private) and an SNAT rule (private -> public,
inserted first so it wins over any MASQUERADE); a VNC console is a DNAT rule from
``vnc_ip:<vm vnc_port>`` to ``<host>:<vm vnc_port>`` plus a MASQUERADE towards the host so
hosts need no route back to users. Every rule carries ``-m comment --comment baadal:...``:
Baadal finds and removes only its own rules and never touches anyone else's.

Commands are argument lists built by pure functions. This module never reads the
database: what the database says should be mapped (per VM, VNC grants) is
:mod:`baadal.vm.nat`, which hands plain mappings to the functions here.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import shlex
from dataclasses import dataclass

from baadal import constants as C
from baadal.config import Settings
from baadal.drivers.remote import RemoteTarget, execute_remote_cmd
from baadal.errors import (
    ConfigError,
    ConflictError,
    RemoteCommandError,
    ValidationError,
)

log = logging.getLogger("baadal")

#: every Baadal rule's comment starts with this (the lab's own rules use "baadal-lab")
TAG_PREFIX = "baadal:"
_IFACE_RE = re.compile(r"[A-Za-z0-9_.-]{1,15}")


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
    box = nat_box(settings)
    return None if box is None else box.target


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
    if not isinstance(value, str) or not _IFACE_RE.fullmatch(value):
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


def public_ip_mappings(iptables_save: str) -> set[PublicIpMapping]:
    """The public IP mappings Baadal's tagged DNAT rules make on the box."""
    prefix = f"{TAG_PREFIX}public:"
    found = set()
    for line in iptables_save.splitlines():
        for tag in _rule_tags(line):
            destination = mapped_destination(line, tag) if tag.startswith(prefix) else None
            if destination is not None:
                found.add(PublicIpMapping(tag.removeprefix(prefix), destination))
    return found


@dataclass(frozen=True)
class NatBox:
    """The NAT box Baadal programs (software NAT): its details and its SSH target."""

    details: NatDetails
    target: RemoteTarget

    def create(self, mapping: Mapping) -> int:
        """Add what the mapping lacks; the number of rules and aliases added."""
        nat, target = self.details, self.target
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

    def public_mappings(self) -> set[PublicIpMapping]:
        """The public IP mappings the box has now."""
        return public_ip_mappings(
            execute_remote_cmd(self.target, ["iptables-save", "-t", "nat"]).stdout
        )

    def remove(self, mapping: Mapping) -> int:
        """Take the mapping away; the number of rules and aliases removed."""
        nat, target = self.details, self.target
        if isinstance(mapping, PublicIpMapping):
            changed = _drop_rules(target, public_ip_rules(mapping))
            changed += _drop_alias(target, mapping.public_ip, nat.public_interface)
        else:
            # the vnc_ip alias stays: other consoles share it and it forwards nothing alone
            changed = _drop_rules(target, vnc_rules(mapping, nat.vnc_ip))
        log.info("NAT %s removed: %d change(s) on %s", mapping.tag, changed, nat.ip)
        return changed


def nat_box(settings: Settings) -> NatBox | None:
    """The NAT box Baadal must program; None when it maps nothing."""
    nat = _software_nat(settings)
    return None if nat is None else NatBox(nat, _target(nat, settings))


def create_mapping(settings: Settings, mapping: Mapping) -> int:
    """Create a mapping on the NAT box; returns how many rules/aliases were added (0 when
    it already exists or Baadal maps nothing)."""
    box = nat_box(settings)
    return 0 if box is None else box.create(mapping)


def remove_mapping(settings: Settings, mapping: Mapping) -> int:
    """Remove a mapping from the NAT box; returns how many rules/aliases went (0 if none)."""
    box = nat_box(settings)
    return 0 if box is None else box.remove(mapping)


# --------------------------------------------------------------------------- whole box


def baadal_rules(settings: Settings) -> list[str]:
    """The NAT box's rules that Baadal made (``iptables-save`` lines with its tag)."""
    box = nat_box(settings)
    if box is None:
        return []
    saved = execute_remote_cmd(box.target, ["iptables-save", "-t", "nat"]).stdout
    return [line for line in saved.splitlines() if any(map(_is_baadal_tag, _rule_tags(line)))]


def clear_nat_box(box: NatBox, public_ips: set[str]) -> int:
    """Remove every Baadal-tagged rule, and the /32 aliases of ``public_ips`` (the pool's),
    of the public IPs those rules named and of vnc_ip, from the NAT box; other rules and
    addresses stay. Returns how many things went."""
    nat, target = box.details, box.target
    ours = public_ips | {nat.vnc_ip}
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
