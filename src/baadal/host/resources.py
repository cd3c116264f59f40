"""What a host has: CPUs, RAM, disk, its MAC and whether it is itself a VM (the seed's
host_resource_details, and host_helper's get_host_mac_address and get_host_type).

CPU count and RAM come from libvirt, which already holds a connection to the host. The
rest is read over SSH from files and small commands (never a shell pipeline); their output
is parsed by the pure ``parse_*`` functions below, which raise :class:`ValueError` on
output they do not understand. The SSH wrappers turn that into
:class:`~baadal.errors.RemoteCommandError` naming host and command, so callers handle one
error type for "could not learn this about the host".
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass

from baadal import constants as C
from baadal.config import Settings
from baadal.db.models import Host
from baadal.drivers import hypervisor_for
from baadal.drivers.base import NotSupported
from baadal.drivers.remote import RemoteTarget, execute_remote_cmd
from baadal.errors import RemoteCommandError

KB_PER_GB = 1024 * 1024
MB_PER_GB = 1024
#: what get_host_hdd measures unless told otherwise (e.g. the datastore mount point)
DEFAULT_DISK_PATH = "/"
#: /sys/class/dmi/id/{sys_vendor,product_name} words that mean "this machine is a VM"
#: (innotek is VirtualBox's vendor string)
VIRTUAL_DMI_MARKERS = (
    "qemu",
    "kvm",
    "vmware",
    "virtualbox",
    "innotek",
    "xen",
    "microsoft",
    "bochs",
)
DMI_FILES = ("/sys/class/dmi/id/sys_vendor", "/sys/class/dmi/id/product_name")

_MAC = re.compile(r"[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}")
#: an interface name as the kernel allows it (no slash, no whitespace, not . or ..)
_IFNAME = re.compile(r"(?!\.\.?\Z)[^/\s]{1,15}")
#: one df -P line; file system and mount point may contain spaces, the numbers cannot
_DF_LINE = re.compile(r"(?P<fs>.*?)\s+(?P<blocks>\d+)\s+\d+\s+\d+\s+\d+%\s+(?P<mount>.*)")


@dataclass(frozen=True)
class HostResources:
    """What the host row's CPUs, RAM and HDD columns hold."""

    cpus: int
    ram_gb: int
    hdd_gb: int


# --------------------------------------------------------------------------- parsers


def parse_df_total_kb(output: str) -> int:
    """Size in KiB of the file system in ``df -P -k <path>`` output."""
    lines = [line for line in output.splitlines() if line.strip()]
    if len(lines) < 2:
        raise ValueError(f"df printed no file system line: {output.strip()[:200]!r}")
    match = _DF_LINE.fullmatch(lines[-1].strip())
    if match is None:
        raise ValueError(f"unexpected df line: {lines[-1].strip()[:200]!r}")
    return int(match["blocks"])


def parse_interface_for_address(output: str, address: str) -> str:
    """The interface carrying IPv4 ``address`` in ``ip -o -4 addr show`` output."""
    seen = []
    for line in output.splitlines():
        fields = line.split()
        # "2: eth0    inet 10.0.0.5/24 brd ... scope global eth0\ valid_lft ..."
        if len(fields) < 4 or fields[2] != "inet":
            continue
        ifname = fields[1].split("@", 1)[0]
        ip = fields[3].split("/", 1)[0]
        seen.append(f"{ip} ({ifname})")
        if ip == address:
            if not _IFNAME.fullmatch(ifname):
                raise ValueError(f"unexpected interface name {ifname!r}")
            return ifname
    found = ", ".join(seen) or "none"
    raise ValueError(f"no interface has address {address}; addresses found: {found}")


def parse_mac(output: str) -> str:
    """A MAC from /sys/class/net/<if>/address, upper-case like every MAC Baadal stores."""
    mac = output.strip()
    if not _MAC.fullmatch(mac):
        raise ValueError(f"not a MAC address: {mac[:60]!r}")
    return mac.upper()


def cpuinfo_has_hypervisor_flag(output: str) -> bool:
    """True when a ``flags`` line of /proc/cpuinfo lists ``hypervisor`` (x86 guests)."""
    for line in output.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() in ("flags", "Features") and "hypervisor" in value.split():
            return True
    return False


def dmi_names_virtual_machine(*texts: str) -> bool:
    """True when the DMI vendor or product name is a known hypervisor's."""
    text = " ".join(texts).lower()
    return any(marker in text for marker in VIRTUAL_DMI_MARKERS)


# --------------------------------------------------------------------------- over SSH


def _unexpected(target: RemoteTarget, argv: list[str], exc: ValueError) -> RemoteCommandError:
    return RemoteCommandError(target.label, argv, f"unexpected output: {exc}")


def _read(target: RemoteTarget, argv: list[str]) -> str:
    return execute_remote_cmd(target, argv).stdout


def get_host_cpu(host: Host) -> int:
    """Number of logical CPUs libvirt sees on the host."""
    return hypervisor_for(host.libvirt_uri).node_info().cpus


def get_host_ram(host: Host) -> int:
    """RAM in GB (rounded). The node's memory statistics (MemTotal) are preferred to the
    node info: libvirt's node info sums NUMA cells and misses memory outside them
    (hot-plugged virtio-mem: 5.5 GB reported on a 23.5 GB lab machine)."""
    hv = hypervisor_for(host.libvirt_uri)
    try:
        return round(hv.node_memory_kb().total_kb / KB_PER_GB)
    except NotSupported:
        return round(hv.node_info().memory_mb / MB_PER_GB)


def get_host_hdd(host: Host, settings: Settings, path: str = DEFAULT_DISK_PATH) -> int:
    """Size in GB (rounded) of the file system holding ``path`` on the host."""
    target = RemoteTarget.for_host(host, settings)
    argv = ["df", "-P", "-k", "--", path]
    try:
        return round(parse_df_total_kb(_read(target, argv)) / KB_PER_GB)
    except ValueError as exc:
        raise _unexpected(target, argv, exc) from None


def host_resource_details(
    host: Host, settings: Settings, *, disk_path: str = DEFAULT_DISK_PATH
) -> HostResources:
    """CPUs, RAM (GB) and disk (GB) of the host, for its row's CPUs/RAM/HDD columns."""
    return HostResources(
        cpus=get_host_cpu(host),
        ram_gb=get_host_ram(host),
        hdd_gb=get_host_hdd(host, settings, disk_path),
    )


def _ipv4_of(target: RemoteTarget) -> str:
    """The host's address as an IPv4 literal (a name is resolved here, as ping does)."""
    try:
        return socket.gethostbyname(target.address)
    except OSError as exc:
        argv = ["ip", "-o", "-4", "addr", "show"]
        raise RemoteCommandError(target.label, argv, f"cannot resolve address: {exc}") from None


def interface_of(target: RemoteTarget) -> str:
    """The interface that carries the machine's own address (the one we reach it at)."""
    address = _ipv4_of(target)
    argv = ["ip", "-o", "-4", "addr", "show"]
    try:
        return parse_interface_for_address(_read(target, argv), address)
    except ValueError as exc:
        raise _unexpected(target, argv, exc) from None


def get_host_mac_address(host: Host, settings: Settings) -> str:
    """MAC of the interface that carries the host's address (upper-case)."""
    target = RemoteTarget.for_host(host, settings)
    ifname = interface_of(target)
    argv = ["cat", f"/sys/class/net/{ifname}/address"]
    try:
        return parse_mac(_read(target, argv))
    except ValueError as exc:
        raise _unexpected(target, argv, exc) from None


def get_host_type(host: Host, settings: Settings) -> C.HostType:
    """VIRTUAL when the CPU says it runs under a hypervisor or DMI names one."""
    target = RemoteTarget.for_host(host, settings)
    # grep exits 1 when nothing matches (e.g. no flags line): that is an answer, not an error
    argv = ["grep", "-m", "1", "-E", r"^(flags|Features)\b", "/proc/cpuinfo"]
    result = execute_remote_cmd(target, argv, check=False)
    if result.exit_code > 1:
        raise RemoteCommandError(target.label, argv, result.stderr.strip() or "grep failed")
    if cpuinfo_has_hypervisor_flag(result.stdout):
        return C.HostType.VIRTUAL
    # DMI is missing on some machines (ARM, microVMs): read what exists, one file per line
    dmi = execute_remote_cmd(target, ["cat", *DMI_FILES], check=False).stdout
    return C.HostType.VIRTUAL if dmi_names_virtual_machine(dmi) else C.HostType.PHYSICAL
