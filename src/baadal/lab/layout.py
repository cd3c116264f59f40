"""Names and addresses of the lab (all names start with ``bdl-``; all addresses are in
10.99.0.0/16 and live only inside namespaces and links the lab makes)::

    management 10.99.0.0/24 (Linux bridge bdl-mgmt): controller .1, NAT box .2, hosts .1N,
        the hosts' BMCs .2N
    VLAN 10 "lab"   10.99.10.0/24: DHCP .1, controller .2, NAT box gateway .254
    VLAN 20 "lab-b" 10.99.20.0/24: the same layout (a second security domain)
    public 10.99.200.0/24 between the NAT box (.2) and the "internet" namespace (.1);
        public IPs for VMs: .100-.149, VNC consoles on .150
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from baadal.lab.hostns import LabHost

PREFIX = "bdl-"
MGMT_BRIDGE = "bdl-mgmt"
SWITCH_BRIDGE = "bdl-sw"
DHCP_NETNS = "bdl-dhcp"
NAT_NETNS = "bdl-nat"
INTERNET_NETNS = "bdl-inet"
CONTROLLER_MGMT_IP = "10.99.0.1"
NAT_MGMT_IP = "10.99.0.2"
NAT_MGMT_LINK = "bdl-mn"
BMC_NETNS = "bdl-bmc"
BMC_MGMT_LINK = "bdl-mb"
MGMT_PREFIX = 24
MGMT_BROADCAST = "10.99.0.255"
PUBLIC_CIDR = "10.99.200.0/24"
INTERNET_IP = "10.99.200.1"
NAT_PUBLIC_IP = "10.99.200.2"
NAT_PUBLIC_IF = "pub0"
PUBLIC_POOL = ("10.99.200.100", "10.99.200.149")
#: where users reach VM consoles (a public address of the NAT box, outside the pool)
VNC_IP = "10.99.200.150"
DATASTORE_NAME = "lab"
TEMPLATE_NAME = "tiny"
TEMPLATE_DIR = "tiny"
OVS_CTL = "/usr/share/openvswitch/scripts/ovs-ctl"
LIBVIRT_PORT = 16509
SSH_PORT = 22


@dataclass(frozen=True)
class LabVlan:
    """A VLAN of the lab with its security domain; every address follows from the tag."""

    tag: int
    name: str
    domain: str

    @property
    def network(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(f"10.99.{self.tag}.0/24")

    def _ip(self, last: int) -> str:
        return str(self.network.network_address + last)

    @property
    def dhcp_ip(self) -> str:
        return self._ip(1)

    @property
    def controller_ip(self) -> str:
        return self._ip(2)

    @property
    def gateway_ip(self) -> str:
        """The NAT box's leg on this VLAN: the VMs' default route."""
        return self._ip(254)

    @property
    def pool(self) -> tuple[str, str]:
        """Addresses Baadal hands to VMs (reserved in dnsmasq's hosts file)."""
        return self._ip(20), self._ip(99)

    @property
    def dynamic_range(self) -> tuple[str, str]:
        """dnsmasq's own range, for anything that is not a Baadal VM."""
        return self._ip(100), self._ip(200)

    @property
    def controller_port(self) -> str:
        return f"bdl-v{self.tag}"

    @property
    def dhcp_port(self) -> str:
        return f"bdl-d{self.tag}"

    @property
    def nat_port(self) -> str:
        return f"bdl-n{self.tag}"


VLANS: tuple[LabVlan, ...] = (LabVlan(10, "lab10", "lab"), LabVlan(20, "lab20", "lab-b"))

HOSTS: tuple[LabHost, ...] = tuple(
    LabHost(
        index=i,
        name=f"lab-h{i}",
        netns=f"bdl-h{i}",
        mgmt_ip=f"10.99.0.{10 + i}",
        host_uuid=f"00000000-0000-4000-8000-0000000000{10 + i:02d}",
        bmc_ip=f"10.99.0.{20 + i}",
    )
    for i in (1, 2)
)


def pool_mac(ip: str) -> str:
    """A fixed MAC per pool address (52:54:00:63:<3rd octet>:<4th>): stable across rebuilds."""
    third, last = (int(x) for x in ip.rsplit(".", 2)[1:])
    return f"52:54:00:63:{third:02X}:{last:02X}"
