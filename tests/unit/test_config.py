"""Settings from the TOML file, environment overrides, clear errors; the constants table."""

from __future__ import annotations

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
