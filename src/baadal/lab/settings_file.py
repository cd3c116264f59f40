"""The settings that point Baadal at the lab's DHCP server, NAT box and BMCs, applied to
this process and written to the home's settings file (removed again by ``lab down``)."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

from baadal import constants as C
from baadal.config import Settings
from baadal.files import write_atomically
from baadal.home import PRIVATE_FILE_MODE
from baadal.lab import bmc, ssh
from baadal.lab.hostns import POWEROFF_COMMAND
from baadal.lab.layout import (
    MGMT_BROADCAST,
    NAT_MGMT_IP,
    NAT_PUBLIC_IF,
    VLANS,
    VNC_IP,
)
from baadal.lab.state import dns_dir, hosts_file, lab_dir

LAB_CONFIG_MARK = "# written by `baadal lab up` (removed by `baadal lab down`)"


def lab_settings(settings: Settings) -> dict[str, dict[str, str | list[str]]]:
    """How Baadal reaches the lab's DHCP server and NAT box, as settings sections."""
    dns = dns_dir(settings)
    return {
        "dhcp": {
            "backend": C.DhcpBackend.DNSMASQ.value,
            "dhcp_ip": "",
            "hosts_file": str(hosts_file(settings)),
            "pid_file": str(dns / "dnsmasq.pid"),
        },
        "nat": {
            "nat_type": C.NatType.SOFTWARE.value,
            "nat_ip": NAT_MGMT_IP,
            "nat_user": "root",
            "nat_ssh_key": str(ssh.client_key(lab_dir(settings))),
            "public_interface": NAT_PUBLIC_IF,
            "vnc_ip": VNC_IP,
        },
        # `vm create` without --domain puts the VM in the first lab VLAN's domain
        "network": {"default_security_domain": VLANS[0].domain},
        # a lab host "powers off" by stopping its daemons and waits for a real WOL packet;
        # its BMC (IPMI) does the same on request
        "power": {
            "poweroff_command": list(POWEROFF_COMMAND),
            "wol_broadcast": MGMT_BROADCAST,
            "ipmi_user": bmc.BMC_USER,
            "ipmi_password_file": str(bmc.password_file(lab_dir(settings))),
        },
    }


def lab_config_file(settings: Settings) -> Path:
    return settings.home / "baadal.toml"


def apply_lab_settings(settings: Settings) -> None:
    """Point this process's settings at the lab, and write them to the home's settings
    file so every later ``baadal`` command (and worker) uses them too. A settings file
    the lab did not write, or an explicit BAADAL_CONFIG, is left alone."""
    sections = lab_settings(settings)
    for section, values in sections.items():
        target = getattr(settings, section)
        for key, value in values.items():
            setattr(target, key, type(getattr(target, key))(value))
    path = lab_config_file(settings)
    if os.environ.get("BAADAL_CONFIG") or (path.exists() and not _lab_wrote(path)):
        return
    lines = [LAB_CONFIG_MARK]
    for section, values in sections.items():
        lines += ["", f"[{section}]"] + [f"{k} = {json.dumps(v)}" for k, v in values.items()]
    write_atomically(path, "\n".join(lines) + "\n", PRIVATE_FILE_MODE)


def _lab_wrote(path: Path) -> bool:
    with contextlib.suppress(OSError):
        return path.read_text().startswith(LAB_CONFIG_MARK)
    return False


def remove_lab_config(settings: Settings) -> bool:
    path = lab_config_file(settings)
    if path.exists() and _lab_wrote(path):
        path.unlink()
        return True
    return False
