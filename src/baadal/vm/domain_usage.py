"""VM resource usage from libvirt's stats APIs (the seed's VM_utilization).

No shell output is parsed: counters come from virDomainGetInfo, block and interface
stats and memoryStats. CPU % needs two samples; the previous one is kept per domain.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from baadal.drivers.base import DomainStats, Hypervisor


@dataclass(frozen=True)
class Usage:
    """The seed's get_actual_usage result: rates since the previous sample."""

    ram: int  # bytes in use
    cpu: float  # percent of the VM's vCPUs
    tx: int
    rx: int
    dr: int
    dw: int


_previous: dict[tuple[str, str], tuple[float, DomainStats]] = {}
_lock = threading.Lock()


def get_current_dom_resource_usage(hv: Hypervisor, dom_name: str) -> DomainStats:
    return hv.stats(dom_name)


def get_dom_mem_usage(hv: Hypervisor, dom_name: str) -> int:
    return hv.stats(dom_name).memory_bytes


def get_dom_nw_usage(hv: Hypervisor, dom_name: str) -> tuple[int, int]:
    stats = hv.stats(dom_name)
    return stats.net_rx_bytes, stats.net_tx_bytes


def get_dom_disk_usage(hv: Hypervisor, dom_name: str) -> tuple[int, int]:
    stats = hv.stats(dom_name)
    return stats.disk_read_bytes, stats.disk_write_bytes


def cpu_percent(before: DomainStats, after: DomainStats, elapsed_s: float) -> float:
    """CPU time used over wall time, as a share of all the VM's vCPUs (upstream formula)."""
    if elapsed_s <= 0 or after.vcpus <= 0:
        return 0.0
    used_ns = max(0, after.cpu_time_ns - before.cpu_time_ns)
    return round(100.0 * used_ns / (after.vcpus * elapsed_s * 1e9), 2)


def get_actual_usage(hv: Hypervisor, dom_name: str) -> Usage:
    """Usage since the previous call for this domain (first call: counters since boot)."""
    now = time.monotonic()
    current = hv.stats(dom_name)
    key = (hv.uri, dom_name)
    with _lock:
        before = _previous.get(key)
        _previous[key] = (now, current)
    if before is None:
        return Usage(
            current.memory_bytes,
            0.0,
            current.net_tx_bytes,
            current.net_rx_bytes,
            current.disk_read_bytes,
            current.disk_write_bytes,
        )
    then, old = before
    return Usage(
        ram=current.memory_bytes,
        cpu=cpu_percent(old, current, now - then),
        tx=max(0, current.net_tx_bytes - old.net_tx_bytes),
        rx=max(0, current.net_rx_bytes - old.net_rx_bytes),
        dr=max(0, current.disk_read_bytes - old.disk_read_bytes),
        dw=max(0, current.disk_write_bytes - old.disk_write_bytes),
    )
