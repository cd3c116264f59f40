"""The lab's wiring: network namespaces, the management bridge, the OVS switch, veth legs
and VLAN ports (each recorded in the lab state before it is made)."""

from __future__ import annotations

import time

from baadal.drivers.remote import run_local
from baadal.errors import BaadalError
from baadal.lab.layout import (
    CONTROLLER_MGMT_IP,
    MGMT_BRIDGE,
    MGMT_PREFIX,
    OVS_CTL,
    SWITCH_BRIDGE,
    VLANS,
    LabVlan,
)
from baadal.lab.state import LabError, State

CMD_TIMEOUT_S = 60.0


def run(argv: list[str], timeout: float = CMD_TIMEOUT_S) -> str:
    return run_local(argv, timeout=timeout).stdout


def succeeds(argv: list[str], timeout: float = CMD_TIMEOUT_S) -> bool:
    try:
        return run_local(argv, timeout=timeout, check=False).ok
    except BaadalError:
        return False


def netns_list() -> list[str]:
    out = run_local(["ip", "netns", "list"], check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def link_names() -> list[str]:
    out = run_local(["ip", "-o", "link", "show"], check=False).stdout
    names = []
    for line in out.splitlines():
        parts = line.split(":", 2)
        if len(parts) >= 2:
            names.append(parts[1].strip().split("@", 1)[0])
    return names


def ovs_bridges(db: str | None = None) -> list[str]:
    argv = ["ovs-vsctl", "--timeout=5"] + ([f"--db={db}"] if db else []) + ["list-br"]
    result = run_local(argv, check=False, timeout=10)
    return result.stdout.split() if result.ok else []


def root_network(state: State) -> None:
    """The controller's side: management bridge, the OVS switch and a port per VLAN."""
    if not succeeds(["ovs-vsctl", "--timeout=5", "show"]):
        state.record("root-ovs", "started")
        run([OVS_CTL, "start", "--system-id=random"])
    state.record("link", MGMT_BRIDGE)
    if not succeeds(["ip", "link", "add", MGMT_BRIDGE, "type", "bridge"]):
        raise LabError(f"cannot create the Linux bridge {MGMT_BRIDGE} (no bridge support?)")
    run(["ip", "addr", "add", f"{CONTROLLER_MGMT_IP}/{MGMT_PREFIX}", "dev", MGMT_BRIDGE])
    run(["ip", "link", "set", MGMT_BRIDGE, "up"])
    state.record("ovs-bridge", SWITCH_BRIDGE)
    run(["ovs-vsctl", "--timeout=10", "add-br", SWITCH_BRIDGE, "--",
          "set", "bridge", SWITCH_BRIDGE, "datapath_type=netdev"])  # fmt: skip
    for vlan in VLANS:
        vlan_port(state, vlan, vlan.controller_port, vlan.controller_ip)


def add_netns(state: State, netns: str) -> None:
    state.record("netns", netns)
    run(["ip", "netns", "add", netns])
    run(["ip", "-n", netns, "link", "set", "lo", "up"])


def mgmt_leg(state: State, netns: str, link: str, address: str) -> None:
    """A veth from the management bridge to ``mgmt0`` in ``netns`` with ``address``."""
    state.record("link", link)
    run(["ip", "link", "add", link, "type", "veth", "peer", "name", "mgmt0", "netns", netns])
    run(["ip", "link", "set", link, "master", MGMT_BRIDGE, "up"])
    run(["ip", "-n", netns, "addr", "add", f"{address}/{MGMT_PREFIX}", "dev", "mgmt0"])
    run(["ip", "-n", netns, "link", "set", "mgmt0", "up"])


def vlan_port(
    state: State, vlan: LabVlan, port: str, address: str, netns: str | None = None
) -> None:
    """An OVS internal port on ``vlan`` with ``address``, moved into ``netns`` if given."""
    state.record("link", port)
    run(["ovs-vsctl", "--timeout=10", "add-port", SWITCH_BRIDGE, port, f"tag={vlan.tag}",
          "--", "set", "interface", port, "type=internal"])  # fmt: skip
    _wait_link(port)
    ip = ["ip"]
    if netns is not None:
        run(["ip", "link", "set", port, "netns", netns])
        ip = ["ip", "-n", netns]
    run([*ip, "addr", "add", f"{address}/{vlan.network.prefixlen}", "dev", port])
    run([*ip, "link", "set", port, "up"])


def _wait_link(name: str, netns: str | None = None, timeout: float = 10.0) -> None:
    """OVS creates internal ports asynchronously; wait until the kernel has it."""
    argv = ["ip"] + (["-n", netns] if netns else []) + ["link", "show", name]
    deadline = time.monotonic() + timeout
    while not succeeds(argv):
        if time.monotonic() > deadline:
            raise LabError(f"interface {name} did not appear")
        time.sleep(0.05)
