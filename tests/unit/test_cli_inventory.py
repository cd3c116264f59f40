"""The db/config/host/datastore/template commands against a fresh SQLite file chosen through
settings, as in production: round trips, one-line errors with exit code 2, nothing written
on refusal, and no secret in `config show`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select
from typer.testing import CliRunner, Result

from baadal.cli.main import app
from baadal.config import get_settings
from baadal.db.models import Datastore, Host, PrivateIpPool, Template, Vlan
from baadal.db.schema import head_revision
from baadal.db.session import dispose_engines, make_engine, session_scope
from baadal.errors import NotFoundError, ValidationError
from baadal.services import inventory, system, tasks
from baadal.services.policy import SYSTEM

pytestmark = pytest.mark.unit


@pytest.fixture
def db_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A database that does not exist yet, picked with BAADAL_DATABASE__URL."""
    path = tmp_path / "cli.db"
    monkeypatch.setenv("BAADAL_DATABASE__URL", f"sqlite:///{path}")
    monkeypatch.setenv("COLUMNS", "200")  # keep Rich tables on one line per row
    get_settings.cache_clear()
    dispose_engines()
    yield path
    get_settings.cache_clear()
    dispose_engines()


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def engine(db_file: Path, runner: CliRunner) -> Iterator[Engine]:
    """The database after `baadal db upgrade`, and an engine to look at its rows."""
    result = runner.invoke(app, ["db", "upgrade"])
    assert result.exit_code == 0, result.output
    assert f"is at revision {head_revision()}" in result.stdout
    eng = make_engine(f"sqlite:///{db_file}")
    yield eng
    eng.dispose()


def _count(engine: Engine, model: type) -> int:
    with session_scope(engine) as s:
        return s.scalar(select(func.count()).select_from(model)) or 0


def _one_error(result: Result) -> str:
    """Exit 2, nothing on stdout, exactly one line on stderr; return that line."""
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert result.stdout == ""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


HOST_H1 = ["host", "add", "h1", "--address", "10.0.0.5", "--cpus", "8", "--ram-gb", "32"]


def test_commands_before_db_upgrade_say_so(db_file: Path, runner: CliRunner) -> None:
    for argv in (["host", "list"], ["datastore", "list"], ["template", "show", "x"], HOST_H1):
        line = _one_error(runner.invoke(app, argv))
        assert line == "error: database not initialised: run `baadal db upgrade`"


def test_db_status_and_upgrade(db_file: Path, runner: CliRunner) -> None:
    before = runner.invoke(app, ["db", "status"])
    assert before.exit_code == 0
    assert "revision: none" in before.stdout
    assert "database not initialised: run `baadal db upgrade`" in before.stdout
    assert str(db_file) in before.stdout
    for _ in range(2):  # upgrading twice is harmless
        up = runner.invoke(app, ["db", "upgrade"])
        assert up.exit_code == 0, up.output
        assert up.stdout.strip() == f"database sqlite:///{db_file} is at revision {head_revision()}"
    after = runner.invoke(app, ["db", "status"])
    assert after.exit_code == 0
    assert f"revision: {head_revision()}" in after.stdout
    assert "state:    up to date" in after.stdout


def test_host_round_trip(engine: Engine, runner: CliRunner) -> None:
    added = runner.invoke(app, [*HOST_H1, "--mac", "52-54-00-aa-bb-cc", "--type", "virtual"])
    assert added.exit_code == 0, added.output
    assert added.stdout.strip() == "added host h1 (id 1, qemu+ssh://root@10.0.0.5/system)"

    listed = runner.invoke(app, ["host", "list"])
    assert listed.exit_code == 0
    row = next(line for line in listed.stdout.splitlines() if " h1 " in line)
    for cell in ("10.0.0.5", "down", "8", "32", "Virtual"):
        assert cell in row

    shown = runner.invoke(app, ["host", "show", "h1"])
    assert shown.exit_code == 0
    assert "52:54:00:AA:BB:CC" in shown.stdout
    assert "qemu+ssh://root@10.0.0.5/system" in shown.stdout

    status = runner.invoke(app, ["host", "set-status", "h1", "up"])
    assert status.stdout.strip() == "host h1 is now up"
    with session_scope(engine) as s:
        assert s.scalar(select(Host.status)) == 1

    removed = runner.invoke(app, ["host", "remove", "1"])
    assert removed.exit_code == 0
    assert _count(engine, Host) == 0


def test_duplicate_host_is_one_line_and_exit_2(engine: Engine, runner: CliRunner) -> None:
    assert runner.invoke(app, HOST_H1).exit_code == 0
    again = runner.invoke(app, [*HOST_H1[:4], "10.0.0.6", *HOST_H1[5:]])
    assert _one_error(again) == "error: host 'h1' already exists"
    assert _count(engine, Host) == 1


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--mac", "zz:00:00:00:00:01"], "'zz:00:00:00:00:01' is not a valid MAC address"),
        (["--type", "Cloud"], "host type 'Cloud' is not one of Physical, Virtual"),
        (["--libvirt-uri", "xen:///system"], "scheme must be one of"),
        (["--ssh-key", "/nonexistent/key"], "SSH key file must be the path of an existing file"),
    ],
)
def test_bad_host_input_is_one_line_and_no_row(
    engine: Engine, runner: CliRunner, extra: list[str], message: str
) -> None:
    line = _one_error(runner.invoke(app, [*HOST_H1, *extra]))
    assert message in line
    assert _count(engine, Host) == 0


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--address", "h2\n"], "is neither an IPv4 address nor a host name"),
        (["--ssh-user", "root\n"], "is not a valid user name"),
        (["--mac", "02:00:00:00:00:01\n"], "is not a valid MAC address"),
        (["--category", "lab\x1b[2J"], "must not contain control characters"),
    ],
)
def test_host_fields_with_a_trailing_newline_or_escape_are_refused(
    engine: Engine, runner: CliRunner, extra: list[str], message: str
) -> None:
    """Full matches: '$' let a trailing newline through (issue 12 item 7)."""
    argv = ["host", "add", "h2", "--address", "10.0.0.6", "--cpus", "8", "--ram-gb", "32"]
    assert message in _one_error(runner.invoke(app, [*argv, *extra]))
    assert _one_error(runner.invoke(app, [*HOST_H1[:2], "h2\n", *HOST_H1[3:]])).startswith(
        "error: host name 'h2\\n' may contain only"
    )
    assert _count(engine, Host) == 0


HUGE = "99999999999999999999"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([*HOST_H1[:6], HUGE, *HOST_H1[7:]], f"CPUs {HUGE} is out of range: must be 1..4096"),
        ([*HOST_H1, "--ram-gb", HUGE], "RAM (GB) 99999999999999999999 is out of range"),
        ([*HOST_H1, "--hdd-gb", HUGE], "HDD (GB) 99999999999999999999 is out of range"),
        ([*HOST_H1, "--ssh-port", "70000"], "SSH port 70000 is out of range: must be 1..65535"),
        (["datastore", "add", "d", "--mount", "/tmp", "--capacity-gb", HUGE], "out of range"),
        (["task", "show", HUGE], f"no task with id {HUGE}"),
        (["task", "retry", HUGE], f"no task with id {HUGE}"),
        (["task", "list", "--vm", HUGE], "VM id 99999999999999999999 is out of range"),
        (["pool", "vlan-add", "v", "--tag", HUGE, "--cidr", "10.9.0.0/24"], "out of range"),
    ],
)
def test_huge_numbers_are_one_line_and_exit_2(
    engine: Engine, runner: CliRunner, argv: list[str], message: str | None
) -> None:
    """Not "internal error (OverflowError)" (issue 12 item 8): the services bound every
    number, so each door says which range in one line."""
    result = runner.invoke(app, argv)
    assert result.exit_code == 2, result.output
    assert "internal error" not in result.output
    if message is not None:
        assert message in _one_error(result)
    assert _count(engine, Host) == 0 and _count(engine, Datastore) == 0


@pytest.mark.parametrize("kind", ["host", "datastore", "template", "vm"])
def test_looking_up_a_huge_or_non_ascii_id_is_not_found(
    engine: Engine, runner: CliRunner, kind: str
) -> None:
    for ref in (HUGE, "²"):
        line = _one_error(runner.invoke(app, [kind, "show", ref]))
        assert line.startswith("error: no ") and ref in line


def test_services_bound_host_numbers_for_every_door(engine: Engine) -> None:
    with session_scope(engine) as s, pytest.raises(ValidationError, match=r"must be 1\.\.4096"):
        inventory.add_host(s, SYSTEM, name="h9", address="10.0.0.9", cpus=10**20, ram_gb=4)
    with session_scope(engine) as s, pytest.raises(NotFoundError):
        tasks.get_task(s, SYSTEM, 10**20)
    with session_scope(engine) as s, pytest.raises(ValidationError, match="out of range"):
        tasks.list_tasks(s, SYSTEM, vm_id=10**20)
    assert _count(engine, Host) == 0


def test_db_check_lists_stored_values_with_control_characters(
    engine: Engine, runner: CliRunner
) -> None:
    """Rows stored before full matches (issue 12 item 7): `db check` names each one."""
    clean = runner.invoke(app, ["db", "check"])
    assert clean.exit_code == 0, clean.output
    assert "no stored name, MAC, address or path holds a control character" in clean.stdout
    with session_scope(engine) as s:  # as the old validators let them in
        vlan = Vlan(name="v10", vlan_tag=10, vlan_addr="10.0.1.0/24")
        s.add(vlan)
        s.flush()
        s.add(PrivateIpPool(private_ip="10.0.1.5", mac_addr="02:00:00:00:00:01\n", vlan_id=vlan.id))
        s.add(Host(host_name="h1\n", address="10.0.0.5", CPUs=1, RAM=1, libvirt_uri="test:///x"))
    checked = runner.invoke(app, ["db", "check"])
    assert checked.exit_code == 1, checked.output
    rows = [line for line in checked.stdout.splitlines() if "\\n" in line]
    assert len(rows) == 2, checked.stdout
    assert (
        "private_ip_pool" in rows[0]
        and "mac_addr" in rows[0]
        and "'02:00:00:00:00:01\\n'" in rows[0]
    )
    assert "host" in rows[1] and "host_name" in rows[1] and "'h1\\n'" in rows[1]
    problems = system.stored_text_problems(get_settings(), SYSTEM)
    assert [(p.table, p.column, p.value) for p in problems] == [
        ("private_ip_pool", "mac_addr", "'02:00:00:00:00:01\\n'"),
        ("host", "host_name", "'h1\\n'"),
    ]


def test_host_lookups_and_status_errors(engine: Engine, runner: CliRunner) -> None:
    assert _one_error(runner.invoke(app, ["host", "show", "ghost"])) == (
        "error: no host named 'ghost'"
    )
    runner.invoke(app, HOST_H1)
    line = _one_error(runner.invoke(app, ["host", "set-status", "h1", "sideways"]))
    assert "host status 'sideways' is not one of down, up, maintenance" in line
    with session_scope(engine) as s:
        assert s.scalar(select(Host.status)) == 0


def _datastore(runner: CliRunner, mount: Path) -> Result:
    mount.mkdir(exist_ok=True)
    return runner.invoke(
        app, ["datastore", "add", "ds1", "--mount-point", str(mount), "--capacity-gb", "500"]
    )


def test_datastore_round_trip(engine: Engine, runner: CliRunner, tmp_path: Path) -> None:
    mount = tmp_path / "ds"
    added = _datastore(runner, mount)
    assert added.exit_code == 0, added.output
    assert added.stdout.strip() == f"added datastore ds1 (id 1, {mount})"
    assert (mount / "vm_templates").is_dir()
    assert (mount / "vm_rrds").is_dir()

    listed = runner.invoke(app, ["datastore", "list"])
    row = next(line for line in listed.stdout.splitlines() if " ds1 " in line)
    assert str(mount) in row
    assert "500" in row

    shown = runner.invoke(app, ["datastore", "show", "ds1"])
    assert shown.exit_code == 0
    assert "capacity (GB)" in shown.stdout

    line = _one_error(runner.invoke(app, ["datastore", "show", "ds9"]))
    assert line == "error: no datastore named 'ds9'"


def test_bad_datastore_is_one_line_and_no_row(
    engine: Engine, runner: CliRunner, tmp_path: Path
) -> None:
    missing = tmp_path / "not-mounted"
    result = runner.invoke(
        app, ["datastore", "add", "ds1", "--mount", str(missing), "--capacity-gb", "10"]
    )
    assert "does not exist: mount the datastore first" in _one_error(result)
    assert not missing.exists()
    result = runner.invoke(
        app, ["datastore", "add", "ds1", "--mount", str(tmp_path), "--capacity-gb", "0"]
    )
    assert "out of range: must be 1..9999" in _one_error(result)
    assert _count(engine, Datastore) == 0


def test_template_round_trip(engine: Engine, runner: CliRunner, tmp_path: Path) -> None:
    mount = tmp_path / "ds"
    assert _datastore(runner, mount).exit_code == 0
    (mount / "vm_templates" / "base.qcow2").write_text("image")
    argv = ["template", "add", "tiny", "--datastore", "ds1", "--hdfile", "base.qcow2"]
    added = runner.invoke(
        app, [*argv, "--os-version", "12", "--hdd-gb", "4", "--os-name", "ubuntu"]
    )
    assert added.exit_code == 0, added.output
    assert added.stdout.strip() == "added template tiny (id 1, base.qcow2 on ds1)"

    listed = runner.invoke(app, ["template", "list"])
    row = next(line for line in listed.stdout.splitlines() if " tiny " in line)
    for cell in ("yes", "Ubuntu", "4", "ds1"):
        assert cell in row

    shown = runner.invoke(app, ["template", "show", "tiny"])
    assert "base.qcow2" in shown.stdout

    off = runner.invoke(app, ["template", "deactivate", "tiny"])
    assert off.stdout.strip() == "template tiny deactivated"
    with session_scope(engine) as s:
        assert s.scalar(select(Template.is_active)) is False
    active = runner.invoke(app, ["template", "list", "--active-only"])
    assert " tiny " not in active.stdout


def test_missing_template_file_is_one_line_and_no_row(
    engine: Engine, runner: CliRunner, tmp_path: Path
) -> None:
    mount = tmp_path / "ds"
    assert _datastore(runner, mount).exit_code == 0
    argv = ["template", "add", "tiny", "--datastore", "ds1", "--os-version", "12"]
    result = runner.invoke(app, [*argv, "--hdd-gb", "4", "--hdfile", "nope.qcow2"])
    line = _one_error(result)
    assert line == f"error: template image 'nope.qcow2' not found in {mount / 'vm_templates'}"
    result = runner.invoke(app, [*argv, "--hdd-gb", "4", "--hdfile", "../vm_images/x"])
    assert "must not contain '..'" in _one_error(result)
    assert _count(engine, Template) == 0


def test_config_show_hides_secrets(
    db_file: Path, runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "baadal.toml"
    config.write_text(
        '[mail]\nlogin = "filesecret"\ntls = "starttls"\npassword_file = "/etc/baadal/smtp"\n'
        '[nat]\nnat_ip = "192.0.2.1"\n'
    )
    monkeypatch.setenv("BAADAL_CONFIG", str(config))
    monkeypatch.setenv("BAADAL_NAT__NAT_SSH_KEY", "-----BEGIN KEY----- natsecret")
    monkeypatch.setenv("BAADAL_LDAP__LDAP_URL", "ldap://admin:ldapsecret@ldap.example.org")
    get_settings.cache_clear()
    result = runner.invoke(app, ["config", "show"])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert f"# config file: {config}" in out
    for secret in ("natsecret", "ldapsecret", "filesecret"):
        assert secret not in out
    assert 'nat_ssh_key = "***"' in out
    assert 'login = "***"' in out
    assert 'ldap_url = "ldap://admin:***@ldap.example.org"' in out
    assert 'nat_ip = "192.0.2.1"' in out  # file values are shown
    assert "[nat]" in out
    assert f'url = "sqlite:///{db_file}"' in out


def test_config_show_without_a_file(db_file: Path, runner: CliRunner) -> None:
    result = runner.invoke(app, ["config", "show"])
    assert result.exit_code == 0
    assert result.stdout.startswith("# config file: none (defaults + environment)")


def test_config_show_with_a_missing_config_file(
    db_file: Path, runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BAADAL_CONFIG", str(tmp_path / "nope.toml"))
    get_settings.cache_clear()
    line = _one_error(runner.invoke(app, ["config", "show"]))
    assert "BAADAL_CONFIG points to" in line
