"""How busy a host is (the seed's host_utilization): CPU %, disk KB/s, RAM used, network
bytes.

The seed parsed iostat, top and ifconfig, whose formats vary by version and locale.
Here CPU and memory come from libvirt's node statistics, falling back to /proc over SSH
when the driver has none; disk and network come from /proc/diskstats and /proc/net/dev
over SSH, parsed by the pure ``parse_*`` functions below. Rates need two samples:
:func:`get_host_resources_usage` takes all first samples, waits one interval, then all
second samples, so the whole call costs about one interval.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from baadal.config import Settings
from baadal.db.models import Host
from baadal.drivers import hypervisor_for
from baadal.drivers.base import Hypervisor, NodeCpuTimes, NodeMemory, NotSupported
from baadal.drivers.remote import LOCALHOST, RemoteTarget, execute_remote_cmd, run_local
from baadal.errors import RemoteCommandError
from baadal.host.resources import interface_of

DEFAULT_INTERVAL_S = 1.0
#: /proc/diskstats counts 512-byte sectors whatever the device's real sector size
SECTOR_BYTES = 512
#: /proc/stat counts USER_HZ ticks; only ratios are used, so the exact value is moot
NS_PER_TICK = 10_000_000
#: block devices whose I/O is counted again on the disks below them, or is not local disk
#: I/O at all (loop files, RAM disks, device-mapper/LVM, md RAID, CD-ROM, network disks)
NON_DISK_PREFIXES = ("loop", "ram", "zram", "dm-", "md", "sr", "fd", "nbd", "drbd")
LOOPBACK_INTERFACES = frozenset({"lo"})
_LOCAL_TIMEOUT_S = 30.0

T = TypeVar("T")
log = logging.getLogger("baadal")

_MEMINFO_KEYS = ("MemTotal", "MemFree", "Buffers", "Cached")


@dataclass(frozen=True)
class HostUsage:
    """The seed's host_usage list, with names."""

    cpu_percent: float  # user + nice + system over the interval, 0..100
    disk_kbps: float  # KB read + KB written per second
    ram_used_kb: int  # total - free - buffers - cached
    net_rx_bytes: int  # cumulative, all interfaces but loopback
    net_tx_bytes: int


@dataclass(frozen=True)
class DiskSample:
    """Remote uptime and cumulative sectors of the host's whole disks."""

    uptime_s: float
    sectors_read: int
    sectors_written: int


# --------------------------------------------------------------------------- parsers


def parse_proc_stat(output: str) -> NodeCpuTimes:
    """The aggregate ``cpu`` line of /proc/stat as libvirt groups it: user includes nice,
    kernel includes irq and softirq."""
    for line in output.splitlines():
        fields = line.split()
        if fields and fields[0] == "cpu":
            try:
                ticks = [int(v) for v in fields[1:8]]
            except ValueError:
                raise ValueError(f"unexpected /proc/stat cpu line: {line[:200]!r}") from None
            if len(ticks) < 5:
                raise ValueError(f"/proc/stat cpu line too short: {line[:200]!r}")
            ticks += [0] * (7 - len(ticks))
            user, nice, system, idle, iowait, irq, softirq = ticks
            return NodeCpuTimes(
                kernel_ns=(system + irq + softirq) * NS_PER_TICK,
                user_ns=(user + nice) * NS_PER_TICK,
                idle_ns=idle * NS_PER_TICK,
                iowait_ns=iowait * NS_PER_TICK,
            )
    raise ValueError("no 'cpu' line in /proc/stat output")


def parse_meminfo(output: str) -> NodeMemory:
    """MemTotal, MemFree, Buffers and Cached (KiB) from /proc/meminfo."""
    values: dict[str, int] = {}
    for line in output.splitlines():
        key, sep, rest = line.partition(":")
        if sep and key in _MEMINFO_KEYS:
            try:
                values[key] = int(rest.split()[0])
            except (IndexError, ValueError):
                raise ValueError(f"unexpected /proc/meminfo line: {line[:200]!r}") from None
    missing = [key for key in ("MemTotal", "MemFree") if key not in values]
    if missing:
        raise ValueError(f"/proc/meminfo lacks {', '.join(missing)}")
    return NodeMemory(
        total_kb=values["MemTotal"],
        free_kb=values["MemFree"],
        buffers_kb=values.get("Buffers", 0),
        cached_kb=values.get("Cached", 0),
    )


def parse_diskstats(output: str) -> dict[str, tuple[int, int]]:
    """(sectors read, sectors written) per block device in /proc/diskstats."""
    stats: dict[str, tuple[int, int]] = {}
    for line in output.splitlines():
        fields = line.split()
        if not fields:
            continue
        # major minor name reads merged sectors_read ms writes merged sectors_written ...
        if len(fields) < 10:
            raise ValueError(f"unexpected /proc/diskstats line: {line[:200]!r}")
        try:
            stats[fields[2]] = (int(fields[5]), int(fields[9]))
        except ValueError:
            raise ValueError(f"unexpected /proc/diskstats line: {line[:200]!r}") from None
    return stats


def _is_partition(name: str, names: set[str]) -> bool:
    """sda1 of sda, nvme0n1p2 of nvme0n1, mmcblk0p1 of mmcblk0."""
    stripped = name.rstrip("0123456789")
    if stripped == name:
        return False
    if stripped in names:
        return True
    return stripped.endswith("p") and stripped[:-1] in names and stripped[-2:-1].isdigit()


def whole_disks(stats: Mapping[str, tuple[int, int]]) -> dict[str, tuple[int, int]]:
    """Only physical-looking whole disks: partitions and stacked devices double count."""
    names = set(stats)
    return {
        name: value
        for name, value in stats.items()
        if not name.startswith(NON_DISK_PREFIXES) and not _is_partition(name, names)
    }


def parse_disk_sample(output: str) -> DiskSample:
    """``cat /proc/uptime /proc/diskstats``: the host's clock comes with its counters, so
    SSH latency does not distort the rate."""
    first, _, rest = output.partition("\n")
    try:
        uptime = float(first.split()[0])
    except (IndexError, ValueError):
        raise ValueError(f"unexpected /proc/uptime line: {first[:200]!r}") from None
    disks = whole_disks(parse_diskstats(rest))
    return DiskSample(
        uptime_s=uptime,
        sectors_read=sum(r for r, _ in disks.values()),
        sectors_written=sum(w for _, w in disks.values()),
    )


def disk_kbps(before: DiskSample, after: DiskSample) -> float:
    """KB read + KB written per second between two samples."""
    elapsed = after.uptime_s - before.uptime_s
    if elapsed <= 0:
        return 0.0
    sectors = max(0, after.sectors_read - before.sectors_read) + max(
        0, after.sectors_written - before.sectors_written
    )
    return round(sectors * SECTOR_BYTES / 1024 / elapsed, 2)


def parse_net_dev(output: str) -> dict[str, tuple[int, int]]:
    """(rx bytes, tx bytes) per interface in /proc/net/dev."""
    counters: dict[str, tuple[int, int]] = {}
    for line in output.splitlines():
        name, sep, rest = line.partition(":")
        if not sep or "|" in line:
            continue  # the two header lines
        fields = rest.split()
        if len(fields) < 9:
            raise ValueError(f"unexpected /proc/net/dev line: {line[:200]!r}")
        try:
            counters[name.strip()] = (int(fields[0]), int(fields[8]))
        except ValueError:
            raise ValueError(f"unexpected /proc/net/dev line: {line[:200]!r}") from None
    if not counters:
        raise ValueError("no interface in /proc/net/dev output")
    return counters


def net_totals(
    counters: Mapping[str, tuple[int, int]], skip: frozenset[str] = LOOPBACK_INTERFACES
) -> tuple[int, int]:
    """(rx, tx) bytes summed over the interfaces not in ``skip``."""
    kept = [v for name, v in counters.items() if name not in skip]
    return sum(rx for rx, _ in kept), sum(tx for _, tx in kept)


# --------------------------------------------------------------------------- samples


def _read_parsed(target: RemoteTarget | None, argv: list[str], parse: Callable[[str], T]) -> T:
    """Run ``argv`` on ``target`` (None: this machine) and parse what it printed."""
    if target is None:
        output, label = run_local(argv, timeout=_LOCAL_TIMEOUT_S).stdout, LOCALHOST
    else:
        output, label = execute_remote_cmd(target, argv).stdout, target.label
    try:
        return parse(output)
    except ValueError as exc:
        raise RemoteCommandError(label, argv, f"unexpected output: {exc}") from None


def _cpu_sample(hv: Hypervisor | None, target: RemoteTarget | None) -> NodeCpuTimes:
    times = None
    if hv is not None:
        with contextlib.suppress(NotSupported):
            times = hv.node_cpu_times()
    return times or _read_parsed(target, ["cat", "/proc/stat"], parse_proc_stat)


def _disk_sample(target: RemoteTarget | None) -> DiskSample:
    return _read_parsed(target, ["cat", "/proc/uptime", "/proc/diskstats"], parse_disk_sample)


def _mem_used_kb(hv: Hypervisor | None, target: RemoteTarget | None) -> int:
    memory = None
    if hv is not None:
        with contextlib.suppress(NotSupported):
            memory = hv.node_memory_kb()
    return (memory or _read_parsed(target, ["cat", "/proc/meminfo"], parse_meminfo)).used_kb


def _net_bytes(target: RemoteTarget | None, interface: str | None = None) -> tuple[int, int]:
    """Bytes through ``interface``, or through every interface but loopback."""
    counters = _read_parsed(target, ["cat", "/proc/net/dev"], parse_net_dev)
    if interface in counters:
        return counters[interface]
    return net_totals(counters)


def _own_interface(target: RemoteTarget) -> str | None:
    """The interface carrying the host's own address: VM traffic crosses taps and
    bridges as well, so summing every interface would count it two or three times.
    None (every interface) when it cannot be found."""
    try:
        return interface_of(target)
    except RemoteCommandError as exc:
        log.warning("%s: counting every interface: %s", target.label, exc)
        return None


@dataclass(frozen=True)
class HostCounters:
    """One sample of the host's cumulative counters (what the RRD history records)."""

    cpu: NodeCpuTimes
    disk: DiskSample
    ram_used_kb: int
    net_rx_bytes: int
    net_tx_bytes: int


def sample_counters(
    target: RemoteTarget | None, hv: Hypervisor | None = None, interface: str | None = None
) -> HostCounters:
    """The counters of a machine over SSH (``target``) or of this one (None); CPU and
    memory come from ``hv``'s node statistics where it has them, network bytes from
    ``interface`` when given."""
    rx, tx = _net_bytes(target, interface)
    return HostCounters(
        cpu=_cpu_sample(hv, target),
        disk=_disk_sample(target),
        ram_used_kb=_mem_used_kb(hv, target),
        net_rx_bytes=rx,
        net_tx_bytes=tx,
    )


def sample_host_counters(host: Host, settings: Settings) -> HostCounters:
    target = RemoteTarget.for_host(host, settings)
    return sample_counters(target, hypervisor_for(host.libvirt_uri), _own_interface(target))


def cpu_count(target: RemoteTarget | None) -> int:
    """How many CPUs the machine has (``nproc``)."""
    return _read_parsed(target, ["nproc"], lambda out: int(out.strip()))


# --------------------------------------------------------------------------- the seed's API


def get_host_cpu_usage(
    host: Host, settings: Settings, *, interval_s: float = DEFAULT_INTERVAL_S
) -> float:
    """Percent of CPU time spent in user + nice + system over ``interval_s``."""
    hv, target = hypervisor_for(host.libvirt_uri), RemoteTarget.for_host(host, settings)
    before = _cpu_sample(hv, target)
    time.sleep(interval_s)
    return _cpu_sample(hv, target).busy_percent_since(before)


def get_host_disk_usage(
    host: Host, settings: Settings, *, interval_s: float = DEFAULT_INTERVAL_S
) -> float:
    """KB read + written per second on the host's whole disks over ``interval_s``."""
    target = RemoteTarget.for_host(host, settings)
    before = _disk_sample(target)
    time.sleep(interval_s)
    return disk_kbps(before, _disk_sample(target))


def get_host_mem_usage(host: Host, settings: Settings) -> int:
    """KB of RAM in use: total - free - buffers - cached."""
    return _mem_used_kb(hypervisor_for(host.libvirt_uri), RemoteTarget.for_host(host, settings))


def get_host_nw_usage(host: Host, settings: Settings) -> tuple[int, int]:
    """(rx, tx) bytes since boot through the host's own interface (``_own_interface``)."""
    target = RemoteTarget.for_host(host, settings)
    return _net_bytes(target, _own_interface(target))


def get_host_resources_usage(
    host: Host, settings: Settings, *, interval_s: float = DEFAULT_INTERVAL_S
) -> HostUsage:
    """Everything at once; both rate samples share one interval."""
    hv, target = hypervisor_for(host.libvirt_uri), RemoteTarget.for_host(host, settings)
    cpu_before, disk_before = _cpu_sample(hv, target), _disk_sample(target)
    time.sleep(interval_s)
    cpu_after, disk_after = _cpu_sample(hv, target), _disk_sample(target)
    rx, tx = _net_bytes(target, _own_interface(target))
    return HostUsage(
        cpu_percent=cpu_after.busy_percent_since(cpu_before),
        disk_kbps=disk_kbps(disk_before, disk_after),
        ram_used_kb=_mem_used_kb(hv, target),
        net_rx_bytes=rx,
        net_tx_bytes=tx,
    )
