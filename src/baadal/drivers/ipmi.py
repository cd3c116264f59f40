"""One IPMI-over-LAN power request (RMCP+, through pyghmi), run as its own short process.

pyghmi keeps its sessions in process-wide state with an I/O thread, and a second session
to the same BMC in one process hangs; a worker lives for days and talks to many BMCs. So
each request runs as ``python -m baadal.drivers.ipmi`` with the request (password included)
as JSON on stdin, never in an argument list, and prints the BMC's answer as JSON.
"""

from __future__ import annotations

import contextlib
import json
import sys
from typing import Any

#: Baadal's IPMI action names in pyghmi's words ("soft" is an ACPI shutdown request)
PYGHMI_ACTIONS = {"on": "on", "off": "off", "soft": "shutdown", "reset": "reset"}


def request(bmc: str, user: str, password: str, port: int, action: str) -> dict[str, Any]:
    """{"state": power state after the request} or {"error": why it failed}."""
    from pyghmi.exceptions import IpmiException
    from pyghmi.ipmi import command

    try:
        session = command.Command(
            bmc=bmc, userid=user, password=password, port=port, keepalive=False
        )
        if action == "status":
            reply = session.get_power()
        else:
            reply = session.set_power(PYGHMI_ACTIONS[action], wait=False)
    except IpmiException as exc:
        return {"error": str(exc) if exc.args and exc.args[0] else "the BMC does not answer"}
    return {"state": reply.get("powerstate") or reply.get("pendingpowerstate")}


def main() -> None:
    args = json.load(sys.stdin)
    with contextlib.redirect_stdout(sys.stderr):  # pyghmi prints diagnostics to stdout
        answer = request(**args)
    print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()
