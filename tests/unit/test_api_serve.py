"""``baadal serve`` and its ``[web]`` settings."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from baadal.cli.main import app
from baadal.config import get_settings, load_settings
from baadal.errors import ConfigError
from tests.support.sshd import free_port

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
    websockify_port = free_port()
    monkeypatch.setenv("BAADAL_NOVNC__PORT", str(websockify_port))
    get_settings.cache_clear()
    upgrade(get_engine(get_settings()))
    calls = []

    def run(target: str, **kw: object) -> None:
        # websockify listens while the server runs (the console's WebSocket goes to it)
        socket.create_connection(("127.0.0.1", websockify_port), 5).close()
        calls.append((target, kw))

    monkeypatch.setattr(uvicorn, "run", run)
    result = CliRunner().invoke(app, ["serve"])
    assert result.exit_code == 0, result.output
    with pytest.raises(OSError):  # and stops with it
        socket.create_connection(("127.0.0.1", websockify_port), 5).close()
    assert "https://cloud.example.org/api/v1" in result.output
    ((target, options),) = calls
    assert options["factory"] and options["port"] == 18080 and options["host"] == "127.0.0.1"
    module, _, name = target.partition(":")
    assert getattr(__import__(module, fromlist=[name]), name) is app_from_settings
    assert app_from_settings().openapi_url == "/api/v1/openapi.json"


def test_serve_without_a_database_schema_is_one_line(_isolated_home: Path) -> None:
    result = CliRunner().invoke(app, ["serve"])
    assert result.exit_code == 2 and "Traceback" not in result.output


def test_serve_with_the_console_port_taken_is_one_line(
    monkeypatch: pytest.MonkeyPatch, _isolated_home: Path
) -> None:
    from baadal.db.schema import upgrade
    from baadal.db.session import get_engine

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        monkeypatch.setenv("BAADAL_NOVNC__PORT", str(taken.getsockname()[1]))
        get_settings.cache_clear()
        upgrade(get_engine(get_settings()))
        result = CliRunner().invoke(app, ["serve"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "[novnc] port" in result.output and "in use" in result.output


def test_websockify_ends_when_serve_is_killed(_isolated_home: Path) -> None:
    """Even a SIGKILL of ``baadal serve`` leaves no websockify holding its port."""
    import os
    import signal
    import subprocess
    import sys

    from baadal.db.schema import upgrade
    from baadal.db.session import get_engine

    upgrade(get_engine(get_settings()))
    port = free_port()
    env = {**os.environ, "BAADAL_NOVNC__PORT": str(port), "BAADAL_WEB__PORT": str(free_port())}
    serve = subprocess.Popen([sys.executable, "-m", "baadal", "serve"], env=env)
    try:
        assert _waits_for(lambda: _listening(port)), "websockify did not start"
        os.kill(serve.pid, signal.SIGKILL)
        serve.wait()
        assert _waits_for(lambda: not _listening(port)), "websockify outlived serve"
    finally:
        serve.kill()
        serve.wait()


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), 1).close()
    except OSError:
        return False
    return True


def _waits_for(condition: object, timeout_s: float = 30.0) -> bool:
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.1)
    return False
