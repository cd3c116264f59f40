"""Pools on SQLite in one process: every refusal leaves the pools as they were, claims are
idempotent, exhausted pools say so, and the admin CLI fails with one line and exit 2."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, delete, func, select
from sqlalchemy.exc import IntegrityError
from typer.testing import CliRunner

from baadal import address_pools
from baadal import constants as C
from baadal.cli.main import app
from baadal.config import get_settings
from baadal.db.constants_table import update_constant
from baadal.db.models import (
    VM,
    Constant,
    Host,
    PrivateIpPool,
    PublicIpPool,
    SecurityDomain,
    Vlan,
)
from baadal.db.session import dispose_engines, session_scope
from baadal.errors import (
    ConfigError,
    ConflictError,
    NotFoundError,
    ResourceExhausted,
    ValidationError,
)
from baadal.services import pools
from baadal.services.policy import SYSTEM

pytestmark = pytest.mark.unit

MAC_RE = re.compile(r"^A2:00:00(:[0-9A-F]{2}){3}$")


def _counts(engine: Engine) -> tuple[int, int, int]:
    with session_scope(engine) as s:
        return (
            s.scalar(select(func.count()).select_from(Vlan)) or 0,
            s.scalar(select(func.count()).select_from(PrivateIpPool)) or 0,
            s.scalar(select(func.count()).select_from(PublicIpPool)) or 0,
        )


def _vlan(engine: Engine, name: str = "research", tag: int = 10, cidr: str = "10.0.1.0/24") -> int:
    with session_scope(engine) as s:
        return address_pools.create_vlan(s, name, tag, cidr).id


def _host(engine: Engine, name: str = "h1") -> int:
    with session_scope(engine) as s:
        host = Host(host_name=name, address="10.9.8.7", CPUs=4, libvirt_uri=f"test:///{name}")
        s.add(host)
        s.flush()
        return host.id


def _vms(engine: Engine, n: int, prefix: str = "vm", host_id: int | None = None) -> list[int]:
    with session_scope(engine) as s:
        vms = [
            VM(
                vm_name=f"{prefix}{i}",
                vm_identity=f"ADMIN_u_{prefix}{i}",
                RAM=512,
                vCPU=1,
                host_id=host_id,
            )
            for i in range(n)
        ]
        s.add_all(vms)
        s.flush()
        return [vm.id for vm in vms]


@pytest.fixture
def vlan_id(sqlite_engine: Engine) -> int:
    return _vlan(sqlite_engine)


# --- create_vlan ------------------------------------------------------------------


def test_create_vlan_stores_the_normalised_network(sqlite_engine: Engine) -> None:
    with session_scope(sqlite_engine) as s:
        vlan = address_pools.create_vlan(s, "research", 3, "10.0.3.0/24")
        assert (vlan.name, vlan.vlan_tag, vlan.vlan_addr) == ("research", 3, "10.0.3.0/24")
    assert _counts(sqlite_engine) == (1, 0, 0)


@pytest.mark.parametrize(
    ("name", "tag", "cidr", "error", "match"),
    [
        ("v", 0, "10.9.0.0/24", ValidationError, "VLAN id 0 is out of range 1..4094"),
        ("v", 4095, "10.9.0.0/24", ValidationError, "VLAN id 4095 is out of range"),
        ("v", True, "10.9.0.0/24", ValidationError, "out of range"),
        ("v", 20, "10.9.0.1/24", ValidationError, "not a valid IPv4 network"),
        ("v", 20, "10.9.0.0/33", ValidationError, "not a valid IPv4 network"),
        ("v", 20, "banana", ValidationError, "not a valid IPv4 network"),
        ("v", 20, "10.9.0.0/31", ValidationError, "too small"),
        ("", 20, "10.9.0.0/24", ValidationError, "1-30 characters"),
        ("x" * 31, 20, "10.9.0.0/24", ValidationError, "1-30 characters"),
        ("bad name", 20, "10.9.0.0/24", ValidationError, "may contain only"),
        ("research", 20, "10.9.0.0/24", ConflictError, "VLAN 'research' already exists"),
        (
            "other",
            10,
            "10.9.0.0/24",
            ConflictError,
            "VLAN id 10 is already used by VLAN 'research'",
        ),
        ("other", 20, "10.0.0.0/16", ConflictError, "overlaps VLAN 'research' \\(10.0.1.0/24\\)"),
        ("other", 20, "10.0.1.128/25", ConflictError, "overlaps VLAN 'research'"),
    ],
)
def test_create_vlan_refuses_bad_or_clashing_input(
    sqlite_engine: Engine, vlan_id: int, name: str, tag: int, cidr: str, error: type, match: str
) -> None:
    with pytest.raises(error, match=match), session_scope(sqlite_engine) as s:
        address_pools.create_vlan(s, name, tag, cidr)
    assert _counts(sqlite_engine) == (1, 0, 0)


def test_adjacent_networks_do_not_overlap(sqlite_engine: Engine, vlan_id: int) -> None:
    _vlan(sqlite_engine, "next", 11, "10.0.2.0/24")
    assert _counts(sqlite_engine) == (2, 0, 0)


# --- add_private_ips / add_public_ips ----------------------------------------------


def test_add_private_ips_generates_unique_macs(sqlite_engine: Engine, vlan_id: int) -> None:
    with session_scope(sqlite_engine) as s:
        assert address_pools.add_private_ips(s, vlan_id, "10.0.1.1", "10.0.1.254") == 254
    with session_scope(sqlite_engine) as s:
        rows = s.execute(
            select(
                PrivateIpPool.private_ip,
                PrivateIpPool.mac_addr,
                PrivateIpPool.vlan_id,
                PrivateIpPool.is_active,
            )
        ).all()
    assert len(rows) == 254
    assert {r[0] for r in rows} == {f"10.0.1.{i}" for i in range(1, 255)}
    assert len({r[1] for r in rows}) == 254
    assert all(MAC_RE.match(r[1]) for r in rows)
    assert {(r[2], r[3]) for r in rows} == {(vlan_id, True)}


def test_given_macs_are_normalised_and_kept_in_order(sqlite_engine: Engine, vlan_id: int) -> None:
    with session_scope(sqlite_engine) as s:
        address_pools.add_private_ips(
            s, vlan_id, "10.0.1.10", "10.0.1.11", ["02-aa-bb-cc-dd-01", "02:AA:bb:CC:dd:02"]
        )
    with session_scope(sqlite_engine) as s:
        rows = s.execute(
            select(PrivateIpPool.private_ip, PrivateIpPool.mac_addr).order_by(PrivateIpPool.id)
        ).all()
    assert [tuple(r) for r in rows] == [
        ("10.0.1.10", "02:AA:BB:CC:DD:01"),
        ("10.0.1.11", "02:AA:BB:CC:DD:02"),
    ]


def test_a_mac_with_a_trailing_newline_is_refused(sqlite_engine: Engine, vlan_id: int) -> None:
    """'$' matched before a final newline: the MAC passed the uniqueness check as a new
    value, two VMs got one MAC and the DHCP hosts file got a split line (issue 12 item 7)."""
    with session_scope(sqlite_engine) as s:
        address_pools.add_private_ips(s, vlan_id, "10.0.1.10", "10.0.1.10", ["02:00:00:00:00:01"])
    with session_scope(sqlite_engine) as s, pytest.raises(ValidationError, match="not a valid MAC"):
        address_pools.add_private_ips(s, vlan_id, "10.0.1.11", "10.0.1.11", ["02:00:00:00:00:01\n"])
    assert _counts(sqlite_engine) == (1, 1, 0)


@pytest.fixture
def filled(sqlite_engine: Engine, vlan_id: int) -> int:
    """VLAN 10.0.1.0/24 holding .20-.29 (first MAC 02:00:00:00:00:20), public 192.0.2.1-10."""
    macs = [f"02:00:00:00:00:{20 + i}" for i in range(10)]
    with session_scope(sqlite_engine) as s:
        address_pools.add_private_ips(s, vlan_id, "10.0.1.20", "10.0.1.29", macs)
        address_pools.add_public_ips(s, "192.0.2.1", "192.0.2.10")
    assert _counts(sqlite_engine) == (1, 10, 10)
    return vlan_id


@pytest.mark.parametrize(
    ("ip_from", "ip_to", "macs", "error", "match"),
    [
        ("10.0.1.300", "10.0.1.5", None, ValidationError, "'10.0.1.300' is not a valid IPv4"),
        ("10.0.1.5", "banana", None, ValidationError, "'banana' is not a valid IPv4"),
        ("10.0.1.05", "10.0.1.9", None, ValidationError, "not a valid IPv4"),
        ("10.0.1.9", "10.0.1.5", None, ValidationError, "reversed"),
        ("10.0.1.250", "10.0.2.3", None, ValidationError, "10.0.2.3 is outside VLAN 'research'"),
        ("10.0.0.250", "10.0.1.3", None, ValidationError, "10.0.0.250 is outside"),
        ("10.0.1.0", "10.0.1.5", None, ValidationError, "10.0.1.0 is the network address"),
        ("10.0.1.250", "10.0.1.255", None, ValidationError, "10.0.1.255 is the broadcast address"),
        (
            "10.0.1.15",
            "10.0.1.25",
            None,
            ConflictError,
            "10.0.1.20 is already in the private IP pool \\(and 5 more\\)",
        ),
        (
            "10.0.1.29",
            "10.0.1.40",
            None,
            ConflictError,
            "^10.0.1.29 is already in the private IP pool$",
        ),
        (
            "10.0.1.30",
            "10.0.1.31",
            ["02:00:00:00:01:01"],
            ValidationError,
            "1 MAC addresses given for 2",
        ),
        (
            "10.0.1.30",
            "10.0.1.31",
            ["02:00:00:00:01:01", "nonsense"],
            ValidationError,
            "'nonsense' is not a valid MAC",
        ),
        (
            "10.0.1.30",
            "10.0.1.31",
            ["02:00:00:00:01:01", "02:00:00:00:01:0G"],
            ValidationError,
            "not a valid MAC",
        ),
        (
            "10.0.1.30",
            "10.0.1.31",
            ["02:00:00:00:01:01", "03:00:00:00:01:02"],
            ValidationError,
            "multicast",
        ),
        (
            "10.0.1.30",
            "10.0.1.31",
            ["02:00:00:00:01:01", "02-00-00-00-01-01"],
            ValidationError,
            "02:00:00:00:01:01 is given twice",
        ),
        (
            "10.0.1.30",
            "10.0.1.31",
            ["02:00:00:00:01:01", "02:00:00:00:00:20"],
            ConflictError,
            "MAC address 02:00:00:00:00:20 is already",
        ),
    ],
)
def test_add_private_ips_refuses_and_adds_nothing(
    sqlite_engine: Engine,
    filled: int,
    ip_from: str,
    ip_to: str,
    macs: list[str] | None,
    error: type,
    match: str,
) -> None:
    with pytest.raises(error, match=match), session_scope(sqlite_engine) as s:
        address_pools.add_private_ips(s, filled, ip_from, ip_to, macs)
    assert _counts(sqlite_engine) == (1, 10, 10)


def test_private_range_clashing_with_public_pool_adds_nothing(
    sqlite_engine: Engine, filled: int
) -> None:
    with session_scope(sqlite_engine) as s:
        dmz = address_pools.create_vlan(s, "dmz", 30, "192.0.2.0/24").id
    with (
        pytest.raises(ConflictError, match=r"^192\.0\.2\.10 is already in the public IP pool$"),
        session_scope(sqlite_engine) as s,
    ):
        address_pools.add_private_ips(s, dmz, "192.0.2.10", "192.0.2.40")
    assert _counts(sqlite_engine) == (2, 10, 10)


def test_refusal_inside_a_bigger_transaction_keeps_earlier_work(
    sqlite_engine: Engine, filled: int
) -> None:
    """The caller owns the transaction: a refused range does not undo what came before."""
    with session_scope(sqlite_engine) as s:
        address_pools.add_public_ips(s, "198.51.100.1", "198.51.100.3")
        with pytest.raises(ConflictError):
            address_pools.add_public_ips(s, "192.0.2.9", "192.0.2.12")
    assert _counts(sqlite_engine) == (1, 10, 13)


def test_unknown_vlan(sqlite_engine: Engine) -> None:
    with (
        pytest.raises(NotFoundError, match="no VLAN with id 99"),
        session_scope(sqlite_engine) as s,
    ):
        address_pools.add_private_ips(s, 99, "10.0.1.1", "10.0.1.2")
    with (
        pytest.raises(NotFoundError, match="no VLAN named 'nope'"),
        session_scope(sqlite_engine) as s,
    ):
        address_pools.get_vlan_by_name(s, "nope")


@pytest.mark.parametrize(
    ("ip_from", "ip_to", "match"),
    [
        ("192.0.2.256", "192.0.2.9", "not a valid IPv4"),
        ("192.0.2.9", "192.0.2.1", "reversed"),
        ("10.0.0.0", "10.1.0.0", "larger than 65536"),
        (
            "192.0.2.8",
            "192.0.2.20",
            "^192.0.2.8 is already in the public IP pool \\(and 2 more\\)$",
        ),
        ("10.0.1.25", "10.0.1.25", r"^10.0.1.25 cannot .*: it is inside VLAN 'research' \("),
        # issue 12 item 9: addresses that can never be a VM's public one
        ("0.0.0.0", "0.0.0.0", r"^0.0.0.0 cannot be a public IP: it is an unspecified"),
        ("0.255.255.250", "1.0.0.3", "^0.255.255.250 cannot .*unspecified"),
        ("255.255.255.255", "255.255.255.255", "reserved or broadcast"),
        ("240.0.0.1", "240.0.0.1", "reserved or broadcast"),
        ("127.0.0.1", "127.0.0.1", "a loopback address"),
        ("224.0.0.1", "224.0.0.9", "a multicast address"),
        ("169.254.1.1", "169.254.1.1", "a link-local address"),
        ("10.0.0.250", "10.0.1.3", r"^10.0.1.0 cannot .*: it is inside VLAN 'research' \(10.0.1"),
        ("10.0.1.255", "10.0.1.255", "inside VLAN 'research'"),  # its broadcast, not in the pool
    ],
)
def test_add_public_ips_refuses_and_adds_nothing(
    sqlite_engine: Engine, filled: int, ip_from: str, ip_to: str, match: str
) -> None:
    with pytest.raises(BaseException, match=match) as info, session_scope(sqlite_engine) as s:
        address_pools.add_public_ips(s, ip_from, ip_to)
    assert isinstance(info.value, ValidationError | ConflictError)
    assert _counts(sqlite_engine) == (1, 10, 10)


def test_public_ips_next_to_special_networks_and_vlans_are_accepted(
    sqlite_engine: Engine, filled: int
) -> None:
    with session_scope(sqlite_engine) as s:
        assert address_pools.add_public_ips(s, "10.0.0.254", "10.0.0.255") == 2  # below research's
        assert address_pools.add_public_ips(s, "10.0.2.0", "10.0.2.0") == 1  # above it
        assert address_pools.add_public_ips(s, "223.255.255.255", "223.255.255.255") == 1


# --- private IPs --------------------------------------------------------------------


def test_allocate_release_reallocate(sqlite_engine: Engine, filled: int) -> None:
    a, b = _vms(sqlite_engine, 2)
    with session_scope(sqlite_engine) as s:
        first = address_pools.allocate_private_ip(s, a, filled)
    assert first.vlan_name == "research" and first.vlan_tag == 10
    assert 20 <= int(first.private_ip.rsplit(".", 1)[1]) <= 29
    with session_scope(sqlite_engine) as s:
        row = s.get(PrivateIpPool, first.pool_id)
        assert (row.private_ip, row.mac_addr) == (first.private_ip, first.mac_addr)
        assert s.get(VM, a).private_ip_id == first.pool_id
    with session_scope(sqlite_engine) as s:
        assert address_pools.release_private_ip(s, a) == first.private_ip
        assert address_pools.release_private_ip(s, a) is None
    with session_scope(sqlite_engine) as s:
        assert s.get(VM, a).private_ip_id is None
        assert pools.list_vlans(s, SYSTEM).items[0].free == 10
        again = address_pools.allocate_private_ip(s, b, filled)
        assert s.get(VM, b).private_ip_id == again.pool_id
    with session_scope(sqlite_engine) as s:
        owners = s.execute(
            select(VM.id, VM.private_ip_id).where(VM.private_ip_id.is_not(None))
        ).all()
    assert [tuple(o) for o in owners] == [(b, again.pool_id)]


def test_allocate_is_idempotent(sqlite_engine: Engine, filled: int) -> None:
    (vm,) = _vms(sqlite_engine, 1)
    with session_scope(sqlite_engine) as s:
        first = address_pools.allocate_private_ip(s, vm, filled)
    with session_scope(sqlite_engine) as s:
        assert address_pools.allocate_private_ip(s, vm, filled) == first
        assert pools.list_vlans(s, SYSTEM).items[0].used == 1


def test_allocate_rolls_back_with_the_callers_transaction(
    sqlite_engine: Engine, filled: int
) -> None:
    (vm,) = _vms(sqlite_engine, 1)
    with pytest.raises(RuntimeError), session_scope(sqlite_engine) as s:
        address_pools.allocate_private_ip(s, vm, filled)
        raise RuntimeError("VM install failed")
    with session_scope(sqlite_engine) as s:
        assert s.get(VM, vm).private_ip_id is None


def test_exhausted_pool_skips_hosts_and_inactive_rows(sqlite_engine: Engine, filled: int) -> None:
    with session_scope(sqlite_engine) as s:
        rows = list(s.scalars(select(PrivateIpPool).order_by(PrivateIpPool.id)))
        rows[0].is_active = False
        s.add(
            Host(
                host_name="h1",
                address="10.0.1.21",
                host_ip_id=rows[1].id,
                CPUs=4,
                libvirt_uri="qemu:///system",
            )
        )
        skipped = {rows[0].private_ip, rows[1].private_ip}
    vms = _vms(sqlite_engine, 9)
    got = []
    with session_scope(sqlite_engine) as s:
        for vm in vms[:8]:
            got.append(address_pools.allocate_private_ip(s, vm, filled).private_ip)
    assert len(set(got)) == 8 and not skipped & set(got)
    with (
        pytest.raises(ResourceExhausted, match=r"^no free private IP left in VLAN research$"),
        session_scope(sqlite_engine) as s,
    ):
        address_pools.allocate_private_ip(s, vms[8], filled)
    with session_scope(sqlite_engine) as s:
        (usage,) = pools.list_vlans(s, SYSTEM).items
    assert (usage.total, usage.used, usage.free) == (10, 9, 0)


def test_vm_with_an_address_in_another_vlan_is_refused(sqlite_engine: Engine, filled: int) -> None:
    other = _vlan(sqlite_engine, "infra", 2, "10.0.2.0/24")
    with session_scope(sqlite_engine) as s:
        address_pools.add_private_ips(s, other, "10.0.2.5", "10.0.2.5")
    (vm,) = _vms(sqlite_engine, 1)
    with session_scope(sqlite_engine) as s:
        address_pools.allocate_private_ip(s, vm, filled)
    with (
        pytest.raises(ConflictError, match=r"already has 10\.0\.1\.2\d in VLAN 'research'"),
        session_scope(sqlite_engine) as s,
    ):
        address_pools.allocate_private_ip(s, vm, other)


def test_get_private_ip_mac_uses_the_security_domains_vlan(
    sqlite_engine: Engine, filled: int
) -> None:
    other = _vlan(sqlite_engine, "infra", 2, "10.0.2.0/24")
    with session_scope(sqlite_engine) as s:
        address_pools.add_private_ips(s, other, "10.0.2.5", "10.0.2.5")
        domain = SecurityDomain(name="Infrastructure", vlan_id=other, visible_to_all=False)
        s.add(domain)
        s.flush()
        domain_id = domain.id
    (vm,) = _vms(sqlite_engine, 1)
    with session_scope(sqlite_engine) as s:
        got = address_pools.get_private_ip_mac(s, vm, domain_id)
    assert (got.private_ip, got.vlan_name, got.vlan_tag) == ("10.0.2.5", "infra", 2)
    with (
        pytest.raises(NotFoundError, match="no security domain with id 999"),
        session_scope(sqlite_engine) as s,
    ):
        address_pools.get_private_ip_mac(s, vm, 999)


def test_unknown_vm(sqlite_engine: Engine, filled: int) -> None:
    for call in (
        lambda s: address_pools.allocate_private_ip(s, 404, filled),
        lambda s: address_pools.allocate_public_ip(s, 404),
        lambda s: address_pools.allocate_vnc_port(s, 404),
        lambda s: address_pools.release_private_ip(s, 404),
    ):
        with (
            pytest.raises(NotFoundError, match="no VM with id 404"),
            session_scope(sqlite_engine) as s,
        ):
            call(s)


# --- public IPs -------------------------------------------------------------------


def test_public_ips_skip_inactive_and_host_rows(sqlite_engine: Engine) -> None:
    with session_scope(sqlite_engine) as s:
        address_pools.add_public_ips(s, "192.0.2.1", "192.0.2.4")
        rows = list(s.scalars(select(PublicIpPool).order_by(PublicIpPool.id)))
        rows[0].is_active = False
        s.add(
            Host(
                host_name="h1",
                address="10.9.9.9",
                public_ip_id=rows[1].id,
                CPUs=4,
                libvirt_uri="qemu:///system",
            )
        )
    vms = _vms(sqlite_engine, 3)
    with session_scope(sqlite_engine) as s:
        got = {address_pools.allocate_public_ip(s, vm) for vm in vms[:2]}
        assert address_pools.allocate_public_ip(s, vms[0]) in got  # idempotent
    assert got == {"192.0.2.3", "192.0.2.4"}
    with (
        pytest.raises(ResourceExhausted, match=r"^no free public IP left$"),
        session_scope(sqlite_engine) as s,
    ):
        address_pools.allocate_public_ip(s, vms[2])
    with session_scope(sqlite_engine) as s:
        released = address_pools.release_public_ip(s, vms[0])
        assert released in got
        assert address_pools.release_public_ip(s, vms[0]) is None
    with session_scope(sqlite_engine) as s:
        assert address_pools.allocate_public_ip(s, vms[2]) == released
        usage = address_pools.pool_usage(s)
    assert (usage.public_total, usage.public_used, usage.public_free) == (4, 3, 0)


# --- VNC ports ----------------------------------------------------------------------


def test_vnc_ports_come_from_the_constants_range(sqlite_engine: Engine) -> None:
    with session_scope(sqlite_engine) as s:
        update_constant(s, "vncport_start_range", "31000")
        update_constant(s, "vncport_end_range", "31002")
    vms = _vms(sqlite_engine, 4, host_id=_host(sqlite_engine))
    with session_scope(sqlite_engine) as s:
        ports = [address_pools.allocate_vnc_port(s, vm) for vm in vms[:3]]
        assert address_pools.allocate_vnc_port(s, vms[0]) == ports[0]  # idempotent
    assert sorted(ports) == [31000, 31001, 31002]
    with (
        pytest.raises(
            ResourceExhausted, match=r"^no free VNC port left in 31000-31002 on its host$"
        ),
        session_scope(sqlite_engine) as s,
    ):
        address_pools.allocate_vnc_port(s, vms[3])
    with session_scope(sqlite_engine) as s:
        assert address_pools.release_vnc_port(s, vms[1]) == ports[1]
        assert address_pools.release_vnc_port(s, vms[1]) is None
    with session_scope(sqlite_engine) as s:
        assert address_pools.allocate_vnc_port(s, vms[3]) == ports[1]
        assert address_pools.pool_usage(s).vnc_used == 3


def test_vnc_range_defaults_without_constants(sqlite_engine: Engine) -> None:
    with session_scope(sqlite_engine) as s:
        s.execute(delete(Constant).where(Constant.name.like("vncport_%")))
    (vm,) = _vms(sqlite_engine, 1, host_id=_host(sqlite_engine))
    with session_scope(sqlite_engine) as s:
        assert address_pools.vnc_port_range(s) == C.VNC_PORT_RANGE
        port = address_pools.allocate_vnc_port(s, vm)
    assert C.VNC_PORT_RANGE[0] <= port <= C.VNC_PORT_RANGE[1]


@pytest.mark.parametrize(
    ("start", "end", "match"),
    [
        ("abc", "31000", "vncport_start_range='abc' is not a port"),
        ("31000", "70000", "70000 is not a port"),
        ("31001", "31000", "reversed"),
    ],
)
def test_bad_vnc_constants_are_a_config_error(
    sqlite_engine: Engine, start: str, end: str, match: str
) -> None:
    with session_scope(sqlite_engine) as s:
        update_constant(s, "vncport_start_range", start)
        update_constant(s, "vncport_end_range", end)
    (vm,) = _vms(sqlite_engine, 1, host_id=_host(sqlite_engine))
    with pytest.raises(ConfigError, match=match), session_scope(sqlite_engine) as s:
        address_pools.allocate_vnc_port(s, vm)


def test_vnc_ports_are_unique_per_host_not_cloud_wide(sqlite_engine: Engine) -> None:
    with session_scope(sqlite_engine) as s:
        update_constant(s, "vncport_start_range", "31000")
        update_constant(s, "vncport_end_range", "31001")
    h1, h2 = _host(sqlite_engine, "h1"), _host(sqlite_engine, "h2")
    on_h1 = _vms(sqlite_engine, 3, "a", host_id=h1)
    on_h2 = _vms(sqlite_engine, 2, "b", host_id=h2)
    with session_scope(sqlite_engine) as s:
        first = [address_pools.allocate_vnc_port(s, vm) for vm in on_h1[:2]]
        second = [address_pools.allocate_vnc_port(s, vm) for vm in on_h2]
    # both hosts use the whole range; on one host a port is never held twice
    assert sorted(first) == sorted(second) == [31000, 31001]
    with (
        pytest.raises(ResourceExhausted, match="no free VNC port left in 31000-31001"),
        session_scope(sqlite_engine) as s,
    ):
        address_pools.allocate_vnc_port(s, on_h1[2])
    with pytest.raises(IntegrityError), session_scope(sqlite_engine) as s:
        s.get(VM, on_h1[2]).vnc_port = first[0]  # the constraint, not only the allocator
    with session_scope(sqlite_engine) as s:
        usage = address_pools.pool_usage(s)
    assert (usage.vnc_used, usage.vnc_used_busiest_host) == (4, 2)


def test_the_lowest_free_port_is_found_when_random_picks_miss(
    sqlite_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A nearly full host: one query finds the gap (no list of every used port)."""
    with session_scope(sqlite_engine) as s:
        update_constant(s, "vncport_start_range", "32000")
        update_constant(s, "vncport_end_range", "32009")
    host = _host(sqlite_engine)
    vms = _vms(sqlite_engine, 10, host_id=host)
    with session_scope(sqlite_engine) as s:
        for port, vm in zip(range(32000, 32010), vms, strict=True):
            s.get(VM, vm).vnc_port = port
    with session_scope(sqlite_engine) as s:
        s.get(VM, vms[6]).vnc_port = None
    monkeypatch.setattr(address_pools._rng, "randint", lambda a, b: 32000)  # always taken
    with session_scope(sqlite_engine) as s:
        assert address_pools.allocate_vnc_port(s, vms[6]) == 32006


def test_a_vnc_port_needs_a_host(sqlite_engine: Engine) -> None:
    (vm,) = _vms(sqlite_engine, 1)
    with (
        pytest.raises(ConflictError, match="not placed on a host"),
        session_scope(sqlite_engine) as s,
    ):
        address_pools.allocate_vnc_port(s, vm)


# --- removal ------------------------------------------------------------------------


def test_remove_refuses_a_range_in_use_as_a_whole(sqlite_engine: Engine, filled: int) -> None:
    (vm,) = _vms(sqlite_engine, 1)
    with session_scope(sqlite_engine) as s:
        ip = address_pools.allocate_private_ip(s, vm, filled).private_ip
        public = address_pools.allocate_public_ip(s, vm)
    with (
        pytest.raises(ConflictError, match=f"^{ip} is used by VM 'vm0'; nothing removed$"),
        session_scope(sqlite_engine) as s,
    ):
        address_pools.remove_private_ips(s, "10.0.1.1", "10.0.1.254")
    with (
        pytest.raises(ConflictError, match=f"^{public} is used by VM 'vm0'"),
        session_scope(sqlite_engine) as s,
    ):
        address_pools.remove_public_ips(s, "192.0.2.1", "192.0.2.10")
    assert _counts(sqlite_engine) == (1, 10, 10)
    with session_scope(sqlite_engine) as s:
        address_pools.release_private_ip(s, vm)
        address_pools.release_public_ip(s, vm)
    with session_scope(sqlite_engine) as s:
        assert address_pools.remove_private_ips(s, "10.0.1.1", "10.0.1.24") == 5
        assert address_pools.remove_public_ips(s, "192.0.2.1", "192.0.2.10") == 10
    assert _counts(sqlite_engine) == (1, 5, 0)


def test_remove_refuses_host_addresses_and_empty_ranges(sqlite_engine: Engine, filled: int) -> None:
    with session_scope(sqlite_engine) as s:
        row = s.scalar(select(PrivateIpPool).where(PrivateIpPool.private_ip == "10.0.1.22"))
        s.add(
            Host(
                host_name="h1",
                address="10.0.1.22",
                host_ip_id=row.id,
                CPUs=4,
                libvirt_uri="qemu:///system",
            )
        )
    with (
        pytest.raises(ConflictError, match=r"^10\.0\.1\.22 is used by host 'h1'"),
        session_scope(sqlite_engine) as s,
    ):
        address_pools.remove_private_ips(s, "10.0.1.20", "10.0.1.29")
    with (
        pytest.raises(NotFoundError, match="no private IP in range"),
        session_scope(sqlite_engine) as s,
    ):
        address_pools.remove_private_ips(s, "10.0.1.100", "10.0.1.110")
    with pytest.raises(ValidationError, match="reversed"), session_scope(sqlite_engine) as s:
        address_pools.remove_public_ips(s, "192.0.2.9", "192.0.2.1")
    assert _counts(sqlite_engine) == (1, 10, 10)


# --- CLI ----------------------------------------------------------------------------


@pytest.fixture
def cli(
    sqlite_engine: Engine, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[CliRunner]:
    """The CLI against the migrated test database, picked like in production (settings)."""
    monkeypatch.setenv("BAADAL_DATABASE__URL", sqlite_url)
    get_settings.cache_clear()
    dispose_engines()
    yield CliRunner()
    get_settings.cache_clear()
    dispose_engines()


def _error_line(result: object) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]  # type: ignore[attr-defined]
    assert len(lines) == 1, result.stderr  # type: ignore[attr-defined]
    return lines[0]


def test_cli_fills_and_lists_the_pools(cli: CliRunner, sqlite_engine: Engine) -> None:
    steps = [
        (
            ["pool", "vlan-add", "research", "--tag", "10", "--cidr", "10.0.1.0/24"],
            "added VLAN research (id 10, 10.0.1.0/24)",
        ),
        (
            ["pool", "private-add", "--vlan", "research", "10.0.1.10", "10.0.1.19"],
            "added 10 private IPs to VLAN research",
        ),
        (["pool", "public-add", "192.0.2.1", "192.0.2.4"], "added 4 public IPs"),
        (["pool", "public-remove", "192.0.2.3", "192.0.2.4"], "removed 2 public IPs"),
        (["pool", "private-remove", "10.0.1.18", "10.0.1.19"], "removed 2 private IPs"),
    ]
    for argv, expected in steps:
        result = cli.invoke(app, argv)
        assert result.exit_code == 0, result.output
        assert result.stdout.strip() == expected
    assert _counts(sqlite_engine) == (1, 8, 2)
    result = cli.invoke(app, ["pool", "list"])
    assert result.exit_code == 0, result.output
    assert re.search(
        r"VLAN research\s*│\s*10\s*│\s*10.0.1.0/24\s*│\s*8\s*│\s*0\s*│\s*8", result.stdout
    )
    assert re.search(r"public\s*│\s*│\s*│\s*2\s*│\s*0\s*│\s*2", result.stdout)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["vlan-add", "v2", "--tag", "0", "--cidr", "10.0.2.0/24"],
            "error: VLAN id 0 is out of range 1..4094",
        ),
        (
            ["vlan-add", "research", "--tag", "11", "--cidr", "10.0.2.0/24"],
            "error: VLAN 'research' already exists",
        ),
        (
            ["vlan-add", "v2", "--tag", "11", "--cidr", "10.0.1.0/25"],
            "error: network 10.0.1.0/25 overlaps VLAN 'research' (10.0.1.0/24)",
        ),
        (
            ["private-add", "--vlan", "research", "10.0.1.300", "10.0.1.5"],
            "error: '10.0.1.300' is not a valid IPv4 address",
        ),
        (
            ["private-add", "--vlan", "research", "10.0.1.9", "10.0.1.5"],
            "error: IP range 10.0.1.9 - 10.0.1.5 is reversed: 10.0.1.9 > 10.0.1.5",
        ),
        (
            ["private-add", "--vlan", "research", "10.0.1.250", "10.0.2.1"],
            "error: 10.0.2.1 is outside VLAN 'research' (10.0.1.0/24)",
        ),
        (
            ["private-add", "--vlan", "research", "10.0.1.5", "10.0.1.15"],
            "error: 10.0.1.10 is already in the private IP pool (and 5 more)",
        ),
        (
            ["private-add", "--vlan", "research", "10.0.1.30", "10.0.1.30", "--mac", "zz"],
            "error: 'zz' is not a valid MAC address",
        ),
        (
            ["private-add", "--vlan", "nope", "10.0.1.30", "10.0.1.31"],
            "error: no VLAN named 'nope'",
        ),
        (
            ["public-add", "10.0.1.15", "10.0.1.30"],
            "error: 10.0.1.15 cannot be a public IP: it is inside VLAN 'research' (10.0.1.0/24)",
        ),
        (
            ["private-remove", "10.0.1.10", "10.0.1.15"],
            "error: 10.0.1.12 is used by VM 'vm0'; nothing removed",
        ),
        (
            ["public-remove", "192.0.2.1", "192.0.2.9"],
            "error: no public IP in range 192.0.2.1 - 192.0.2.9",
        ),
    ],
)
def test_cli_bad_input_is_one_line_exit_2_and_changes_nothing(
    cli: CliRunner, sqlite_engine: Engine, argv: list[str], message: str
) -> None:
    vlan = _vlan(sqlite_engine)
    (vm,) = _vms(sqlite_engine, 1)
    with session_scope(sqlite_engine) as s:
        address_pools.add_private_ips(s, vlan, "10.0.1.10", "10.0.1.15")
        row = s.scalar(select(PrivateIpPool).where(PrivateIpPool.private_ip == "10.0.1.12"))
        s.get(VM, vm).private_ip_id = row.id
    before = _counts(sqlite_engine)
    result = cli.invoke(app, ["pool", *argv])
    assert result.exit_code == 2, result.output
    assert _error_line(result) == message
    assert result.stdout == ""
    assert _counts(sqlite_engine) == before
