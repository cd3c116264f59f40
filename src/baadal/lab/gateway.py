"""The lab's gateway: the NAT box namespace (a gateway leg on every VLAN, masquerade to
the "internet" namespace, no routing between VLANs, sshd for Baadal) and the internet."""

from __future__ import annotations

import ipaddress

from baadal.config import Settings
from baadal.lab import ssh
from baadal.lab.layout import (
    INTERNET_IP,
    INTERNET_NETNS,
    NAT_MGMT_IP,
    NAT_MGMT_LINK,
    NAT_NETNS,
    NAT_PUBLIC_IF,
    NAT_PUBLIC_IP,
    PREFIX,
    PUBLIC_CIDR,
    VLANS,
)
from baadal.lab.state import State, lab_dir, nat_dir
from baadal.lab.wiring import add_netns, mgmt_leg, run, vlan_port

#: marks the NAT box rules the lab itself adds (Baadal's own rules carry another tag)
LAB_RULE_TAG = "baadal-lab"


def start_natbox(settings: Settings, state: State) -> None:
    """The NAT box: gateway leg on every VLAN, public leg to the "internet" namespace,
    forwarding with masquerade, no routing between VLANs (security domains), and sshd on
    the management network so Baadal configures it like a real NAT machine."""
    add_netns(state, NAT_NETNS)
    mgmt_leg(state, NAT_NETNS, NAT_MGMT_LINK, NAT_MGMT_IP)
    for vlan in VLANS:
        vlan_port(state, vlan, vlan.nat_port, vlan.gateway_ip, NAT_NETNS)
    add_netns(state, INTERNET_NETNS)
    prefix = ipaddress.IPv4Network(PUBLIC_CIDR).prefixlen
    nat = ["ip", "-n", NAT_NETNS]
    run([*nat, "link", "add", NAT_PUBLIC_IF, "type", "veth",
          "peer", "name", "wan0", "netns", INTERNET_NETNS])  # fmt: skip
    run([*nat, "addr", "add", f"{NAT_PUBLIC_IP}/{prefix}", "dev", NAT_PUBLIC_IF])
    run([*nat, "link", "set", NAT_PUBLIC_IF, "up"])
    run(["ip", "-n", INTERNET_NETNS, "addr", "add", f"{INTERNET_IP}/{prefix}", "dev", "wan0"])
    run(["ip", "-n", INTERNET_NETNS, "link", "set", "wan0", "up"])
    run([*nat, "route", "add", "default", "via", INTERNET_IP])
    in_nat = ["ip", "netns", "exec", NAT_NETNS]
    run([*in_nat, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])
    tag = ["-m", "comment", "--comment", LAB_RULE_TAG]
    private = str(ipaddress.IPv4Network("10.99.0.0/16"))
    run([*in_nat, "iptables", "-t", "nat", "-A", "POSTROUTING", "-s", private,
          "-o", NAT_PUBLIC_IF, "-j", "MASQUERADE", *tag])  # fmt: skip
    run([*in_nat, "iptables", "-A", "FORWARD", "-i", f"{PREFIX}n+", "-o", f"{PREFIX}n+",
          "-j", "DROP", *tag])  # fmt: skip
    config = ssh.prepare_sshd(
        nat_dir(settings) / "sshd", NAT_MGMT_IP, str(nat_dir(settings) / "sshd.pid"),
        lab_dir(settings),
    )  # fmt: skip
    run([*in_nat, *ssh.sshd_argv(config)])
