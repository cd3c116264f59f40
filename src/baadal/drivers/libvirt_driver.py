"""The libvirt driver: every host is reached through the libvirt URI on its host row.

Connections are cached per URI (opening one over SSH costs a handshake) and reopened
transparently when libvirtd restarted or the link dropped: a call that fails because the
connection is gone is retried once on a fresh connection.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import libvirt

from baadal import constants as C
from baadal.drivers import domain_xml, kvm_probe
from baadal.drivers.base import (
    Capabilities,
    DomainInfo,
    DomainNotFound,
    DomainStats,
    Hypervisor,
    HypervisorError,
    NodeCpuTimes,
    NodeInfo,
    NodeMemory,
    NotSupported,
    SnapshotInfo,
)
from baadal.drivers.uri import require_openable
from baadal.errors import ValidationError

T = TypeVar("T")

_STATE_TO_STATUS = {
    libvirt.VIR_DOMAIN_RUNNING: C.VMStatus.RUNNING,
    libvirt.VIR_DOMAIN_BLOCKED: C.VMStatus.RUNNING,
    libvirt.VIR_DOMAIN_PAUSED: C.VMStatus.SUSPENDED,
    libvirt.VIR_DOMAIN_PMSUSPENDED: C.VMStatus.SUSPENDED,
    libvirt.VIR_DOMAIN_SHUTDOWN: C.VMStatus.SHUTDOWN,
    libvirt.VIR_DOMAIN_SHUTOFF: C.VMStatus.SHUTDOWN,
    libvirt.VIR_DOMAIN_CRASHED: C.VMStatus.SHUTDOWN,
}

_CONNECTION_LOST = {
    libvirt.VIR_ERR_SYSTEM_ERROR,
    libvirt.VIR_ERR_NO_CONNECT,
    libvirt.VIR_ERR_INVALID_CONN,
    libvirt.VIR_ERR_RPC,
}

#: error codes of a driver that lacks a call (test:/// has no node memory statistics)
_NOT_SUPPORTED = {libvirt.VIR_ERR_NO_SUPPORT, libvirt.VIR_ERR_ARGUMENT_UNSUPPORTED}

#: what a redefinition starts from: the persistent XML with its secrets (VNC password)
_PERSISTENT_XML = libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE

#: what a migration sends: the definition without host-local parts, with its secrets
_MIGRATABLE_XML = libvirt.VIR_DOMAIN_XML_MIGRATABLE | libvirt.VIR_DOMAIN_XML_SECURE

#: every migration leaves the domain persistent on the destination and gone here
_MIGRATE_MOVE = libvirt.VIR_MIGRATE_PERSIST_DEST | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE

_connections: dict[str, libvirt.virConnect] = {}
_connections_lock = threading.Lock()


def _silence_libvirt_stderr() -> None:
    """libvirt prints every error on stderr by default; Baadal reports them itself."""
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)


_silence_libvirt_stderr()


def _open(uri: str) -> libvirt.virConnect:
    with _connections_lock:
        conn = _connections.get(uri)
        if conn is not None:
            with contextlib.suppress(libvirt.libvirtError):
                if conn.isAlive():
                    return conn
            _connections.pop(uri, None)
        require_openable(uri)  # a migration's destination does not pass hypervisor_for
        try:
            conn = libvirt.open(uri)
        except libvirt.libvirtError as exc:
            raise HypervisorError(f"cannot connect to {uri}: {exc.get_error_message()}") from None
        _connections[uri] = conn
        return conn


def _forget(uri: str) -> None:
    with _connections_lock:
        conn = _connections.pop(uri, None)
    if conn is not None:
        with contextlib.suppress(libvirt.libvirtError):
            conn.close()


def close_all() -> None:
    for uri in list(_connections):
        _forget(uri)


class LibvirtHypervisor(Hypervisor):
    def __init__(self, uri: str) -> None:
        self.uri = uri
        self._is_test = uri.startswith("test://")
        self.capabilities = Capabilities(
            live_migration=not self._is_test,
            node_memory_stats=not self._is_test,
            snapshots=True,
            live_console_password=not self._is_test,
        )

    # -- plumbing --------------------------------------------------------------------
    def _call(self, what: str, fn: Callable[[libvirt.virConnect], T]) -> T:
        for attempt in (1, 2):
            conn = _open(self.uri)
            try:
                return fn(conn)
            except libvirt.libvirtError as exc:
                code = exc.get_error_code()
                if code == libvirt.VIR_ERR_NO_DOMAIN:
                    raise DomainNotFound(f"{what}: no such domain on {self.uri}") from None
                if code in _CONNECTION_LOST and attempt == 1:
                    _forget(self.uri)
                    continue
                raise HypervisorError(f"{what} on {self.uri}: {exc.get_error_message()}") from None
        raise AssertionError("unreachable")

    def _dom_call(self, what: str, name: str, fn: Callable[[libvirt.virDomain], T]) -> T:
        return self._call(f"{what} {name}", lambda conn: fn(conn.lookupByName(name)))

    # -- node ------------------------------------------------------------------------
    def node_info(self) -> NodeInfo:
        def get(conn: libvirt.virConnect) -> NodeInfo:
            info = conn.getInfo()
            return NodeInfo(cpus=info[2], memory_mb=info[1], hostname=conn.getHostname())

        return self._call("node info", get)

    def node_cpu_times(self) -> NodeCpuTimes:
        def get(conn: libvirt.virConnect) -> NodeCpuTimes:
            stats = _node_stats(
                conn.getCPUStats,
                libvirt.VIR_NODE_CPU_STATS_ALL_CPUS,
                f"node CPU statistics on {self.uri}",
            )
            return NodeCpuTimes(
                kernel_ns=int(stats.get("kernel", 0)),
                user_ns=int(stats.get("user", 0)),
                idle_ns=int(stats.get("idle", 0)),
                iowait_ns=int(stats.get("iowait", 0)),
            )

        return self._call("node CPU statistics", get)

    def node_memory_kb(self) -> NodeMemory:
        def get(conn: libvirt.virConnect) -> NodeMemory:
            cells = libvirt.VIR_NODE_MEMORY_STATS_ALL_CELLS
            stats = _node_stats(conn.getMemoryStats, cells, f"node memory statistics on {self.uri}")
            if "total" not in stats or "free" not in stats:
                raise NotSupported(f"node memory statistics of {self.uri} lack total/free")
            return NodeMemory(
                total_kb=int(stats["total"]),
                free_kb=int(stats["free"]),
                buffers_kb=int(stats.get("buffers", 0)),
                cached_kb=int(stats.get("cached", 0)),
            )

        return self._call("node memory statistics", get)

    def domain_type(
        self, probe_kernel: Path | None = None, probe_initrd: Path | None = None
    ) -> str:
        """The boot probe's answer, cached per URI; libvirt's test driver runs nothing."""
        if self._is_test:
            return "qemu"
        return self._call(
            "probe KVM",
            lambda conn: kvm_probe.domain_type(conn, self.uri, probe_kernel, probe_initrd),
        )

    def list_domains(self) -> list[DomainInfo]:
        return self._call("list domains", lambda conn: [_info(d) for d in conn.listAllDomains()])

    def domain_info(self, name: str) -> DomainInfo:
        return self._dom_call("look up", name, _info)

    # -- definition ------------------------------------------------------------------
    def define(self, xml: str, *, autostart: bool = False) -> None:
        def run(conn: libvirt.virConnect) -> None:
            dom = conn.defineXML(xml)
            if autostart:
                dom.setAutostart(1)

        self._call("define domain", run)

    def undefine(self, name: str) -> None:
        def run(dom: libvirt.virDomain) -> None:
            if dom.isActive():
                dom.destroy()
            flags = (
                libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
                | libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
            )
            try:
                dom.undefineFlags(flags)
            except libvirt.libvirtError as exc:
                if exc.get_error_code() != libvirt.VIR_ERR_NO_SUPPORT:
                    raise
                for snap in dom.listAllSnapshots():
                    snap.delete(libvirt.VIR_DOMAIN_SNAPSHOT_DELETE_METADATA_ONLY)
                dom.undefine()

        self._dom_call("undefine", name, run)

    def xml(self, name: str, *, inactive: bool = False, secure: bool = False) -> str:
        flags = libvirt.VIR_DOMAIN_XML_INACTIVE if inactive else 0
        if secure:
            flags |= libvirt.VIR_DOMAIN_XML_SECURE
        return self._dom_call("read XML of", name, lambda dom: dom.XMLDesc(flags))

    # -- power -----------------------------------------------------------------------
    def start(self, name: str) -> None:
        self._dom_call("start", name, lambda dom: dom.create())

    def suspend(self, name: str) -> None:
        self._dom_call("suspend", name, lambda dom: dom.suspend())

    def resume(self, name: str) -> None:
        self._dom_call("resume", name, lambda dom: dom.resume())

    def destroy(self, name: str) -> None:
        self._dom_call("destroy", name, lambda dom: dom.destroy())

    def shutdown(self, name: str) -> None:
        self._dom_call("shut down", name, lambda dom: dom.shutdown())

    # -- configuration ---------------------------------------------------------------
    def attach_disk(self, name: str, disk_xml: str, *, live: bool) -> None:
        def run(conn: libvirt.virConnect) -> None:
            dom = conn.lookupByName(name)
            flags = libvirt.VIR_DOMAIN_AFFECT_CONFIG
            if live and dom.isActive():
                flags |= libvirt.VIR_DOMAIN_AFFECT_LIVE
            try:
                dom.attachDeviceFlags(disk_xml, flags)
            except libvirt.libvirtError as exc:
                if exc.get_error_code() != libvirt.VIR_ERR_NO_SUPPORT:
                    raise
                # drivers without hotplug (test://): add it to the persistent definition
                inactive = dom.XMLDesc(_PERSISTENT_XML)
                conn.defineXML(domain_xml.add_device(inactive, disk_xml))

        self._call(f"attach disk to {name}", run)

    def set_vnc_password(self, name: str, password: str) -> None:
        def run(conn: libvirt.virConnect) -> None:
            dom = conn.lookupByName(name)
            if not dom.isActive():
                raise HypervisorError(
                    f"set VNC password of {name} on {self.uri}: domain is not running"
                )
            try:
                if self._is_test:  # no device updates, no console: what it would start with
                    inactive = dom.XMLDesc(_PERSISTENT_XML)
                    conn.defineXML(domain_xml.set_vnc_password(inactive, password))
                    return
                graphics = domain_xml.vnc_graphics_with_password(
                    dom.XMLDesc(libvirt.VIR_DOMAIN_XML_SECURE), password
                )
            except ValidationError as exc:
                raise HypervisorError(f"set VNC password of {name} on {self.uri}: {exc}") from None
            dom.updateDeviceFlags(graphics, libvirt.VIR_DOMAIN_AFFECT_LIVE)

        self._call(f"set VNC password of {name}", run)

    def set_memory_and_vcpus(self, name: str, memory_mb: int | None, vcpus: int | None) -> None:
        def run(conn: libvirt.virConnect) -> None:
            dom = conn.lookupByName(name)
            xml = dom.XMLDesc(_PERSISTENT_XML)
            conn.defineXML(domain_xml.set_memory_and_vcpus(xml, memory_mb, vcpus))

        self._call(f"edit {name}", run)

    # -- monitoring ------------------------------------------------------------------
    def stats(self, name: str) -> DomainStats:
        def run(dom: libvirt.virDomain) -> DomainStats:
            _state, _max_kb, mem_kb, vcpus, cpu_ns = dom.info()
            xml = dom.XMLDesc(0)
            rd = wr = rx = tx = 0
            memory = mem_kb * 1024
            if dom.isActive():
                for target in domain_xml.disk_targets(xml):
                    block = dom.blockStats(target)
                    rd, wr = rd + block[1], wr + block[3]
                for target in domain_xml.interface_targets(xml):
                    net = dom.interfaceStats(target)
                    rx, tx = rx + net[0], tx + net[4]
                try:
                    mem = dom.memoryStats()
                    memory = mem.get("rss", mem.get("actual", mem_kb)) * 1024
                except libvirt.libvirtError:
                    pass
            return DomainStats(cpu_ns, vcpus, memory, rd, wr, rx, tx)

        return self._dom_call("read statistics of", name, run)

    def running_stats(self) -> dict[str, DomainStats]:
        """One virConnectGetAllDomainStats round trip for the whole host; a driver that
        leaves out the counters (test:///) is read one domain at a time."""
        groups = (
            libvirt.VIR_DOMAIN_STATS_CPU_TOTAL
            | libvirt.VIR_DOMAIN_STATS_BALLOON
            | libvirt.VIR_DOMAIN_STATS_VCPU
            | libvirt.VIR_DOMAIN_STATS_INTERFACE
            | libvirt.VIR_DOMAIN_STATS_BLOCK
        )

        def get(conn: libvirt.virConnect) -> list[tuple[str, dict[str, int]]]:
            records = conn.getAllDomainStats(
                groups, libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_ACTIVE
            )
            return [(dom.name(), fields) for dom, fields in records]

        records = self._call("read statistics of all domains", get)
        if records and all("cpu.time" not in fields for _, fields in records):
            return super().running_stats()
        return {name: _bulk_stats(fields) for name, fields in records}

    # -- snapshots -------------------------------------------------------------------
    def snapshot_create(self, name: str, snapshot_name: str) -> None:
        xml = domain_xml.snapshot_xml(snapshot_name)
        self._dom_call("snapshot", name, lambda dom: dom.snapshotCreateXML(xml, 0))

    def snapshot_revert(self, name: str, snapshot_name: str) -> None:
        def run(dom: libvirt.virDomain) -> None:
            dom.revertToSnapshot(dom.snapshotLookupByName(snapshot_name))

        self._dom_call(f"revert to snapshot {snapshot_name!r}", name, run)

    def snapshot_delete(
        self, name: str, snapshot_name: str, *, metadata_only: bool = False
    ) -> None:
        flags = libvirt.VIR_DOMAIN_SNAPSHOT_DELETE_METADATA_ONLY if metadata_only else 0

        def run(dom: libvirt.virDomain) -> None:
            dom.snapshotLookupByName(snapshot_name).delete(flags)

        self._dom_call(f"delete snapshot {snapshot_name!r} of", name, run)

    def snapshot_list(self, name: str) -> list[SnapshotInfo]:
        def run(dom: libvirt.virDomain) -> list[SnapshotInfo]:
            snaps = dom.listAllSnapshots(libvirt.VIR_DOMAIN_SNAPSHOT_LIST_TOPOLOGICAL)
            return [
                SnapshotInfo(
                    s.getName(),
                    s.getXMLDesc(libvirt.VIR_DOMAIN_SNAPSHOT_XML_SECURE),
                    s.isCurrent() == 1,
                )
                for s in snaps
            ]

        return self._dom_call("list snapshots of", name, run)

    def snapshot_redefine(self, name: str, snapshot_xml: str, *, current: bool) -> None:
        flags = libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_REDEFINE
        if current:
            flags |= libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_CURRENT
        self._dom_call(
            "redefine snapshot of", name, lambda dom: dom.snapshotCreateXML(snapshot_xml, flags)
        )

    # -- migration -------------------------------------------------------------------
    def migrate(
        self, name: str, dest_uri: str, dest_address: str, *, live: bool, vnc_listen: str
    ) -> None:
        """migrate3 driven from here (both libvirtds must listen, lab-notes.md). UNSAFE:
        libvirt does not recognise the shared datastore as shared storage. The one retry
        on a lost connection is harmless: after a completed move it finds no domain."""
        if not self.capabilities.live_migration:
            raise NotSupported(f"migration is not supported by {self.uri}")

        def run(conn: libvirt.virConnect) -> None:
            dom = conn.lookupByName(name)
            inactive = dom.XMLDesc(_MIGRATABLE_XML | libvirt.VIR_DOMAIN_XML_INACTIVE)
            persistent = domain_xml.set_vnc_listen(inactive, vnc_listen)
            params = {
                libvirt.VIR_MIGRATE_PARAM_PERSIST_XML: persistent,
                libvirt.VIR_MIGRATE_PARAM_DEST_XML: persistent,
            }
            flags = _MIGRATE_MOVE | libvirt.VIR_MIGRATE_OFFLINE
            if dom.isActive():
                flags = _MIGRATE_MOVE | libvirt.VIR_MIGRATE_UNSAFE
                if live:
                    flags |= libvirt.VIR_MIGRATE_LIVE
                params[libvirt.VIR_MIGRATE_PARAM_URI] = f"tcp://{dest_address}"
                params[libvirt.VIR_MIGRATE_PARAM_DEST_XML] = domain_xml.set_vnc_listen(
                    dom.XMLDesc(_MIGRATABLE_XML), vnc_listen
                )
            dom.migrate3(_open(dest_uri), params, flags)

        self._call(f"migrate {name} to {dest_uri}", run)

    def close(self) -> None:
        _forget(self.uri)


def _info(dom: libvirt.virDomain) -> DomainInfo:
    state = dom.state()[0]
    return DomainInfo(
        name=dom.name(),
        uuid=dom.UUIDString(),
        status=_STATE_TO_STATUS.get(state, C.VMStatus.UNKNOWN),
        active=bool(dom.isActive()),
    )


def _node_stats(call: Callable[[int], dict[str, int]], which: int, what: str) -> dict[str, int]:
    """Node statistics, with "this driver has none" (test:///) as :class:`NotSupported`
    so callers can fall back to reading /proc over SSH."""
    try:
        return call(which)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() in _NOT_SUPPORTED:
            raise NotSupported(f"{what}: {exc.get_error_message()}") from None
        raise


def _sum_indexed(fields: dict[str, int], group: str, key: str) -> int:
    """Sum ``<group>.<i>.<key>`` over the ``<group>.count`` devices of a bulk record."""
    return sum(
        int(fields.get(f"{group}.{i}.{key}", 0)) for i in range(fields.get(f"{group}.count", 0))
    )


def _bulk_stats(fields: dict[str, int]) -> DomainStats:
    """A virConnectGetAllDomainStats record as the same counters ``stats`` returns."""
    memory_kb = fields.get("balloon.rss", fields.get("balloon.current", 0))
    return DomainStats(
        cpu_time_ns=int(fields.get("cpu.time", 0)),
        vcpus=int(fields.get("vcpu.current", 0)),
        memory_bytes=int(memory_kb) * 1024,
        disk_read_bytes=_sum_indexed(fields, "block", "rd.bytes"),
        disk_write_bytes=_sum_indexed(fields, "block", "wr.bytes"),
        net_rx_bytes=_sum_indexed(fields, "net", "rx.bytes"),
        net_tx_bytes=_sum_indexed(fields, "net", "tx.bytes"),
    )
