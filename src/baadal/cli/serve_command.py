"""``baadal serve``: the REST API and the portal on uvicorn, per ``[web]``, and websockify
(the console in the browser) as its own process on loopback, per ``[novnc]``."""

from __future__ import annotations

import contextlib
import ctypes
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import typer

from baadal import constants as C
from baadal.cli.door import handle_errors
from baadal.config import Settings, get_settings
from baadal.errors import ConfigError
from baadal.services import runtime

#: the factory uvicorn imports in each worker process (a string: the CLI does not import
#: the API door, and several workers need an import string anyway)
APP_FACTORY = "baadal.api.app:app_from_settings"
LOOPBACK = "127.0.0.1"
#: prctl(2) option: the signal the kernel sends a process when its parent dies
PR_SET_PDEATHSIG = 1


def websockify_argv(settings: Settings) -> list[str]:
    """websockify on loopback with Baadal's token plugin (it reads the same settings)."""
    return [
        sys.executable,
        "-m",
        "baadal.web.websockify_process",
        "--token-plugin",
        C.CONSOLE_TOKEN_PLUGIN,
        f"{LOOPBACK}:{settings.novnc.port}",
    ]


def _end_with_parent() -> None:
    """Run in websockify's process before it starts: the kernel ends it when ``baadal
    serve`` dies, even by SIGKILL, and after a SIGTERM, which uvicorn raises again once
    it has shut down, so this process dies of it before a ``finally`` could run. SIGKILL,
    because websockify's SIGTERM handler does not always end it (seen: it kept serving);
    its connections' children die with it (``web/websockify_process.py``)."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _port_taken(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind((LOOPBACK, port))
        except OSError:
            return True
    return False


def _wait_listening(process: subprocess.Popen[bytes], port: int) -> None:
    deadline = time.monotonic() + C.WEBSOCKIFY_START_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ConfigError(f"websockify exited with code {process.returncode} at its start")
        with contextlib.suppress(OSError), socket.create_connection((LOOPBACK, port), 0.5):
            return
        time.sleep(0.1)
    raise ConfigError(f"websockify did not listen on {LOOPBACK}:{port} within its start time")


@contextlib.contextmanager
def websockify(settings: Settings) -> Iterator[subprocess.Popen[bytes]]:
    """websockify running for as long as the block runs (ended with it, even on errors)."""
    port = settings.novnc.port
    if _port_taken(port):
        raise ConfigError(f"[novnc] port {port} is in use on {LOOPBACK}: choose another one")
    argv = websockify_argv(settings)
    process = subprocess.Popen(  # noqa: S603 - a fixed argument list, no shell
        argv,
        stdin=subprocess.DEVNULL,
        preexec_fn=_end_with_parent,  # started before uvicorn: no other thread yet
    )
    try:
        _wait_listening(process, port)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@handle_errors
def serve_cmd() -> None:
    """Serve the API at web.host:web.port (127.0.0.1:8080 by default), under /api/v1, and
    the console's websockify on 127.0.0.1:novnc.port."""
    import uvicorn

    settings = get_settings()
    runtime.checked_engine(settings)  # a database without the current schema fails here
    web = settings.web
    typer.echo(f"serving the API on {web.public_url or f'http://{web.host}:{web.port}'}/api/v1")
    with websockify(settings):
        uvicorn.run(
            APP_FACTORY,
            factory=True,
            host=web.host,
            port=web.port,
            workers=web.workers,
            ssl_certfile=web.tls_cert or None,
            ssl_keyfile=web.tls_key or None,
            log_config=None,
        )
