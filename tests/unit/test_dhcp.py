"""DHCP reservations without a DHCP server: formats, edits, conflicts, idempotence, bad
input leaving the file as it was, backend none, concurrent writers, the remote path's
commands, and rebuilding from the database."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import stat
import threading
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from baadal import constants as C
from baadal.config import DhcpConf, Settings
from baadal.db.models import VM, PrivateIpPool, Vlan
from baadal.db.session import session_scope
from baadal.drivers.remote import CommandResult, RemoteTarget
from baadal.errors import ConfigError, ConflictError, ValidationError
from baadal.net import dhcp
from baadal.net.dhcp import (
    DhcpEntry,
    create_dhcp_bulk_entry,
    create_dhcp_entry,
    dhcp_name,
    parse_dnsmasq_hosts,
    parse_isc_hosts,
    read_dhcp_entries,
    rebuild_dhcp_entries,
    remove_dhcp_entry,
    render_dnsmasq_hosts,
    render_isc_hosts,
)
from baadal.vm.network import dhcp_entries_from_db

pytestmark = pytest.mark.unit

A = DhcpEntry("vm-a", "a2:00:00:00:00:01", "10.0.0.11")
B = DhcpEntry("vm-b", "A2-00-00-00-00-02", "10.0.0.12")


def _with_dhcp(settings: Settings, **conf: object) -> Settings:
    return settings.model_copy(update={"dhcp": DhcpConf(**conf)})


@pytest.fixture
def hosts(tmp_path: Path) -> Path:
    return tmp_path / "dhcp" / "hosts"


@pytest.fixture
def dnsmasq(settings: Settings, hosts: Path) -> Settings:
    """dnsmasq backend on a local file, no pid file: the file is all that is wanted."""
    hosts.parent.mkdir()
    return _with_dhcp(settings, backend=C.DhcpBackend.DNSMASQ, hosts_file=str(hosts))


@pytest.fixture
def isc(settings: Settings, tmp_path: Path) -> Settings:
    return _with_dhcp(
        settings,
        backend=C.DhcpBackend.ISC,
        isc_conf_file=str(tmp_path / "baadal-hosts.conf"),
        isc_reload_command=[],
    )


# --------------------------------------------------------------------------- entries


def test_entry_normalises_mac() -> None:
    assert A.mac == "A2:00:00:00:00:01"
    assert B.mac == "A2:00:00:00:00:02"
    assert DhcpEntry("vm-a", "A2:00:00:00:00:01", "10.0.0.11") == A


@pytest.mark.parametrize(
    ("name", "mac", "ip", "message"),
    [
        ("", "a2:00:00:00:00:01", "10.0.0.1", "DHCP host name"),
        ("-vm", "a2:00:00:00:00:01", "10.0.0.1", "DHCP host name"),
        ("vm a", "a2:00:00:00:00:01", "10.0.0.1", "DHCP host name"),
        ("vm,a", "a2:00:00:00:00:01", "10.0.0.1", "DHCP host name"),
        ("vm;a", "a2:00:00:00:00:01", "10.0.0.1", "DHCP host name"),
        ("vm{a}", "a2:00:00:00:00:01", "10.0.0.1", "DHCP host name"),
        ("vm..a", "a2:00:00:00:00:01", "10.0.0.1", "DHCP host name"),
        ("vm.", "a2:00:00:00:00:01", "10.0.0.1", "DHCP host name"),
        ("x" * 64, "a2:00:00:00:00:01", "10.0.0.1", "DHCP host name"),
        ("vm\na", "a2:00:00:00:00:01", "10.0.0.1", "DHCP host name"),
        ("vm", "a2:00:00:00:00", "10.0.0.1", "not a valid MAC"),
        ("vm", "a2:00:00:00:00:01,x", "10.0.0.1", "not a valid MAC"),
        ("vm", "01:00:5e:00:00:01", "10.0.0.1", "multicast"),
        ("vm", "a2:00:00:00:00:01", "10.0.0.256", "not a valid IPv4"),
        ("vm", "a2:00:00:00:00:01", "10.0.0.1/24", "not a valid IPv4"),
        ("vm", "a2:00:00:00:00:01", "", "not a valid IPv4"),
    ],
)
def test_entry_rejects_bad_fields(name: str, mac: str, ip: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        DhcpEntry(name, mac, ip)


def test_entry_accepts_names_both_servers_take() -> None:
    for name in ("vm", "ORG_user_vm-1", "a.b-c.d_e", "123", "x" * 63):
        assert DhcpEntry(name, "a2:00:00:00:00:01", "10.0.0.1").name == name


def test_dhcp_name_makes_any_identity_valid() -> None:
    assert dhcp_name("IITD_alice_web-1") == "IITD_alice_web-1"
    assert dhcp_name("IITD_alice_my vm.v2") == "IITD_alice_my-vm-v2"
    assert dhcp_name("_x") == "vm-_x"
    assert dhcp_name("") == "vm"
    long_a, long_b = "O_u_" + "a" * 90, "O_u_" + "a" * 89 + "b"
    assert len(dhcp_name(long_a)) == 63
    assert dhcp_name(long_a) != dhcp_name(long_b)
    for identity in ("é", "a" * 200, "--", "x,y;z{}"):
        DhcpEntry(dhcp_name(identity), "a2:00:00:00:00:01", "10.0.0.1")


# --------------------------------------------------------------------------- formats


def test_dnsmasq_render_and_parse_round_trip() -> None:
    text = render_dnsmasq_hosts([A, B])
    lines = [line for line in text.splitlines() if not line.startswith("#")]
    assert lines == ["A2:00:00:00:00:01,10.0.0.11,vm-a", "A2:00:00:00:00:02,10.0.0.12,vm-b"]
    assert parse_dnsmasq_hosts(text) == [A, B]
    assert parse_dnsmasq_hosts("") == []


def test_isc_render_and_parse_round_trip() -> None:
    text = render_isc_hosts([A, B])
    lines = [line for line in text.splitlines() if not line.startswith("#")]
    assert lines == [
        "host vm-a { hardware ethernet A2:00:00:00:00:01; fixed-address 10.0.0.11; }",
        "host vm-b { hardware ethernet A2:00:00:00:00:02; fixed-address 10.0.0.12; }",
    ]
    assert parse_isc_hosts(text) == [A, B]


@pytest.mark.parametrize(
    "text",
    ["a2:00:00:00:00:01,10.0.0.1\n", "a2:00:00:00:00:01,10.0.0.1,vm,extra\n", "zz,10.0.0.1,vm\n"],
)
def test_dnsmasq_parse_names_the_bad_line(text: str) -> None:
    with pytest.raises(ValidationError, match="line 2"):
        parse_dnsmasq_hosts("# header\n" + text)


def test_isc_parse_rejects_foreign_statements() -> None:
    with pytest.raises(ValidationError, match="line 1"):
        parse_isc_hosts('option domain-name "x";\n')


# --------------------------------------------------------------------------- edits


def test_create_and_remove(dnsmasq: Settings, hosts: Path) -> None:
    assert create_dhcp_entry(dnsmasq, "vm-a", "a2:00:00:00:00:01", "10.0.0.11")
    assert create_dhcp_entry(dnsmasq, "vm-b", "a2:00:00:00:00:02", "10.0.0.12")
    assert read_dhcp_entries(dnsmasq) == [A, B]
    assert "A2:00:00:00:00:02,10.0.0.12,vm-b\n" in hosts.read_text()
    assert stat.S_IMODE(hosts.stat().st_mode) == 0o644
    assert remove_dhcp_entry(dnsmasq, "vm-a", "a2:00:00:00:00:01", "10.0.0.11")
    assert read_dhcp_entries(dnsmasq) == [B]
    # only the file and its lock file: no temporary files left behind
    assert sorted(p.name for p in hosts.parent.iterdir()) == ["hosts", "hosts.lock"]


def test_same_entry_twice_and_missing_removal_change_nothing(
    dnsmasq: Settings, hosts: Path
) -> None:
    assert not remove_dhcp_entry(dnsmasq, "vm-a", A.mac, A.ip)
    assert not hosts.exists()
    create_dhcp_bulk_entry(dnsmasq, [A, B])
    before = hosts.read_bytes(), hosts.stat().st_ino
    assert not create_dhcp_entry(dnsmasq, "vm-a", "A2-00-00-00-00-01", "10.0.0.11")
    assert not create_dhcp_bulk_entry(dnsmasq, [B, A, B])
    assert not remove_dhcp_entry(dnsmasq, "vm-c", "a2:00:00:00:00:03", "10.0.0.13")
    assert (hosts.read_bytes(), hosts.stat().st_ino) == before


def test_same_pair_under_a_new_name_is_renamed(dnsmasq: Settings) -> None:
    create_dhcp_bulk_entry(dnsmasq, [A, B])
    assert create_dhcp_entry(dnsmasq, "renamed", A.mac, A.ip)
    assert read_dhcp_entries(dnsmasq) == [DhcpEntry("renamed", A.mac, A.ip), B]
    # removal goes by the MAC/IP pair, whatever name the file has for it
    assert remove_dhcp_entry(dnsmasq, "vm-a", A.mac, A.ip)
    assert read_dhcp_entries(dnsmasq) == [B]


@pytest.mark.parametrize(
    ("entry", "shared"),
    [
        (DhcpEntry("vm-c", A.mac, "10.0.0.99"), "MAC"),
        (DhcpEntry("vm-c", "a2:00:00:00:00:99", A.ip), "IP"),
        (DhcpEntry("VM-A", "a2:00:00:00:00:99", "10.0.0.99"), "name"),
        (DhcpEntry("vm-c", A.mac, B.ip), "MAC"),
    ],
)
def test_conflicts_change_nothing(
    dnsmasq: Settings, hosts: Path, entry: DhcpEntry, shared: str
) -> None:
    create_dhcp_bulk_entry(dnsmasq, [A, B])
    before = hosts.read_bytes()
    with pytest.raises(ConflictError, match=f"its {shared}"):
        create_dhcp_entry(dnsmasq, entry.name, entry.mac, entry.ip)
    new = DhcpEntry("vm-new", "a2:00:00:00:00:77", "10.0.0.77")
    with pytest.raises(ConflictError):
        create_dhcp_bulk_entry(dnsmasq, [new, entry])
    assert hosts.read_bytes() == before


def test_conflict_inside_one_bulk_call(dnsmasq: Settings, hosts: Path) -> None:
    with pytest.raises(ConflictError, match="vm-a"):
        create_dhcp_bulk_entry(dnsmasq, [A, ("vm-x", "a2:00:00:00:00:09", A.ip)])
    assert not hosts.exists()


def test_bad_input_leaves_the_file_byte_identical(dnsmasq: Settings, hosts: Path) -> None:
    create_dhcp_bulk_entry(dnsmasq, [A, B])
    before = hosts.read_bytes()
    bad_calls = [
        lambda: create_dhcp_entry(dnsmasq, "vm c", "a2:00:00:00:00:03", "10.0.0.13"),
        lambda: create_dhcp_entry(dnsmasq, "vm-c", "not-a-mac", "10.0.0.13"),
        lambda: create_dhcp_entry(dnsmasq, "vm-c", "a2:00:00:00:00:03", "10.0.0.300"),
        lambda: remove_dhcp_entry(dnsmasq, "vm-a", "a2:00:00:00:00:01", "nope"),
        lambda: create_dhcp_bulk_entry(
            dnsmasq, [("vm-c", "a2:00:00:00:00:03", "10.0.0.13"), ("vm-d", "x", "10.0.0.14")]
        ),
        lambda: create_dhcp_bulk_entry(dnsmasq, [("vm-c", "a2:00:00:00:00:03")]),  # type: ignore[list-item]
    ]
    for call in bad_calls:
        with pytest.raises(ValidationError):
            call()
        assert hosts.read_bytes() == before


def test_foreign_file_content_is_a_clear_error(dnsmasq: Settings, hosts: Path) -> None:
    hosts.write_text("dhcp-host=a2:00:00:00:00:01,10.0.0.1\n")
    with pytest.raises(ConfigError, match=r"line 1.*Baadal owns this file"):
        create_dhcp_entry(dnsmasq, "vm-a", A.mac, A.ip)
    assert hosts.read_text() == "dhcp-host=a2:00:00:00:00:01,10.0.0.1\n"


def test_isc_backend_writes_host_blocks_and_runs_reload(isc: Settings, tmp_path: Path) -> None:
    marker = tmp_path / "reloaded"
    isc = _with_dhcp(
        isc,
        backend=C.DhcpBackend.ISC,
        isc_conf_file=isc.dhcp.isc_conf_file,
        isc_reload_command=["touch", str(marker)],
    )
    create_dhcp_bulk_entry(isc, [("vm-a", A.mac, A.ip), ("vm-b", B.mac, B.ip)])
    text = Path(isc.dhcp.isc_conf_file).read_text()
    assert "host vm-b { hardware ethernet A2:00:00:00:00:02; fixed-address 10.0.0.12; }" in text
    assert marker.exists()
    marker.unlink()
    create_dhcp_entry(isc, "vm-a", A.mac, A.ip)
    assert not marker.exists()  # nothing changed, no restart
    remove_dhcp_entry(isc, "vm-a", A.mac, A.ip)
    assert read_dhcp_entries(isc) == [B]
    assert marker.exists()


def test_failing_isc_reload_is_reported(isc: Settings) -> None:
    failing = _with_dhcp(
        isc,
        backend=C.DhcpBackend.ISC,
        isc_conf_file=isc.dhcp.isc_conf_file,
        isc_reload_command=["false"],
    )
    with pytest.raises(dhcp.RemoteCommandError, match="'false'"):
        create_dhcp_entry(failing, A.name, A.mac, A.ip)


def test_none_backend_is_a_no_op(settings: Settings, tmp_path: Path) -> None:
    none = _with_dhcp(settings, backend=C.DhcpBackend.NONE, hosts_file=str(tmp_path / "h"))
    assert none.dhcp.backend == C.DhcpBackend.NONE
    assert settings.dhcp.backend == C.DhcpBackend.NONE  # the default
    assert not create_dhcp_entry(none, A.name, A.mac, A.ip)
    assert not create_dhcp_bulk_entry(none, [A, B])
    assert not remove_dhcp_entry(none, A.name, A.mac, A.ip)
    assert read_dhcp_entries(none) == []
    assert not (tmp_path / "h").exists()


def test_missing_settings_are_config_errors(settings: Settings) -> None:
    for conf in (
        {"backend": C.DhcpBackend.DNSMASQ, "hosts_file": ""},
        {"backend": C.DhcpBackend.DNSMASQ, "hosts_file": "relative/hosts"},
        {"backend": C.DhcpBackend.ISC, "isc_conf_file": ""},
    ):
        with pytest.raises(ConfigError, match="must be an absolute path"):
            create_dhcp_entry(_with_dhcp(settings, **conf), A.name, A.mac, A.ip)


def test_missing_directory_is_a_config_error(settings: Settings, tmp_path: Path) -> None:
    conf = _with_dhcp(
        settings, backend=C.DhcpBackend.DNSMASQ, hosts_file=str(tmp_path / "no" / "hosts")
    )
    with pytest.raises(ConfigError, match=r"cannot open .*hosts\.lock"):
        create_dhcp_entry(conf, A.name, A.mac, A.ip)


# --------------------------------------------------------------------------- dnsmasq pid


def test_dead_or_missing_dnsmasq_is_a_clear_error(dnsmasq: Settings, hosts: Path) -> None:
    pid_file = hosts.parent / "dnsmasq.pid"
    conf = _with_dhcp(
        dnsmasq, backend=C.DhcpBackend.DNSMASQ, hosts_file=str(hosts), pid_file=str(pid_file)
    )
    with pytest.raises(ConfigError, match="no pid file"):
        create_dhcp_entry(conf, A.name, A.mac, A.ip)
    assert read_dhcp_entries(conf) == [A]  # the file was written: dnsmasq reads it at start
    pid_file.write_text("garbage\n")
    with pytest.raises(ConfigError, match="not a pid"):
        create_dhcp_entry(conf, B.name, B.mac, B.ip)
    # our own pid is alive but is not dnsmasq: it must not get a SIGHUP
    pid_file.write_text(f"{os.getpid()}\n")
    with pytest.raises(ConfigError, match=r"is 'python|is 'pytest"):
        remove_dhcp_entry(conf, B.name, B.mac, B.ip)


# --------------------------------------------------------------------------- concurrency


def test_eight_threads_adding_at_once_all_land(dnsmasq: Settings) -> None:
    entries = [DhcpEntry(f"vm-{i}", f"a2:00:00:00:01:{i:02x}", f"10.0.1.{i}") for i in range(8)]
    barrier = threading.Barrier(len(entries))
    errors: list[BaseException] = []

    def add(entry: DhcpEntry) -> None:
        try:
            barrier.wait()
            for _ in range(5):
                create_dhcp_entry(dnsmasq, entry.name, entry.mac, entry.ip)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=add, args=(e,)) for e in entries]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(read_dhcp_entries(dnsmasq), key=lambda e: e.ip) == sorted(
        entries, key=lambda e: e.ip
    )


def _add_in_child(settings: Settings, first: int) -> None:
    for i in range(first, first + 5):
        create_dhcp_entry(settings, f"vm-{i}", f"a2:00:00:00:02:{i:02x}", f"10.0.2.{i}")


def test_processes_adding_at_once_all_land(dnsmasq: Settings) -> None:
    """The in-process lock does not help here: only the flock keeps every entry."""
    ctx = multiprocessing.get_context("fork")
    children = [ctx.Process(target=_add_in_child, args=(dnsmasq, 5 * n)) for n in range(4)]
    for child in children:
        child.start()
    for child in children:
        child.join(30)
    assert [c.exitcode for c in children] == [0] * 4
    assert len(read_dhcp_entries(dnsmasq)) == 20


# --------------------------------------------------------------------------- remote


class FakeSsh:
    """Plays the DHCP server for the SSH path: runs the few commands it expects on a
    local directory and records every argv (which must be a list of strings)."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def __call__(
        self, target: RemoteTarget, argv: list[str], *, check: bool = True, **kw: object
    ) -> CommandResult:
        assert isinstance(argv, list) and all(isinstance(a, str) for a in argv)
        assert target.address == "192.0.2.5"
        self.calls.append(argv)
        stdin = kw.get("stdin")
        match argv:
            case ["cat", "--", path]:
                if not Path(path).exists():
                    return CommandResult(1, "", f"cat: {path}: No such file or directory")
                return CommandResult(0, Path(path).read_text(), "")
            case ["test", "-e", path]:
                return CommandResult(0 if Path(path).exists() else 1, "", "")
            case ["tee", "--", path]:
                assert isinstance(stdin, bytes)
                Path(path).write_bytes(stdin)
                return CommandResult(0, stdin.decode(), "")
            case ["chmod", "0644", "--", path]:
                Path(path).chmod(0o644)
            case ["mv", "-f", "--", src, dst]:
                os.replace(src, dst)
            case ["kill", "-HUP", _]:
                pass
            case _:
                raise AssertionError(f"unexpected command {argv}")
        return CommandResult(0, "", "")


def test_remote_server_is_changed_with_argument_lists(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeSsh()
    monkeypatch.setattr(dhcp, "execute_remote_cmd", fake)
    hosts = tmp_path / "hosts"
    remote = _with_dhcp(
        settings, backend=C.DhcpBackend.DNSMASQ, dhcp_ip="192.0.2.5", hosts_file=str(hosts)
    )
    assert create_dhcp_entry(remote, A.name, A.mac, A.ip)
    assert parse_dnsmasq_hosts(hosts.read_text()) == [A]
    assert stat.S_IMODE(hosts.stat().st_mode) == 0o644
    tee = next(c for c in fake.calls if c[0] == "tee")
    assert tee[2].startswith(f"{hosts}.") and tee[2].endswith(".tmp")
    assert ["mv", "-f", "--", tee[2], str(hosts)] in fake.calls
    assert not create_dhcp_entry(remote, A.name, A.mac, A.ip)
    assert remove_dhcp_entry(remote, A.name, A.mac, A.ip)
    assert read_dhcp_entries(remote) == []
    assert list(tmp_path.glob("hosts.*")) == []


def test_remote_isc_reload_runs_over_ssh(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeSsh()
    monkeypatch.setattr(dhcp, "execute_remote_cmd", fake)
    remote = _with_dhcp(
        settings,
        backend=C.DhcpBackend.ISC,
        dhcp_ip="192.0.2.5",
        isc_conf_file=str(tmp_path / "baadal-hosts.conf"),
        isc_reload_command=["kill", "-HUP", "1"],
    )
    create_dhcp_entry(remote, A.name, A.mac, A.ip)
    assert fake.calls[-1] == ["kill", "-HUP", "1"]


# --------------------------------------------------------------------------- database


def _vm_with_ip(session: Session, vlan: Vlan, n: int, identity: str, mac: str | None) -> None:
    pool = PrivateIpPool(private_ip=f"10.0.9.{n}", mac_addr=mac, vlan_id=vlan.id)
    session.add(pool)
    session.flush()
    session.add(VM(vm_name=f"v{n}", vm_identity=identity, RAM=256, vCPU=1, private_ip_id=pool.id))


def test_entries_from_db_and_rebuild(sqlite_engine: Engine, dnsmasq: Settings, hosts: Path) -> None:
    with session_scope(sqlite_engine) as s:
        vlan = Vlan(name="v9", vlan_tag=9, vlan_addr="10.0.9.0/24")
        s.add(vlan)
        s.flush()
        _vm_with_ip(s, vlan, 1, "ORG_alice_web", "a2:00:00:00:09:01")
        _vm_with_ip(s, vlan, 2, "ORG_bob_my db", "A2:00:00:00:09:02")
        _vm_with_ip(s, vlan, 3, "ORG_bob_nomac", None)
        s.add(VM(vm_name="noip", vm_identity="ORG_bob_noip", RAM=256, vCPU=1))
        s.add(PrivateIpPool(private_ip="10.0.9.50", mac_addr="a2:00:00:00:09:50", vlan_id=vlan.id))
    expected = [
        DhcpEntry("ORG_alice_web", "a2:00:00:00:09:01", "10.0.9.1"),
        DhcpEntry("ORG_bob_my-db", "a2:00:00:00:09:02", "10.0.9.2"),
    ]
    with session_scope(sqlite_engine) as s:
        assert dhcp_entries_from_db(s) == expected
    # a lost file, and one that drifted, both come back as the database says
    assert not hosts.exists()
    assert rebuild_dhcp_entries(dnsmasq, expected) == 2
    assert read_dhcp_entries(dnsmasq) == expected
    hosts.write_text(render_dnsmasq_hosts([A]))
    assert rebuild_dhcp_entries(dnsmasq, expected) == 2
    assert read_dhcp_entries(dnsmasq) == expected


def test_rebuild_with_backend_none_does_nothing(sqlite_engine: Engine, settings: Settings) -> None:
    with session_scope(sqlite_engine) as s:
        assert rebuild_dhcp_entries(settings, s) == 0


# --------------------------------------------------------------------------- at scale


def _add_by_scanning(current: list[DhcpEntry], new: list[DhcpEntry]) -> list[DhcpEntry]:
    """The edit as it was before the indexes (every entry compared with every other):
    the indexed one must give the same list and the same conflicts."""
    result = list(current)
    for entry in new:
        same = [i for i, e in enumerate(result) if (e.mac, e.ip) == (entry.mac, entry.ip)]
        for other in result:
            if (other.mac, other.ip) == (entry.mac, entry.ip):
                continue
            shared = [
                what
                for what, clash in (
                    ("MAC", other.mac == entry.mac),
                    ("IP", other.ip == entry.ip),
                    ("name", other.name.lower() == entry.name.lower()),
                )
                if clash
            ]
            if shared:
                raise ConflictError(
                    f"cannot add DHCP entry {entry}: its {' and '.join(shared)} already"
                    f" belong to {other}"
                )
        if same:
            result[same[0]] = entry
        else:
            result.append(entry)
    return result


def _varied_rows() -> list[tuple[str, str, str]]:
    """VM rows with every kind of clash: repeated pairs under new names, a MAC or an IP
    reused, names equal but for case, identities dhcp_name maps to one name, bad MACs."""
    rows = [(f"ORG~u{i % 7}~vm{i}", f"a2:00:00:00:{i // 256:02x}:{i % 256:02x}",
             f"10.1.{i // 250}.{i % 250 + 1}") for i in range(600)]  # fmt: skip
    rows += [
        ("ORG~u1~renamed", rows[3][1], rows[3][2]),  # same pair, another name
        ("ORG~u1~macclash", rows[5][1], "10.9.0.1"),
        ("ORG~u1~ipclash", "a2:00:00:00:ff:01", rows[6][2]),
        ("org~U0~VM0", "a2:00:00:00:ff:02", "10.9.0.2"),  # name equal but for case
        ("ORG~u0~vm0 ", "a2:00:00:00:ff:03", "10.9.0.3"),  # dhcp_name: ORG-u0-vm0-
        ("ORG~u0~vm0-", "a2:00:00:00:ff:04", "10.9.0.4"),  # ... the same name
        ("ORG~u2~badmac", "zz:00", "10.9.0.5"),
        ("ORG~u2~renamed", rows[3][1], rows[3][2]),  # renamed again
        ("ORG~u3~again", rows[10][1], rows[10][2]),
        ("ORG~u3~both", rows[11][1], rows[12][2]),  # MAC of one, IP of another
    ]
    return rows


def _vm_entries_by_scanning(rows: list[tuple[str, str, str]]) -> list[DhcpEntry]:
    entries: list[DhcpEntry] = []
    for identity, mac, ip in rows:
        with contextlib.suppress(ValidationError, ConflictError):
            entries = _add_by_scanning(entries, [DhcpEntry(dhcp_name(identity), mac, ip)])
    return entries


def test_vm_entries_equal_the_scanning_edit_on_a_varied_fixture(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rows = _varied_rows()
    with caplog.at_level("WARNING", logger="baadal"):
        entries = dhcp.vm_entries(rows)
    assert entries == _vm_entries_by_scanning(rows)
    assert len(entries) == 600 + 1  # the two renames replace; the extra case-free name
    skipped = [r.getMessage() for r in caplog.records]
    assert len(skipped) == 6 and any("ORG~u1~macclash" in m for m in skipped)


@pytest.mark.parametrize("extra", range(len(_varied_rows()) - 600))
def test_add_raises_what_the_scanning_edit_raised(extra: int) -> None:
    rows = _varied_rows()
    current = _vm_entries_by_scanning(rows[:600])
    identity, mac, ip = rows[600 + extra]
    try:
        new = [DhcpEntry(dhcp_name(identity), mac, ip)]
    except ValidationError:
        return
    try:
        expected: list[DhcpEntry] | str = _add_by_scanning(current, new)
    except ConflictError as exc:
        expected = str(exc)
    try:
        got: list[DhcpEntry] | str = dhcp._add(current, new)
    except ConflictError as exc:
        got = str(exc)
    assert got == expected


def test_network_job_reads_nothing_without_a_dhcp_backend(
    sqlite_engine: Engine, settings: Settings
) -> None:
    """Backend none: the periodic job neither reads every VM's address nor compares."""
    from sqlalchemy import event

    from baadal.vm.network import restore_network

    statements: list[str] = []
    event.listen(sqlite_engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    state = restore_network(sqlite_engine, settings)
    assert state.startswith("DHCP not managed")
    assert not [s for s in statements if "private_ip_pool" in s and "vm_data" in s]
