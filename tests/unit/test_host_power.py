"""host_power without powering anything off: the magic packet's bytes, a real UDP send
to 127.0.0.1, the IPMI command without its password, the power policy as a pure
function, and power-up/down on the test-driver cloud (the SSH power-off is replaced;
refusals must leave every row as it was)."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select
from typer.testing import CliRunner

from baadal import constants as C
from baadal.cli.main import app
from baadal.config import Settings, get_settings
from baadal.db.models import VM, Host, HostEventLog
from baadal.db.session import dispose_engines, session_scope
from baadal.drivers.remote import CommandResult
from baadal.errors import ConfigError, ConflictError, RemoteCommandError, ValidationError
from baadal.host import power
from baadal.host.power import HostPowerState, plan_power_operation
from tests.support.bmc import running_bmc
from tests.support.cloud import Cloud, fake_host_uri, make_cloud

pytestmark = pytest.mark.unit

MAC = "52:54:00:12:34:56"
UP, DOWN, MAINT = C.HostStatus.UP, C.HostStatus.DOWN, C.HostStatus.MAINTENANCE


# --------------------------------------------------------------------------- wake-on-LAN


def test_magic_packet_is_six_ff_and_sixteen_macs() -> None:
    packet = power.wol_magic_packet(MAC)
    assert len(packet) == 102
    assert packet[:6] == b"\xff" * 6
    assert packet[6:] == bytes([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]) * 16
    assert power.wol_magic_packet("52-54-00-12-34-56") == packet
    assert power.wol_magic_packet(MAC.lower()) == packet


@pytest.mark.parametrize("bad", ["", "52:54:00:12:34", "zz:54:00:12:34:56", "01:00:5e:00:00:01"])
def test_magic_packet_rejects_bad_macs(bad: str) -> None:
    with pytest.raises(ValidationError):
        power.wol_magic_packet(bad)


@pytest.fixture
def udp_receiver() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(5)
    yield sock
    sock.close()


def test_send_wol_reaches_a_udp_socket(udp_receiver: socket.socket) -> None:
    port = udp_receiver.getsockname()[1]
    power.send_wol(MAC, "127.0.0.1", port)
    for _ in range(power.WOL_COPIES):
        data, _sender = udp_receiver.recvfrom(1024)
        assert data == power.wol_magic_packet(MAC)


def test_send_wol_refuses_bad_port_and_unroutable_address() -> None:
    with pytest.raises(ValidationError, match="port"):
        power.send_wol(MAC, "127.0.0.1", 70000)
    with pytest.raises(RemoteCommandError, match="cannot send"):
        power.send_wol(MAC, "no-such-host.invalid", 9)


# --------------------------------------------------------------------------- IPMI


@pytest.fixture
def ipmi_settings(settings: Settings, tmp_path: Path) -> Settings:
    secret = tmp_path / "ipmi-password"
    secret.write_text("s3cret-pass\n")
    settings.power.ipmi_user = "admin"
    settings.power.ipmi_password_file = str(secret)
    return settings


def _host(**kw: object) -> Host:
    values: dict[str, object] = {
        "id": 7, "host_name": "h7", "address": "127.0.0.1", "CPUs": 4, "RAM": 8,
        "libvirt_uri": "test:///default", "status": int(UP), "ssh_port": 22,
    }  # fmt: skip
    values.update(kw)
    return Host(**values)


@pytest.fixture
def bmc(ipmi_settings: Settings, tmp_path: Path) -> Iterator[Path]:
    """A real BMC process on 127.0.0.1 (IPMI-over-LAN); yields its power-state file."""
    with running_bmc(tmp_path, "admin", "s3cret-pass") as (port, state):
        ipmi_settings.power.ipmi_port = port
        yield state


def test_ipmi_power_talks_to_a_real_bmc(
    ipmi_settings: Settings, bmc: Path, caplog: pytest.LogCaptureFixture
) -> None:
    host = _host(bmc_address="127.0.0.1")
    with caplog.at_level(logging.DEBUG):
        assert power.ipmi_power(host, ipmi_settings, "status") == "off"
        assert power.ipmi_power(host, ipmi_settings, "on") == "on"
        assert power.ipmi_power(host, ipmi_settings, "status") == "on"
        power.ipmi_power(host, ipmi_settings, "soft")
    assert bmc.read_text().splitlines()[1:] == ["on on", "soft off"]
    assert "s3cret" not in caplog.text


def test_ipmi_refusals_and_failures(ipmi_settings: Settings, bmc: Path, tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="no BMC"):
        power.ipmi_power(_host(), ipmi_settings, "on")
    with pytest.raises(ValidationError, match="IPMI power action"):
        power.ipmi_power(_host(bmc_address="127.0.0.1"), ipmi_settings, "on; reboot")
    (tmp_path / "ipmi-password").write_text("wrong\n")
    with pytest.raises(RemoteCommandError, match="Incorrect password"):
        power.ipmi_power(_host(bmc_address="127.0.0.1"), ipmi_settings, "on")
    ipmi_settings.power.ipmi_password_file = str(tmp_path / "missing")
    with pytest.raises(ConfigError, match=r"ipmi_password_file .*missing"):
        power.ipmi_power(_host(bmc_address="127.0.0.1"), ipmi_settings, "status")
    ipmi_settings.power.ipmi_password_file = ""
    with pytest.raises(ConfigError, match="ipmi_password_file"):
        power.ipmi_power(_host(bmc_address="127.0.0.1"), ipmi_settings, "status")
    assert bmc.read_text().splitlines() == ["initial off"]  # nothing reached the chassis


# --------------------------------------------------------------------------- policy


def state(
    host_id: int,
    status: C.HostStatus = UP,
    *,
    ram_gb: int = 16,
    used_mb: int = 0,
    vms: int = 0,
    wakeable: bool = True,
) -> HostPowerState:
    """A host with RAM overcommit 2: capacity ram_gb x 2048 MB."""
    return HostPowerState(host_id, status, ram_gb * 2048, used_mb, vms, wakeable)


def test_plan_powers_idle_hosts_down_beyond_the_minimum() -> None:
    hosts = [state(1), state(2), state(3, ram_gb=32)]
    # the biggest idle host is kept
    assert plan_power_operation(hosts, min_hosts_up=1) == [(1, "down"), (2, "down")]
    assert plan_power_operation(hosts, min_hosts_up=2) == [(2, "down")]
    assert plan_power_operation(hosts, min_hosts_up=0) == [(3, "down"), (1, "down"), (2, "down")]


def test_plan_keeps_hosts_with_vms_and_hosts_it_cannot_wake() -> None:
    hosts = [state(1, used_mb=1024, vms=2), state(2), state(3, wakeable=False)]
    assert plan_power_operation(hosts, min_hosts_up=1) == [(2, "down")]
    # a VM placed but shut off still counts: the host is not idle
    assert plan_power_operation([state(1, vms=1), state(2)], min_hosts_up=1) == [(2, "down")]


def test_plan_keeps_an_idle_host_while_the_others_are_busy() -> None:
    """Powering it off would only wake it again on the next pass."""
    busy = 16 * 2048 * 0.9
    hosts = [state(1, used_mb=int(busy), vms=5), state(2), state(3)]
    assert plan_power_operation(hosts, min_hosts_up=1) == [(3, "down")]


def test_plan_wakes_one_host_when_every_up_host_is_busy() -> None:
    busy = int(16 * 2048 * 0.81)
    hosts = [
        state(1, used_mb=busy, vms=3),
        state(2, used_mb=busy, vms=3),
        state(3, DOWN),
        state(4, DOWN, ram_gb=64),
        state(5, DOWN, ram_gb=128, wakeable=False),
        state(6, MAINT, ram_gb=256),
    ]
    assert plan_power_operation(hosts, min_hosts_up=1) == [(4, "up")]
    # exactly 80 % is not "more than 80 %"
    at_80 = [state(1, used_mb=int(16 * 2048 * 0.8), vms=3), state(3, DOWN)]
    assert plan_power_operation(at_80, min_hosts_up=1) == []


def test_plan_wakes_hosts_up_to_the_minimum() -> None:
    hosts = [state(1, DOWN), state(2, DOWN), state(3, DOWN, wakeable=False)]
    assert plan_power_operation(hosts, min_hosts_up=2) == [(1, "up"), (2, "up")]
    assert plan_power_operation(hosts, min_hosts_up=5) == [(1, "up"), (2, "up")]
    assert plan_power_operation(hosts, min_hosts_up=0) == []
    assert plan_power_operation([], min_hosts_up=1) == []


def test_plan_leaves_maintenance_hosts_alone() -> None:
    assert plan_power_operation([state(1), state(2, MAINT)], min_hosts_up=1) == []


# --------------------------------------------------------------------------- on the cloud


@pytest.fixture
def power_settings(settings: Settings) -> Settings:
    settings.general.host_check_services = False  # no sshd on 127.0.0.1 in unit tests
    settings.power.boot_timeout_s = 5
    return settings


@pytest.fixture
def cloud(sqlite_engine: Engine, power_settings: Settings, tmp_path: Path) -> Cloud:
    uris = [fake_host_uri(tmp_path, f"h{i}") for i in (1, 2)]
    return make_cloud(sqlite_engine, power_settings, tmp_path, uris)


@pytest.fixture
def fake_ssh(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Power-off commands are recorded, never run; the host then stops answering."""
    sent: list[list[str]] = []

    def run(_target: object, argv: list[str], **_kw: object) -> CommandResult:
        sent.append(argv)
        return CommandResult(0, "", "")

    monkeypatch.setattr(power, "execute_remote_cmd", run)
    monkeypatch.setattr(power, "still_answering", lambda _h: "ping" if not sent else None)
    monkeypatch.setattr(power, "POLL_S", 0.01)
    return sent


def _rows(engine: Engine) -> tuple[list[tuple[str, int]], list[tuple[int, str, str, str]]]:
    """Every host's status and every host event: what a refusal must not change."""
    with session_scope(engine) as s:
        hosts = [(h.host_name, h.status) for h in s.scalars(select(Host).order_by(Host.id))]
        events = [
            (e.host_id, e.old_value, e.new_value, e.message)
            for e in s.scalars(select(HostEventLog).order_by(HostEventLog.id))
        ]
    return hosts, events


def _place_vm(engine: Engine, host_id: int, name: str, status: C.VMStatus) -> None:
    with session_scope(engine) as s:
        s.add(
            VM(vm_name=name, vm_identity=f"org_u_{name}", host_id=host_id, RAM=512, vCPU=1,
               status=int(status))
        )  # fmt: skip


def _set(engine: Engine, host_id: int, **values: object) -> None:
    with session_scope(engine) as s:
        host = s.get(Host, host_id)
        for key, value in values.items():
            setattr(host, key, value)


def test_power_down_refused_while_a_vm_runs(
    sqlite_engine: Engine, power_settings: Settings, cloud: Cloud, fake_ssh: list[list[str]]
) -> None:
    host_id = cloud.host_ids[0]
    _place_vm(sqlite_engine, host_id, "web", C.VMStatus.RUNNING)
    _place_vm(sqlite_engine, host_id, "db", C.VMStatus.SHUTDOWN)
    before = _rows(sqlite_engine)
    with pytest.raises(ConflictError, match=r"host1 still has 1 VM\(s\).*web \(RUNNING\)"):
        power.host_power_down(sqlite_engine, power_settings, host_id)
    assert _rows(sqlite_engine) == before
    assert fake_ssh == []


def test_power_down_of_a_host_with_shut_off_vms(
    sqlite_engine: Engine, power_settings: Settings, cloud: Cloud, fake_ssh: list[list[str]]
) -> None:
    host_id = cloud.host_ids[0]
    _place_vm(sqlite_engine, host_id, "db", C.VMStatus.SHUTDOWN)
    power_settings.power.poweroff_command = ["sh", "/run/baadal-lab-poweroff"]
    result = power.host_power_down(sqlite_engine, power_settings, host_id)
    assert fake_ssh == [["sh", "/run/baadal-lab-poweroff"]]
    assert (result.action, result.method, result.changed, result.status) == (
        "down", "SSH", True, DOWN,
    )  # fmt: skip
    hosts, events = _rows(sqlite_engine)
    assert hosts[0] == ("host1", DOWN)
    assert events == [(host_id, "UP", "DOWN", "powered off by Baadal (SSH)")]


def test_power_down_keeps_a_maintenance_host_in_maintenance(
    sqlite_engine: Engine, power_settings: Settings, cloud: Cloud, fake_ssh: list[list[str]]
) -> None:
    host_id = cloud.host_ids[0]
    _set(sqlite_engine, host_id, status=int(MAINT))
    result = power.host_power_down(sqlite_engine, power_settings, host_id)
    assert result.status == MAINT
    assert _rows(sqlite_engine)[1] == [
        (host_id, "MAINTENANCE", "MAINTENANCE", "powered off by Baadal (SSH)")
    ]


def test_failed_power_off_command_changes_nothing(
    sqlite_engine: Engine,
    power_settings: Settings,
    cloud: Cloud,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def refuse(_target: object, argv: list[str], **_kw: object) -> CommandResult:
        raise RemoteCommandError("127.0.0.1", argv, "exit 1: not allowed", 1)

    monkeypatch.setattr(power, "execute_remote_cmd", refuse)
    monkeypatch.setattr(power, "still_answering", lambda _h: "ping")
    before = _rows(sqlite_engine)
    with pytest.raises(RemoteCommandError, match="not allowed"):
        power.host_power_down(sqlite_engine, power_settings, cloud.host_ids[0])
    assert _rows(sqlite_engine) == before


def test_power_up_without_mac_or_bmc_is_refused(
    sqlite_engine: Engine, power_settings: Settings, cloud: Cloud
) -> None:
    host_id = cloud.host_ids[1]
    _set(sqlite_engine, host_id, status=int(DOWN), bmc_address="10.0.0.9")
    before = _rows(sqlite_engine)
    with pytest.raises(ValidationError, match=r"no MAC address .* ipmi_user is not set"):
        power.host_power_up(sqlite_engine, power_settings, host_id)
    assert _rows(sqlite_engine) == before


def test_power_up_of_an_up_host_does_nothing(
    sqlite_engine: Engine, power_settings: Settings, cloud: Cloud
) -> None:
    before = _rows(sqlite_engine)
    result = power.host_power_up(sqlite_engine, power_settings, cloud.host_ids[0])
    assert (result.changed, result.method, result.status) == (False, "", UP)
    assert result.message == "host host1 is already UP"
    assert _rows(sqlite_engine) == before


def test_power_up_sends_a_real_magic_packet_and_marks_the_host_up(
    sqlite_engine: Engine, power_settings: Settings, cloud: Cloud, udp_receiver: socket.socket
) -> None:
    """The test-driver host "boots" at once: it answers as soon as the packet is out."""
    host_id = cloud.host_ids[1]
    _set(sqlite_engine, host_id, status=int(DOWN), mac_addr=MAC)
    power_settings.power.wol_broadcast = "127.0.0.1"
    power_settings.power.wol_port = udp_receiver.getsockname()[1]
    result = power.host_power_up(sqlite_engine, power_settings, host_id)
    assert udp_receiver.recvfrom(1024)[0] == power.wol_magic_packet(MAC)
    assert (result.changed, result.method, result.status) == (True, "wake-on-LAN", UP)
    hosts, events = _rows(sqlite_engine)
    assert hosts[1] == ("host2", UP)
    assert events == [(host_id, "DOWN", "UP", "powered on by Baadal (wake-on-LAN)")]


def test_power_up_over_ipmi_without_waiting(
    sqlite_engine: Engine,
    ipmi_settings: Settings,
    cloud: Cloud,
    bmc: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    host_id = cloud.host_ids[1]
    _set(sqlite_engine, host_id, status=int(DOWN), mac_addr=MAC, bmc_address="127.0.0.1")
    before = _rows(sqlite_engine)
    with caplog.at_level(logging.DEBUG, logger="baadal"):
        result = power.host_power_up(sqlite_engine, ipmi_settings, host_id, wait=False)
    assert bmc.read_text().splitlines()[1:] == ["on on"]
    assert (result.method, result.status) == ("IPMI", DOWN)
    assert "host sanity check marks it UP" in result.message
    assert _rows(sqlite_engine) == before  # the sanity check marks it UP later
    assert "s3cret" not in caplog.text


def test_host_power_operation_powers_the_idle_host_down(
    sqlite_engine: Engine, power_settings: Settings, cloud: Cloud, fake_ssh: list[list[str]]
) -> None:
    first, second = cloud.host_ids
    _place_vm(sqlite_engine, first, "web", C.VMStatus.RUNNING)
    _set(sqlite_engine, second, mac_addr=MAC)
    results = power.host_power_operation(sqlite_engine, power_settings)
    assert [(r.host_name, r.action, r.ok, r.status) for r in results] == [
        ("host2", "down", True, DOWN)
    ]
    assert fake_ssh == [power_settings.power.poweroff_command]
    # nothing more to do on the next pass
    assert power.host_power_operation(sqlite_engine, power_settings) == []


def test_cli_power_up_error_is_one_line(
    sqlite_engine: Engine, cloud: Cloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    _set(sqlite_engine, cloud.host_ids[1], status=int(DOWN))
    monkeypatch.setenv("BAADAL_DATABASE__URL", str(sqlite_engine.url))
    get_settings.cache_clear()
    dispose_engines()
    result = CliRunner().invoke(app, ["host", "power-up", "host2"])
    assert result.exit_code == 2, result.output
    assert "host host2 cannot be powered on" in result.stderr
    assert result.stdout == ""
    with session_scope(sqlite_engine) as s:
        assert s.scalar(select(func.count()).select_from(HostEventLog)) == 0
