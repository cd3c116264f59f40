"""An in-memory hypervisor (like OpenStack Nova's fake driver) for unit and scale tests.

Nodes live in one process-wide registry keyed by URI (``fake:///h1``) and appear on first
use, so every :class:`FakeHypervisor` of one URI sees the same domains, and a migration
moves a domain from one node to another under one lock. ``fake:///h1?cpus=4&memory_mb=8192``
sizes a node. Power states, snapshots and migration follow libvirt's rules (starting a
running domain fails, a domain with snapshot metadata does not migrate, ...) so code tested
here behaves the same on libvirt; tests/unit/test_driver_contract.py holds both to them.
"""

from __future__ import annotations

import threading
import time
import uuid as uuidlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from lxml import etree

from baadal import constants as C
from baadal.drivers import domain_xml
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
    SnapshotInfo,
)
from baadal.errors import ValidationError

SCHEME = "fake"
DEFAULT_CPUS = 8
DEFAULT_MEMORY_MB = 16384

_SNAPSHOT_STATES = {"running": C.VMStatus.RUNNING, "paused": C.VMStatus.SUSPENDED}


def is_fake_uri(uri: str) -> bool:
    return uri.startswith(f"{SCHEME}://")


@dataclass
class _Snapshot:
    name: str
    parent: str | None
    xml: str
    #: what reverting to it leaves the domain in
    status: C.VMStatus


@dataclass
class _Domain:
    name: str
    uuid: str
    #: the persistent definition, secrets included
    xml: str
    #: the definition the running guest was started with; None while shut off
    live_xml: str | None = None
    status: C.VMStatus = C.VMStatus.SHUTDOWN
    autostart: bool = False
    #: by name, in the order they were made or redefined
    snapshots: dict[str, _Snapshot] = field(default_factory=dict)
    current: str | None = None
    _cpu_ns: int = 0
    _running_since: float | None = None

    @property
    def active(self) -> bool:
        return self.live_xml is not None

    def set_status(self, status: C.VMStatus) -> None:
        """Change state, banking CPU time: a guest uses one CPU while it runs."""
        if self._running_since is not None:
            self._cpu_ns += int((time.monotonic() - self._running_since) * 1e9)
        self._running_since = time.monotonic() if status == C.VMStatus.RUNNING else None
        self.status = status
        if status == C.VMStatus.SHUTDOWN:
            self.live_xml = None
        elif self.live_xml is None:
            self.live_xml = self.xml

    @property
    def cpu_time_ns(self) -> int:
        running = 0.0 if self._running_since is None else time.monotonic() - self._running_since
        return self._cpu_ns + int(running * 1e9)


@dataclass
class _Node:
    cpus: int
    memory_mb: int
    hostname: str
    booted: float = field(default_factory=time.monotonic)
    domains: dict[str, _Domain] = field(default_factory=dict)


#: every fake node of the process; one lock for all so a migration is atomic
_nodes: dict[str, _Node] = {}
_lock = threading.RLock()


def reset() -> None:
    """Forget every fake node (tests start from an empty cloud)."""
    with _lock:
        _nodes.clear()


def _new_node(uri: str) -> _Node:
    parts = urlsplit(uri)
    query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
    try:
        cpus = int(query.get("cpus", DEFAULT_CPUS))
        memory_mb = int(query.get("memory_mb", DEFAULT_MEMORY_MB))
    except ValueError:
        raise HypervisorError(f"cannot connect to {uri}: cpus and memory_mb are numbers") from None
    return _Node(cpus, memory_mb, parts.path.strip("/") or parts.netloc or "localhost")


class FakeHypervisor(Hypervisor):
    def __init__(self, uri: str) -> None:
        if not is_fake_uri(uri):
            raise HypervisorError(f"{uri} is not a {SCHEME}:// URI")
        self.uri = uri
        self.capabilities = Capabilities(
            live_migration=True,
            node_memory_stats=True,
            snapshots=True,
            live_console_password=True,
        )

    # -- plumbing --------------------------------------------------------------------
    def _node(self) -> _Node:
        with _lock:
            if self.uri not in _nodes:
                _nodes[self.uri] = _new_node(self.uri)
            return _nodes[self.uri]

    @contextmanager
    def _domain(self, what: str, name: str) -> Iterator[_Domain]:
        """The domain under the registry lock; DomainNotFound as libvirt's driver says it."""
        with _lock:
            dom = self._node().domains.get(name)
            if dom is None:
                raise DomainNotFound(f"{what} {name}: no such domain on {self.uri}")
            yield dom

    def _fail(self, what: str, name: str, reason: str) -> HypervisorError:
        return HypervisorError(f"{what} {name} on {self.uri}: {reason}")

    def _change(self, what: str, name: str, allowed: set[C.VMStatus], to: C.VMStatus) -> None:
        with self._domain(what, name) as dom:
            if dom.status not in allowed:
                raise self._fail(what, name, f"domain is {dom.status.name.lower()}")
            dom.set_status(to)

    # -- node ------------------------------------------------------------------------
    def node_info(self) -> NodeInfo:
        node = self._node()
        return NodeInfo(cpus=node.cpus, memory_mb=node.memory_mb, hostname=node.hostname)

    def node_cpu_times(self) -> NodeCpuTimes:
        """Every guest's CPU time is user time; the rest of the node's time is idle."""
        with _lock:
            node = self._node()
            total = int((time.monotonic() - node.booted) * 1e9) * node.cpus
            busy = min(total, sum(d.cpu_time_ns for d in node.domains.values()))
        return NodeCpuTimes(kernel_ns=0, user_ns=busy, idle_ns=total - busy, iowait_ns=0)

    def node_memory_kb(self) -> NodeMemory:
        """Running and paused guests hold their current memory; nothing is cached."""
        with _lock:
            node = self._node()
            used = sum(
                domain_xml.memory_kib_and_vcpus(d.live_xml)[0]
                for d in node.domains.values()
                if d.live_xml is not None
            )
        total = node.memory_mb * 1024
        return NodeMemory(total_kb=total, free_kb=max(0, total - used), buffers_kb=0, cached_kb=0)

    def domain_type(
        self, probe_kernel: Path | None = None, probe_initrd: Path | None = None
    ) -> str:
        """Nothing boots here, so nothing proves KVM."""
        return "qemu"

    def list_domains(self) -> list[DomainInfo]:
        with _lock:
            return [_info(d) for d in self._node().domains.values()]

    def domain_info(self, name: str) -> DomainInfo:
        with self._domain("look up", name) as dom:
            return _info(dom)

    # -- definition ------------------------------------------------------------------
    def define(self, xml: str, *, autostart: bool = False) -> None:
        try:
            root = domain_xml.parse(xml)
        except etree.XMLSyntaxError as exc:
            raise HypervisorError(f"define domain on {self.uri}: {exc}") from None
        name = root.findtext("name")
        if root.tag != "domain" or not name:
            raise HypervisorError(f"define domain on {self.uri}: not a domain with a name")
        uuid = root.findtext("uuid") or str(uuidlib.uuid4())
        with _lock:
            domains = self._node().domains
            for other in domains.values():
                if (other.name == name) != (other.uuid == uuid):
                    raise HypervisorError(
                        f"define domain on {self.uri}: domain {other.name!r} already exists "
                        f"with uuid {other.uuid}"
                    )
            dom = domains.setdefault(name, _Domain(name, uuid, xml))
            dom.xml = xml
            dom.autostart = dom.autostart or autostart

    def undefine(self, name: str) -> None:
        with self._domain("undefine", name):
            del self._node().domains[name]

    def xml(self, name: str, *, inactive: bool = False, secure: bool = False) -> str:
        with self._domain("read XML of", name) as dom:
            xml = dom.xml if inactive or dom.live_xml is None else dom.live_xml
        return xml if secure else domain_xml.without_secrets(xml)

    # -- power -----------------------------------------------------------------------
    def start(self, name: str) -> None:
        self._change("start", name, {C.VMStatus.SHUTDOWN}, C.VMStatus.RUNNING)

    def suspend(self, name: str) -> None:
        self._change("suspend", name, {C.VMStatus.RUNNING}, C.VMStatus.SUSPENDED)

    def resume(self, name: str) -> None:
        self._change("resume", name, {C.VMStatus.SUSPENDED}, C.VMStatus.RUNNING)

    def destroy(self, name: str) -> None:
        active = {C.VMStatus.RUNNING, C.VMStatus.SUSPENDED}
        self._change("destroy", name, active, C.VMStatus.SHUTDOWN)

    def shutdown(self, name: str) -> None:
        """The guest obeys at once (a fake guest has nothing to flush)."""
        self._change("shut down", name, {C.VMStatus.RUNNING}, C.VMStatus.SHUTDOWN)

    # -- configuration ---------------------------------------------------------------
    def attach_disk(self, name: str, disk_xml: str, *, live: bool) -> None:
        target = domain_xml.parse(disk_xml).xpath("string(target/@dev)")
        with self._domain("attach disk to", name) as dom:
            if target in domain_xml.disk_targets(dom.xml):
                raise self._fail("attach disk to", name, f"target {target} already exists")
            dom.xml = domain_xml.add_device(dom.xml, disk_xml)
            if live and dom.live_xml is not None:
                dom.live_xml = domain_xml.add_device(dom.live_xml, disk_xml)

    def set_vnc_password(self, name: str, password: str) -> None:
        with self._domain("set VNC password of", name) as dom:
            if dom.live_xml is None:
                raise self._fail("set VNC password of", name, "domain is not running")
            try:
                dom.live_xml = domain_xml.set_vnc_password(dom.live_xml, password)
            except ValidationError as exc:
                raise self._fail("set VNC password of", name, str(exc)) from None

    def set_memory_and_vcpus(self, name: str, memory_mb: int | None, vcpus: int | None) -> None:
        with self._domain("edit", name) as dom:
            dom.xml = domain_xml.set_memory_and_vcpus(dom.xml, memory_mb, vcpus)

    # -- monitoring ------------------------------------------------------------------
    def stats(self, name: str) -> DomainStats:
        """CPU time and size are real; a fake guest reads, writes and sends nothing."""
        with self._domain("read statistics of", name) as dom:
            memory_kib, vcpus = domain_xml.memory_kib_and_vcpus(dom.live_xml or dom.xml)
            return DomainStats(dom.cpu_time_ns, vcpus, memory_kib * 1024, 0, 0, 0, 0)

    # -- snapshots -------------------------------------------------------------------
    def snapshot_create(self, name: str, snapshot_name: str) -> None:
        with self._domain("snapshot", name) as dom:
            if snapshot_name in dom.snapshots:
                reason = f"snapshot {snapshot_name!r} already exists"
                raise self._fail("snapshot", name, reason)
            current = dom.live_xml or dom.xml
            xml = domain_xml.internal_snapshot_xml(
                snapshot_name,
                dom.current,
                int(time.time()),
                dom.active,
                dict.fromkeys(domain_xml.disk_targets(current), True),
                current,
            )
            dom.snapshots[snapshot_name] = _Snapshot(snapshot_name, dom.current, xml, dom.status)
            dom.current = snapshot_name

    def snapshot_revert(self, name: str, snapshot_name: str) -> None:
        what = f"revert to snapshot {snapshot_name!r}"
        with self._domain(what, name) as dom:
            snap = self._snapshot(dom, what, snapshot_name)
            saved = domain_xml.parse(snap.xml).find("domain")
            if saved is not None:
                dom.xml = domain_xml.to_string(saved)
            dom.set_status(C.VMStatus.SHUTDOWN)  # the guest restarts from the snapshot
            dom.set_status(snap.status)
            dom.current = snap.name

    def snapshot_delete(
        self, name: str, snapshot_name: str, *, metadata_only: bool = False
    ) -> None:
        """Children move up to the deleted one's parent, as in libvirt; with no disk
        data here, ``metadata_only`` changes nothing."""
        what = f"delete snapshot {snapshot_name!r} of"
        with self._domain(what, name) as dom:
            gone = self._snapshot(dom, what, snapshot_name)
            del dom.snapshots[snapshot_name]
            for snap in dom.snapshots.values():
                if snap.parent == snapshot_name:
                    snap.parent = gone.parent
            if dom.current == snapshot_name:
                dom.current = gone.parent

    def snapshot_list(self, name: str) -> list[SnapshotInfo]:
        with self._domain("list snapshots of", name) as dom:
            return [
                SnapshotInfo(s.name, s.xml, s.name == dom.current)
                for s in _parents_first(dom.snapshots)
            ]

    def snapshot_redefine(self, name: str, snapshot_xml: str, *, current: bool) -> None:
        what = "redefine snapshot of"
        with self._domain(what, name) as dom:
            snap_name, parent = domain_xml.snapshot_names(snapshot_xml)
            if parent is not None and parent not in dom.snapshots:
                raise self._fail(what, name, f"parent {parent} of {snap_name} not found")
            state = domain_xml.parse(snapshot_xml).findtext("state") or ""
            status = _SNAPSHOT_STATES.get(state, C.VMStatus.SHUTDOWN)
            dom.snapshots[snap_name] = _Snapshot(snap_name, parent, snapshot_xml, status)
            if current:
                dom.current = snap_name

    def _snapshot(self, dom: _Domain, what: str, snapshot_name: str) -> _Snapshot:
        snap = dom.snapshots.get(snapshot_name)
        if snap is None:
            raise self._fail(what, dom.name, f"no snapshot {snapshot_name!r}")
        return snap

    # -- migration -------------------------------------------------------------------
    def migrate(
        self, name: str, dest_uri: str, dest_address: str, *, live: bool, vnc_listen: str
    ) -> None:
        """Moves the domain in its state (``live`` or not: nothing pauses here) onto
        another fake node, with libvirt's refusals: snapshot metadata, a non-fake or the
        same destination, a different or running domain of that name there."""
        what = f"migrate {name} to {dest_uri}"
        with self._domain("migrate", name) as dom:
            if not is_fake_uri(dest_uri) or dest_uri == self.uri:
                raise HypervisorError(f"{what}: not another {SCHEME}:// node")
            if dom.snapshots:
                raise HypervisorError(f"{what}: cannot migrate domain with snapshots")
            dest = FakeHypervisor(dest_uri)._node()
            there = dest.domains.get(name)
            if there is not None and (there.uuid != dom.uuid or there.active):
                raise HypervisorError(f"{what}: domain {name!r} already exists there")
            dom.xml = domain_xml.set_vnc_listen(dom.xml, vnc_listen)
            if dom.live_xml is not None:
                dom.live_xml = domain_xml.set_vnc_listen(dom.live_xml, vnc_listen)
            dest.domains[name] = self._node().domains.pop(name)

    def close(self) -> None:
        """Nothing to close: the nodes outlive every handle on them."""


def _info(dom: _Domain) -> DomainInfo:
    return DomainInfo(name=dom.name, uuid=dom.uuid, status=dom.status, active=dom.active)


def _parents_first(snapshots: dict[str, _Snapshot]) -> list[_Snapshot]:
    """Topological order (what libvirt's LIST_TOPOLOGICAL gives), else creation order."""
    ordered: dict[str, _Snapshot] = {}

    def visit(snap: _Snapshot) -> None:
        if snap.name in ordered:
            return
        if snap.parent in snapshots:
            visit(snapshots[snap.parent])
        ordered[snap.name] = snap

    for snap in snapshots.values():
        visit(snap)
    return list(ordered.values())
