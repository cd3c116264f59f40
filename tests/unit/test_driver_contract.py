"""One set of behaviour checks for every hypervisor driver: the in-memory fake, libvirt's
test:/// driver and a real libvirtd (qemu:///system, TCG). What passes on the fake must
mean the same on libvirt, or tests written against the fake prove nothing."""

from __future__ import annotations

import contextlib
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from baadal import constants as C
from baadal.drivers import domain_xml, fake, hypervisor_for
from baadal.drivers.base import DomainNotFound, Hypervisor, HypervisorError, NotSupported
from tests.support.cloud import fake_host_uri
from tests.support.libvirtd import ensure_libvirtd, qemu_workdir


@dataclass
class Node:
    """A driver under test and what its domains need."""

    hv: Hypervisor
    disk: Path
    #: another node of the same driver (a migration destination)
    other_uri: str | None
    defined: list[str] = field(default_factory=list)

    def spec(self, **changes: object) -> domain_xml.DomainSpec:
        name = f"contract-{uuid.uuid4().hex[:8]}"
        self.defined.append(name)
        disk = domain_xml.DiskSpec(str(self.disk))
        spec = domain_xml.DomainSpec(name, str(uuid.uuid4()), 64, 1, [disk])
        return replace(spec, **changes)

    def define(self, **changes: object) -> str:
        spec = self.spec(**changes)
        self.hv.define(domain_xml.build_domain_xml(spec))
        return spec.name


@contextlib.contextmanager
def _workdir(kind: str, tmp_path: Path) -> Iterator[Path]:
    """The real libvirtd's guests run as libvirt-qemu: they need a directory it can enter."""
    if kind == "libvirtd":
        with qemu_workdir("baadal-contract-") as root:
            yield root
    else:
        yield tmp_path


@pytest.fixture(
    params=[
        pytest.param("fake", marks=pytest.mark.unit),
        pytest.param("test", marks=pytest.mark.unit),
        pytest.param("libvirtd", marks=[pytest.mark.integration, pytest.mark.slow]),
    ]
)
def node(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Node]:
    kind = request.param
    fake.reset()
    uris = {
        "fake": ("fake:///contract-a", "fake:///contract-b"),
        "test": (fake_host_uri(tmp_path, "a"), fake_host_uri(tmp_path, "b")),
    }
    uri, other = uris[kind] if kind in uris else (ensure_libvirtd(), None)
    with _workdir(kind, tmp_path) as root:
        disk = root / "disk.qcow2"
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "16M"], check=True)
        disk.chmod(0o666)
        found = Node(hypervisor_for(uri), disk, other)
        try:
            yield found
        finally:
            for name in found.defined:
                with contextlib.suppress(HypervisorError):
                    found.hv.undefine(name)
            fake.reset()


def test_power_states_follow_libvirt(node: Node) -> None:
    hv = node.hv
    name = node.define()
    assert hv.is_defined(name)
    assert name in {d.name for d in hv.list_domains()}
    assert (hv.domain_info(name).status, hv.domain_info(name).active) == (
        C.VMStatus.SHUTDOWN,
        False,
    )
    with pytest.raises(HypervisorError, match=f"destroy {name}"):
        hv.destroy(name)  # not running
    hv.start(name)
    assert (hv.domain_info(name).status, hv.domain_info(name).active) == (C.VMStatus.RUNNING, True)
    with pytest.raises(HypervisorError, match=f"start {name}"):
        hv.start(name)  # already running
    hv.suspend(name)
    assert (hv.domain_info(name).status, hv.domain_info(name).active) == (
        C.VMStatus.SUSPENDED,
        True,
    )
    hv.resume(name)
    assert hv.domain_info(name).status == C.VMStatus.RUNNING
    hv.destroy(name)
    assert hv.domain_info(name).status == C.VMStatus.SHUTDOWN
    hv.start(name)
    hv.undefine(name)  # powers off first
    assert not hv.is_defined(name)
    assert name not in {d.name for d in hv.list_domains()}
    for call in (hv.start, hv.domain_info, hv.undefine, hv.stats, hv.snapshot_list):
        with pytest.raises(DomainNotFound, match="no such domain"):
            call(name)


def test_a_name_belongs_to_one_uuid(node: Node) -> None:
    spec = node.spec()
    node.hv.define(domain_xml.build_domain_xml(spec))
    node.hv.define(domain_xml.build_domain_xml(replace(spec, memory_mb=96)))  # same domain
    assert node.hv.domain_info(spec.name).uuid == spec.uuid
    other = replace(spec, uuid=str(uuid.uuid4()))
    with pytest.raises(HypervisorError, match="already exists"):
        node.hv.define(domain_xml.build_domain_xml(other))


def test_xml_shows_secrets_only_when_asked(node: Node) -> None:
    name = node.define(vnc_port=5987, vnc_password="s3cret")
    assert 'passwd="s3cret"' in node.hv.xml(name, inactive=True, secure=True).replace("'", '"')
    assert "s3cret" not in node.hv.xml(name, inactive=True)


def test_vnc_password_changes_on_the_running_console(node: Node) -> None:
    """A console grant's password works at once and the previous one stops working."""
    hv = node.hv
    name = node.define(vnc_port=5989, vnc_listen="127.0.0.1", vnc_password="old-pw")
    with pytest.raises(HypervisorError, match="not running"):
        hv.set_vnc_password(name, "never")
    hv.start(name)
    hv.set_vnc_password(name, "grant-1")
    shown = hv.xml(name, secure=True) if hv.capabilities.live_console_password else None
    if shown is None:  # test:/// has no console; the definition it starts from changes
        shown = hv.xml(name, inactive=True, secure=True)
    assert "passwd='grant-1'" in shown.replace('"', "'") and "old-pw" not in shown
    assert "grant-1" not in hv.xml(name)
    if hv.capabilities.live_console_password:  # the definition keeps its own password
        assert "old-pw" in hv.xml(name, inactive=True, secure=True)
    hv.destroy(name)  # frees the disk: a second guest cannot share it on qemu
    plain = node.define()
    hv.start(plain)
    with pytest.raises(HypervisorError, match="no VNC console"):
        hv.set_vnc_password(plain, "x")
    with pytest.raises(DomainNotFound):
        hv.set_vnc_password("no-such-domain", "x")


def test_edits_change_the_persistent_definition(node: Node) -> None:
    hv = node.hv
    name = node.define()
    hv.set_memory_and_vcpus(name, 128, 2)
    hv.attach_disk(
        name, domain_xml.disk_xml(domain_xml.DiskSpec(str(node.disk), "vdb")), live=False
    )
    xml = hv.xml(name, inactive=True)
    assert domain_xml.memory_kib_and_vcpus(xml) == (128 * 1024, 2)
    assert domain_xml.disk_targets(xml) == ["vda", "vdb"]


def test_running_domains_have_statistics(node: Node) -> None:
    hv = node.hv
    name = node.define()
    hv.start(name)
    stats = hv.stats(name)
    assert stats.vcpus == 1 and stats.memory_bytes > 0 and stats.cpu_time_ns >= 0
    assert name in hv.running_stats()


def test_node_reports_its_size(node: Node) -> None:
    hv = node.hv
    info = hv.node_info()
    assert info.cpus > 0 and info.memory_mb > 0 and info.hostname
    if hv.capabilities.node_memory_stats:
        memory = hv.node_memory_kb()
        assert 0 <= memory.free_kb <= memory.total_kb
    else:
        with pytest.raises(NotSupported):
            hv.node_memory_kb()
    with contextlib.suppress(NotSupported):
        assert hv.node_cpu_times().total_ns > 0


def test_kvm_needs_a_boot_probe(node: Node) -> None:
    """Without a probe kernel no driver may answer 'kvm'."""
    assert node.hv.domain_type(Path("/nonexistent/vmlinuz")) == "qemu"


def test_snapshots_form_a_tree_and_revert(node: Node) -> None:
    hv = node.hv
    name = node.define()
    hv.snapshot_create(name, "off")
    hv.start(name)
    hv.snapshot_create(name, "on")
    snaps = hv.snapshot_list(name)
    assert [(s.name, s.is_current) for s in snaps] == [("off", False), ("on", True)]
    assert all(s.xml.startswith("<domainsnapshot") for s in snaps)
    hv.snapshot_revert(name, "off")
    assert hv.domain_info(name).status == C.VMStatus.SHUTDOWN
    hv.snapshot_revert(name, "on")
    assert hv.domain_info(name).status == C.VMStatus.RUNNING
    with pytest.raises(HypervisorError, match="nosuch"):
        hv.snapshot_revert(name, "nosuch")
    hv.snapshot_delete(name, "on")
    assert [(s.name, s.is_current) for s in hv.snapshot_list(name)] == [("off", True)]


def test_snapshots_are_redefined_parents_first(node: Node) -> None:
    """What a respawn and a migration do: the domain loses its snapshot metadata and
    gets it back from the saved XML."""
    hv = node.hv
    spec = node.spec()
    xml = domain_xml.build_domain_xml(spec)
    hv.define(xml)
    for snap in ("a", "b", "c"):
        hv.snapshot_create(spec.name, snap)
    hv.snapshot_revert(spec.name, "b")
    saved = hv.snapshot_list(spec.name)
    hv.undefine(spec.name)
    hv.define(xml)
    assert hv.snapshot_list(spec.name) == []
    for snap in saved:
        hv.snapshot_redefine(spec.name, snap.xml, current=snap.is_current)
    again = hv.snapshot_list(spec.name)
    assert [(s.name, s.is_current) for s in again] == [("a", False), ("b", True), ("c", False)]


def test_migration_moves_the_domain_or_is_refused(node: Node) -> None:
    hv = node.hv
    name = node.define(vnc_port=5988)
    hv.start(name)
    if not hv.capabilities.live_migration:
        with pytest.raises(NotSupported):
            hv.migrate(name, "qemu+tcp://192.0.2.1/system", "192.0.2.1", live=True, vnc_listen="")
        assert hv.domain_info(name).active
        return
    if node.other_uri is None:
        pytest.skip("one libvirtd here: migration is tested on the lab (tests/e2e)")
    dest = hypervisor_for(node.other_uri)
    hv.snapshot_create(name, "s")
    with pytest.raises(HypervisorError, match="snapshot"):  # callers move them themselves
        hv.migrate(name, dest.uri, "192.0.2.2", live=True, vnc_listen="192.0.2.2")
    hv.snapshot_delete(name, "s", metadata_only=True)
    hv.suspend(name)
    hv.migrate(name, dest.uri, "192.0.2.2", live=True, vnc_listen="192.0.2.2")
    assert not hv.is_defined(name)
    assert dest.domain_info(name).status == C.VMStatus.SUSPENDED
    assert "192.0.2.2" in dest.xml(name, inactive=True)
    dest.destroy(name)
    dest.migrate(name, hv.uri, "192.0.2.1", live=False, vnc_listen="192.0.2.1")  # offline
    assert hv.domain_info(name).status == C.VMStatus.SHUTDOWN
    assert not dest.is_defined(name)
