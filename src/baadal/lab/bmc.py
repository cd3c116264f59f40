"""The lab hosts' BMCs: a process per host in the namespace ``bdl-bmc`` answers
IPMI-over-LAN (RMCP+, port 623) on the host's BMC address, like the always-on management
controller of a real server.

"chassis power off/soft" runs the host's power-off script inside its namespaces (what
pulling the plug does to the lab host), "chassis power on" wakes it by sending its NIC a
magic packet (the lab host's "NIC" is its wake-on-LAN listener), and "chassis status" is
on while the host's libvirtd runs. Run as ``python -m baadal.lab.bmc LAB_DIR HOST``; the user
is :data:`BMC_USER` and the password is in ``LAB_DIR/bmc/password``.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Any

from pyghmi.ipmi import bmc as pyghmi_bmc
from pyghmi.ipmi.private import serversession

from baadal.drivers.remote import run_local
from baadal.host.power import send_wol
from baadal.lab.hostns import LabHost, mgmt_mac
from baadal.lab.layout import HOSTS, MGMT_BROADCAST

BMC_USER = "baadal"
POWEROFF_TIMEOUT_S = 30.0
#: RAKP-HMAC-SHA1, the only authentication algorithm pyghmi's BMC side implements
_SHA1 = 1
#: RMCP+ status "invalid authentication algorithm"
_INVALID_AUTH_ALGORITHM = 0x11


def password_file(lab: Path) -> Path:
    return lab / "bmc" / "password"


def pid_file(lab: Path, host: LabHost) -> Path:
    return lab / "bmc" / f"{host.name}.pid"


def log_file(lab: Path, host: LabHost) -> Path:
    return lab / "bmc" / f"{host.name}.log"


def _sha1_only(create: Any) -> Any:
    """pyghmi's BMC answers every open-session request with SHA-1 even when the client
    asked for SHA-256, which the client (pyghmi too) then fails to verify. Refusing other
    algorithms makes clients retry with SHA-1, as they do with real SHA-1-only BMCs."""

    def create_open_session_response(self: Any, request: bytearray) -> bytearray:
        if request[12] != _SHA1:
            return bytearray([request[0], _INVALID_AUTH_ALGORITHM, 0, 0]) + request[4:8]
        return bytearray(create(self, request))

    return create_open_session_response


class LabBmc(pyghmi_bmc.Bmc):  # type: ignore[misc]
    """The BMC of one lab host."""

    def __init__(self, host: LabHost, lab: Path, password: str, mac: str) -> None:
        super().__init__({BMC_USER: password}, port=623, address=host.bmc_ip)
        self.host, self.lab, self.mac = host, lab, mac

    def _daemon_pid(self) -> int | None:
        """libvirtd's pid while the host is on (its pid file is under the host's /run)."""
        with contextlib.suppress(OSError, ValueError):
            pid = int(self.host.pid_file(self.lab, "libvirtd").read_text().strip())
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            return pid if state != "Z" else None
        return None

    def get_power_state(self) -> str:
        return "on" if self._daemon_pid() else "off"

    def power_on(self) -> int:
        print(f"{self.host.name}: power on", flush=True)
        if self._daemon_pid() is None:
            send_wol(self.mac, MGMT_BROADCAST)
        return 0

    def power_off(self) -> int:
        print(f"{self.host.name}: power off", flush=True)
        pid = self._daemon_pid()
        if pid is not None:
            argv = ["nsenter", "-t", str(pid), "-n", "-m", "sh", "/run/baadal-lab-poweroff"]
            run_local(argv, timeout=POWEROFF_TIMEOUT_S, check=False)
        return 0

    def power_shutdown(self) -> int:
        return self.power_off()


def main(lab: Path, host_name: str) -> None:
    """Serve one host's BMC (pyghmi mixes up two BMCs served by one process)."""
    serversession.ServerSession.create_open_session_response = _sha1_only(
        serversession.ServerSession.create_open_session_response
    )
    (host,) = (h for h in HOSTS if h.name == host_name)
    LabBmc(host, lab, password_file(lab).read_text().strip(), mgmt_mac(host))
    print(f"BMC listening on {host.bmc_ip}", flush=True)
    pyghmi_bmc.Bmc.listen(timeout=30)


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
