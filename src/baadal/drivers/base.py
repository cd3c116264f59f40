"""The hypervisor contract every driver implements (one documented interface).

Domains are addressed by name (Baadal's vm_identity). Methods raise
:class:`HypervisorError` (a HostError: its message is fit for a task result) and never
leak driver-specific exceptions. Capability flags say what a driver can do, instead of
callers probing with hasattr.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

from baadal import constants as C
from baadal.errors import HostError


class HypervisorError(HostError):
    pass


class DomainNotFound(HypervisorError):
    pass


class NotSupported(HypervisorError):
    """The driver cannot do this (e.g. libvirt's test:/// has no node memory stats);
    callers fall back to another source instead of failing."""


@dataclass(frozen=True)
class Capabilities:
    live_migration: bool
    node_memory_stats: bool
    snapshots: bool
    #: set_vnc_password reaches the running console (libvirt's test:/// has no console:
    #: it changes only the definition the domain starts from next)
    live_console_password: bool


@dataclass(frozen=True)
class DomainInfo:
    name: str
    uuid: str
    status: C.VMStatus
    active: bool


@dataclass(frozen=True)
class NodeInfo:
    cpus: int
    memory_mb: int
    hostname: str


@dataclass(frozen=True)
class NodeCpuTimes:
    """Cumulative CPU time of all the node's CPUs since boot (virNodeGetCPUStats).

    ``user`` includes nice and ``kernel`` includes interrupts, as libvirt reports them;
    a busy percentage needs two samples (:meth:`busy_percent_since`).
    """

    kernel_ns: int
    user_ns: int
    idle_ns: int
    iowait_ns: int

    @property
    def total_ns(self) -> int:
        return self.kernel_ns + self.user_ns + self.idle_ns + self.iowait_ns

    def busy_percent_since(self, before: NodeCpuTimes) -> float:
        """Share of (user + nice + system) time between ``before`` and this sample."""
        total = self.total_ns - before.total_ns
        if total <= 0:
            return 0.0
        busy = (self.kernel_ns - before.kernel_ns) + (self.user_ns - before.user_ns)
        return round(min(100.0, max(0.0, 100.0 * busy / total)), 2)


@dataclass(frozen=True)
class NodeMemory:
    """The node's memory in KiB (virNodeGetMemoryStats over all cells, /proc/meminfo)."""

    total_kb: int
    free_kb: int
    buffers_kb: int
    cached_kb: int

    @property
    def used_kb(self) -> int:
        """What programs hold: page cache and buffers are reclaimable, so not counted."""
        return max(0, self.total_kb - self.free_kb - self.buffers_kb - self.cached_kb)


@dataclass(frozen=True)
class DomainStats:
    """Cumulative counters (the seed's get_current_dom_resource_usage)."""

    cpu_time_ns: int
    vcpus: int
    memory_bytes: int
    disk_read_bytes: int
    disk_write_bytes: int
    net_rx_bytes: int
    net_tx_bytes: int


@dataclass(frozen=True)
class SnapshotInfo:
    name: str
    xml: str
    is_current: bool


class Hypervisor(ABC):
    """One host's hypervisor."""

    uri: str
    capabilities: Capabilities

    @abstractmethod
    def node_info(self) -> NodeInfo: ...

    def node_cpu_times(self) -> NodeCpuTimes:
        """Cumulative node CPU times; raises :class:`NotSupported` when the driver has none
        (not abstract so drivers without node stats need not stub it)."""
        raise NotSupported(f"node CPU statistics are not available on {self.uri}")

    def node_memory_kb(self) -> NodeMemory:
        """Node memory counters; raises :class:`NotSupported` when the driver has none."""
        raise NotSupported(f"node memory statistics are not available on {self.uri}")

    @abstractmethod
    def domain_type(
        self, probe_kernel: Path | None = None, probe_initrd: Path | None = None
    ) -> str:
        """'kvm' only where booting ``probe_kernel`` proved KVM works, else 'qemu' (TCG):
        hosts advertise KVM that hangs after the BIOS (lab-notes.md)."""

    @abstractmethod
    def list_domains(self) -> list[DomainInfo]: ...

    @abstractmethod
    def domain_info(self, name: str) -> DomainInfo: ...

    def is_defined(self, name: str) -> bool:
        """The seed's check_if_vm_defined."""
        try:
            self.domain_info(name)
        except DomainNotFound:
            return False
        return True

    @abstractmethod
    def define(self, xml: str, *, autostart: bool = False) -> None: ...

    @abstractmethod
    def undefine(self, name: str) -> None:
        """Power off if needed and remove the definition with its snapshot metadata."""

    @abstractmethod
    def xml(self, name: str, *, inactive: bool = False, secure: bool = False) -> str:
        """The domain XML; ``secure`` includes secrets such as the VNC password."""

    @abstractmethod
    def start(self, name: str) -> None: ...

    @abstractmethod
    def suspend(self, name: str) -> None: ...

    @abstractmethod
    def resume(self, name: str) -> None: ...

    @abstractmethod
    def destroy(self, name: str) -> None:
        """Hard power off (what upstream's 'Stop VM' did)."""

    @abstractmethod
    def shutdown(self, name: str) -> None:
        """Ask the guest to power off (ACPI)."""

    @abstractmethod
    def attach_disk(self, name: str, disk_xml: str, *, live: bool) -> None:
        """Attach persistently, and to the running guest too when ``live``."""

    @abstractmethod
    def set_vnc_password(self, name: str, password: str) -> None:
        """Change the running domain's VNC password now (its graphics device, live), so
        a password handed out earlier stops working; the persistent definition keeps its
        own. Raises :class:`HypervisorError` when the domain is not running or has no VNC
        console."""

    @abstractmethod
    def set_memory_and_vcpus(self, name: str, memory_mb: int | None, vcpus: int | None) -> None:
        """Change the persistent definition (the VM must be shut off)."""

    @abstractmethod
    def stats(self, name: str) -> DomainStats: ...

    def running_stats(self) -> dict[str, DomainStats]:
        """Counters of every running domain by name (monitoring reads a whole host at
        once); drivers with a bulk call override this one-domain-at-a-time version."""
        found = {}
        for info in self.list_domains():
            if info.active:
                try:
                    found[info.name] = self.stats(info.name)
                except DomainNotFound:
                    continue  # went away meanwhile
        return found

    @abstractmethod
    def snapshot_create(self, name: str, snapshot_name: str) -> None: ...

    @abstractmethod
    def snapshot_revert(self, name: str, snapshot_name: str) -> None: ...

    @abstractmethod
    def snapshot_delete(
        self, name: str, snapshot_name: str, *, metadata_only: bool = False
    ) -> None: ...

    @abstractmethod
    def snapshot_list(self, name: str) -> list[SnapshotInfo]:
        """Snapshots parents first (the order they must be redefined in)."""

    @abstractmethod
    def snapshot_redefine(self, name: str, snapshot_xml: str, *, current: bool) -> None: ...

    def migrate(
        self, name: str, dest_uri: str, dest_address: str, *, live: bool, vnc_listen: str
    ) -> None:
        """Move the domain to ``dest_uri`` (same disks: the datastore is shared) and make
        it persistent there, undefined here. A running or paused domain moves with its
        memory, ``live`` without pausing it; a shut-off one moves offline (definition
        only). Its VNC listen address becomes ``vnc_listen`` (the source's address cannot
        be bound on the destination). Raises :class:`NotSupported` on drivers without
        migration; callers must move snapshot metadata themselves (libvirt refuses)."""
        raise NotSupported(f"migration is not supported by {self.uri}")

    @abstractmethod
    def close(self) -> None: ...
