"""Open vSwitch (userspace datapath) for tests: started by hand, no systemd.

The kernel here has no openvswitch module, so bridges use ``datapath_type=netdev``
(lab-notes.md). Daemons are left running for whoever comes next.
"""

from __future__ import annotations

import shutil
import subprocess

OVS_CTL = "/usr/share/openvswitch/scripts/ovs-ctl"


def ensure_ovs_bridge(bridge: str) -> str:
    if shutil.which("ovs-vsctl") is None:
        raise RuntimeError("Open vSwitch is not installed: apt-get install openvswitch-switch")
    if subprocess.run(["ovs-vsctl", "--timeout=5", "show"], capture_output=True).returncode:
        subprocess.run([OVS_CTL, "start", "--system-id=random"], check=True, capture_output=True)
    subprocess.run(
        ["ovs-vsctl", "--may-exist", "add-br", bridge, "--", "set", "bridge", bridge,
         "datapath_type=netdev"],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return bridge
