"""Settings from the TOML file, environment overrides, clear errors; the constants table."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from sqlalchemy import Engine

from baadal.config import config_file_path, config_value, get_settings, load_settings
from baadal.db.constants_table import get_constant, update_constant
from baadal.db.session import session_scope
from baadal.errors import ConfigError, NotFoundError, ValidationError

pytestmark = pytest.mark.unit


def test_defaults_without_a_file(_isolated_home: Path) -> None:
    settings = load_settings()
    assert config_file_path() is None
    assert settings.home == _isolated_home
    assert settings.database_url == f"sqlite:///{_isolated_home / 'baadal.db'}"
    assert settings.scheduler.host_sanity == 600
    assert settings.placement.ram_overcommit == 2.0
    assert settings.log_dir == _isolated_home / "logs"


def test_file_then_environment_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "site.toml"
    cfg.write_text(
        '[nat]\nnat_type = "software_nat"\nnat_ip = "192.0.2.1"\n'
        "[scheduler]\nvm_sanity = 120\n[scheduler.extra]\nmy_job = 7\n"
        '[paths]\nvmfiles_path = "/srv/ds"\n'
    )
    monkeypatch.setenv("BAADAL_CONFIG", str(cfg))
    monkeypatch.setenv("BAADAL_SCHEDULER__VM_SANITY", "60")
    settings = load_settings()
    assert config_file_path() == cfg
    assert settings.nat.nat_type == "software_nat"
    assert settings.nat.nat_ip == "192.0.2.1"
    assert settings.scheduler.vm_sanity == 60  # environment wins over the file
    assert settings.scheduler.interval_for("my_job") == 7
    assert settings.scheduler.interval_for("host_sanity") == 600
    assert settings.scheduler.interval_for("nope") is None
    assert settings.datastore_path("vm_images", "x") == Path("/srv/ds/vm_images/x")


def test_home_file_is_found(_isolated_home: Path) -> None:
    _isolated_home.mkdir(parents=True)
    (_isolated_home / "baadal.toml").write_text("[general]\nshutdown_vm_days = 30\n")
    get_settings.cache_clear()
    assert config_value("general", "shutdown_vm_days") == 30


@pytest.mark.parametrize(
    ("env", "value", "match"),
    [
        ("BAADAL_NAT__NAT_TYPE", "magic_nat", "nat.nat_type"),
        ("BAADAL_WORKER__CONCURRENCY", "many", "worker.concurrency"),
    ],
)
def test_bad_values_give_one_clear_error(
    monkeypatch: pytest.MonkeyPatch, env: str, value: str, match: str
) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(ConfigError, match=match):
        load_settings()


@pytest.mark.parametrize("wildcard", ["0.0.0.0", "::", "[::]"])
def test_vnc_consoles_never_listen_everywhere(
    monkeypatch: pytest.MonkeyPatch, wildcard: str
) -> None:
    monkeypatch.setenv("BAADAL_VM__VNC_LISTEN", wildcard)
    with pytest.raises(ConfigError, match=r"vm\.vnc_listen"):
        load_settings()


def test_unknown_key_and_missing_file_are_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[nat]\nnat_typo = 1\n")
    monkeypatch.setenv("BAADAL_CONFIG", str(cfg))
    with pytest.raises(ConfigError, match=r"nat\.nat_typo"):
        load_settings()
    monkeypatch.setenv("BAADAL_CONFIG", str(tmp_path / "missing.toml"))
    with pytest.raises(ConfigError, match="not a file"):
        load_settings()


def test_config_value_unknown_key() -> None:
    with pytest.raises(ConfigError, match=r"no setting nat\.nope"):
        config_value("nat", "nope")


def test_constants_table_get_and_update(sqlite_engine: Engine) -> None:
    with session_scope(sqlite_engine) as s:
        assert get_constant(s, "baadal_status") == "up"
        update_constant(s, "baadal_status", "down-progress")
        update_constant(s, "new_one", "1")
    with session_scope(sqlite_engine) as s:
        assert get_constant(s, "baadal_status") == "down-progress"
        assert get_constant(s, "new_one") == "1"
        with pytest.raises(NotFoundError):
            get_constant(s, "missing")
        with pytest.raises(ValidationError):
            update_constant(s, "", "x")


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"[nat]\nnat_ip = \n", r"line 2: not valid TOML: Invalid value"),
        (b"[general]\nadmin_uid = ['a']\n# caf\xe9\n", r"line 3: not UTF-8 \(byte 0xe9\)"),
        (b'[nat]\nnat_ip = "x\n', r"line 2: not valid TOML: Illegal character"),
        (b'[nat]\nnat_ip = """x\n', r"at the end: not valid TOML"),
    ],
)
def test_a_corrupt_settings_file_is_one_line_naming_file_and_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: bytes, match: str
) -> None:
    """A corrupt or non-UTF-8 file used to end in a traceback and "internal error"."""
    cfg = tmp_path / "site.toml"
    cfg.write_bytes(content)
    monkeypatch.setenv("BAADAL_CONFIG", str(cfg))
    with pytest.raises(
        ConfigError, match=rf"^settings file {re.escape(str(cfg))}, {match}"
    ) as caught:
        load_settings()
    assert "\n" not in str(caught.value)


def test_a_corrupt_settings_file_in_the_cli_exits_2(_isolated_home: Path) -> None:
    from typer.testing import CliRunner

    from baadal.cli.main import app

    _isolated_home.mkdir(parents=True)
    (_isolated_home / "baadal.toml").write_bytes(b"[vm]\nvnc_listen = \xff\n")
    result = CliRunner().invoke(app, ["config", "show"])
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert "baadal.toml, line 2: not UTF-8" in result.output


@pytest.mark.parametrize(
    ("env", "match"),
    [
        ({"BAADAL_WORKER__LEASE_S": "0"}, r"worker\.lease_s: .*greater than 0"),
        ({"BAADAL_WORKER__LEASE_S": "-5"}, r"worker\.lease_s"),
        ({"BAADAL_WORKER__LEASE_S": "1"}, r"worker: lease_s \(1 s\) must be at least 3 x"),
        (
            {"BAADAL_WORKER__LEASE_S": "10", "BAADAL_WORKER__POLL_INTERVAL_S": "5"},
            r"worker: lease_s \(10 s\) .* >= 15 s",
        ),
        ({"BAADAL_WORKER__POLL_INTERVAL_S": "0"}, r"worker\.poll_interval_s"),
        ({"BAADAL_WORKER__CONCURRENCY": "0"}, r"worker\.concurrency"),
        ({"BAADAL_WORKER__CONCURRENCY": "100000"}, r"worker\.concurrency"),
        ({"BAADAL_WORKER__MAX_ATTEMPTS": "0"}, r"worker\.max_attempts"),
        ({"BAADAL_SCHEDULER__HOST_SANITY": "-1"}, r"scheduler\.host_sanity: an interval"),
        ({"BAADAL_SCHEDULER__EXTRA": '{"job": -3}'}, r"scheduler\.extra: job: an interval"),
    ],
)
def test_worker_and_scheduler_settings_are_checked(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], match: str
) -> None:
    """``lease_s = 0`` was accepted, and then one task ran several times at once."""
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ConfigError, match=rf"^bad setting {match}"):
        load_settings()


def test_a_switched_off_job_and_sane_worker_settings_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BAADAL_SCHEDULER__HOST_SANITY", "0")
    monkeypatch.setenv("BAADAL_WORKER__LEASE_S", "1.5")
    monkeypatch.setenv("BAADAL_WORKER__POLL_INTERVAL_S", "0.5")
    settings = load_settings()
    assert (settings.scheduler.host_sanity, settings.worker.lease_s) == (0, 1.5)
