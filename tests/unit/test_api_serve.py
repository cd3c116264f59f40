"""``baadal serve`` and its ``[web]`` settings."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from baadal.cli.main import app
from baadal.config import get_settings, load_settings
from baadal.errors import ConfigError

pytestmark = pytest.mark.unit


def test_web_defaults_are_loopback_8080() -> None:
    web = load_settings().web
    assert (web.host, web.port, web.workers, web.tls_cert, web.public_url) == (
        "127.0.0.1",
        8080,
        1,
        "",
        "",
    )


@pytest.mark.parametrize(
    ("env", "value"),
    [
        ("BAADAL_WEB__PORT", "0"),
        ("BAADAL_WEB__PORT", "70000"),
        ("BAADAL_WEB__WORKERS", "0"),
        ("BAADAL_WEB__HOST", "a b"),
        ("BAADAL_WEB__PUBLIC_URL", "ftp://x"),
        ("BAADAL_WEB__TLS_CERT", "/etc/cert.pem"),  # without its key
        ("BAADAL_WEB__SESSION_HOURS", "0"),
        ("BAADAL_WEB__SESSION_HOURS", "100000"),
        ("BAADAL_WEB__SESSION_IDLE_MINUTES", "1"),
    ],
)
def test_bad_web_settings_are_one_clear_error(
    monkeypatch: pytest.MonkeyPatch, env: str, value: str
) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(ConfigError, match=r"web"):
        load_settings()


def test_serve_runs_the_app_factory_with_the_settings(
    monkeypatch: pytest.MonkeyPatch, _isolated_home: Path
) -> None:
    import uvicorn

    from baadal.api.app import app_from_settings
    from baadal.db.schema import upgrade
    from baadal.db.session import get_engine

    monkeypatch.setenv("BAADAL_WEB__PORT", "18080")
    monkeypatch.setenv("BAADAL_WEB__PUBLIC_URL", "https://cloud.example.org")
    get_settings.cache_clear()
    upgrade(get_engine(get_settings()))
    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda target, **kw: calls.append((target, kw)))
    result = CliRunner().invoke(app, ["serve"])
    assert result.exit_code == 0, result.output
    assert "https://cloud.example.org/api/v1" in result.output
    ((target, options),) = calls
    assert options["factory"] and options["port"] == 18080 and options["host"] == "127.0.0.1"
    module, _, name = target.partition(":")
    assert getattr(__import__(module, fromlist=[name]), name) is app_from_settings
    assert app_from_settings().openapi_url == "/api/v1/openapi.json"


def test_serve_without_a_database_schema_is_one_line(_isolated_home: Path) -> None:
    result = CliRunner().invoke(app, ["serve"])
    assert result.exit_code == 2 and "Traceback" not in result.output
