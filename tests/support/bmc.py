"""A BMC on 127.0.0.1 for tests: a separate process answering IPMI-over-LAN (pyghmi's
BMC side, with the lab's SHA-1 fix) whose chassis power state is kept in a file, so tests
see what Baadal's IPMI requests really did. ``python -m tests.support.bmc PORT USER
PASSWORD STATE_FILE``."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from pyghmi.ipmi import bmc as pyghmi_bmc
from pyghmi.ipmi.private import serversession

from baadal.lab.bmc import _sha1_only

HOST = "127.0.0.1"


class FileBmc(pyghmi_bmc.Bmc):  # type: ignore[misc]
    def __init__(self, port: int, user: str, password: str, state: Path) -> None:
        super().__init__({user: password}, port=port, address=HOST)
        self.state = state

    def get_power_state(self) -> str:
        return self.state.read_text().split()[-1]

    def _set(self, action: str, power: str) -> int:
        with self.state.open("a") as f:
            f.write(f"{action} {power}\n")
        return 0

    def power_on(self) -> int:
        return self._set("on", "on")

    def power_off(self) -> int:
        return self._set("off", "off")

    def power_shutdown(self) -> int:
        return self._set("soft", "off")

    def power_reset(self) -> int:
        return self._set("reset", "on")


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def running_bmc(
    workdir: Path, user: str, password: str, power: str = "off"
) -> Iterator[tuple[int, Path]]:
    """Start a BMC; yields (port, state file). The state file's last word is the power."""
    state = workdir / "bmc-state"
    state.write_text(f"initial {power}\n")
    port = free_udp_port()
    argv = [sys.executable, "-m", "tests.support.bmc", str(port), user, password, str(state)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().startswith("listening")
        time.sleep(0.05)
        yield port, state
    finally:
        proc.kill()
        proc.wait(10)


if __name__ == "__main__":
    serversession.ServerSession.create_open_session_response = _sha1_only(
        serversession.ServerSession.create_open_session_response
    )
    port, user, password, state_file = sys.argv[1:5]
    FileBmc(int(port), user, password, Path(state_file))
    print("listening", flush=True)
    pyghmi_bmc.Bmc.listen(timeout=30)
