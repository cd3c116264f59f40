"""Monitoring against the real things on this machine: libvirtd's bulk domain statistics
for a running QEMU domain, this machine as a host over a real sshd (tests/support/sshd.py)
recorded in a real RRD file, and the network graph measured over SSH with real ping and
iperf3 on the loopback. The whole path on the multi-host lab is tests/e2e/test_monitoring.py."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest
import rrdtool
from sqlalchemy import Engine

from baadal import constants as C
from baadal.config import Settings, load_settings
from baadal.db.models import Host
from baadal.db.session import session_scope
from baadal.drivers.libvirt_driver import LibvirtHypervisor
from baadal.drivers.remote import close_all
from baadal.host import network_graph as G
from baadal.monitor import rrd
from tests.support.libvirtd import ensure_libvirtd, qemu_workdir, remove_domain
from tests.support.sshd import HOST, SshServer, running_sshd

pytestmark = pytest.mark.integration

DOMAIN = "baadal-test-monitor"
DOMAIN_XML = """<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='{disk}'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <interface type='user'><model type='virtio'/></interface>
  </devices>
</domain>
"""


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    with running_sshd(tmp_path_factory.mktemp("sshd")) as server:
        yield server
        close_all()


@pytest.fixture
def ssh_settings(sshd: SshServer, _isolated_home: Path) -> Settings:
    return load_settings(ssh={"known_hosts": str(sshd.known_hosts), "connect_timeout_s": 5})


def this_machine(sshd: SshServer, name: str, uri: str) -> Host:
    return Host(
        host_name=name,
        address=HOST,
        CPUs=1,
        status=C.HostStatus.UP,
        ssh_user="root",
        ssh_port=sshd.port,
        ssh_key_ref=str(sshd.client_key),
        libvirt_uri=uri,
    )


@pytest.fixture
def running_domain() -> Iterator[LibvirtHypervisor]:
    """A QEMU domain that runs (its BIOS finds no system and keeps trying)."""
    uri = ensure_libvirtd()
    conn = libvirt.open(uri)
    remove_domain(conn, DOMAIN)
    with qemu_workdir("baadal-monitor-") as work:
        disk = work / "disk.qcow2"
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "16M"], check=True)
        conn.createXML(DOMAIN_XML.format(name=DOMAIN, disk=disk), 0)
        try:
            yield LibvirtHypervisor(uri)
        finally:
            remove_domain(conn, DOMAIN)
            conn.close()


def last_ds(path: Path) -> dict[str, float]:
    info = rrdtool.info(str(path))
    return {name: float(info[f"ds[{name}].last_ds"]) for name, _ in rrd.SOURCES}


def test_bulk_statistics_of_a_running_domain_match_the_single_call(
    running_domain: LibvirtHypervisor, settings: Settings
) -> None:
    hv = running_domain
    time.sleep(1.0)  # some CPU time and the BIOS's disk reads
    before = hv.stats(DOMAIN)
    bulk = hv.running_stats()[DOMAIN]
    after = hv.stats(DOMAIN)
    assert bulk.vcpus == after.vcpus == 1
    # virDomainGetInfo reads the QEMU process's ticks, the bulk call its cgroup: the two
    # agree only roughly, so the check is that the right field was read
    slack = 0.2 * after.cpu_time_ns + 50_000_000
    assert before.cpu_time_ns > 0 and abs(bulk.cpu_time_ns - after.cpu_time_ns) < slack
    assert 0 < before.disk_read_bytes <= bulk.disk_read_bytes <= after.disk_read_bytes
    assert bulk.memory_bytes > 0
    assert rrd.update_vm_rrd(settings, DOMAIN, bulk, int(time.time()))
    recorded = last_ds(rrd.get_rrd_file(settings, DOMAIN))
    assert recorded["cpu"] == bulk.cpu_time_ns // 10_000_000
    assert recorded["dr"] == bulk.disk_read_bytes
    assert recorded["ram"] == bulk.memory_bytes


def test_this_machine_recorded_as_a_host_over_ssh(
    sshd: SshServer, ssh_settings: Settings, sqlite_engine: Engine
) -> None:
    uri = ensure_libvirtd()
    with session_scope(sqlite_engine) as s:
        s.add(this_machine(sshd, "self", uri))
    report = rrd.update_all_rrds(sqlite_engine, ssh_settings)
    assert (report.hosts, report.vms, report.failures) == (["self"], 0, {})
    path = rrd.get_rrd_file(ssh_settings, rrd.host_identity("127.0.0.1"))
    recorded = last_ds(path)
    meminfo = {
        line.split(":")[0]: int(line.split()[1]) * 1024
        for line in Path("/proc/meminfo").read_text().splitlines()
    }
    used = meminfo["MemTotal"] - meminfo["MemFree"] - meminfo["Buffers"] - meminfo["Cached"]
    assert abs(recorded["ram"] - used) < 0.1 * meminfo["MemTotal"]
    assert recorded["cpu"] > 0 and recorded["rx"] > 0 and recorded["tx"] > 0
    # the next run in the same second is skipped, a later one is recorded
    assert not rrd.update_rrd_file(
        path, rrd.RrdSample(int(rrdtool.last(str(path))), 0, 0, 0, 0, 0, 0)
    )
    time.sleep(1.1)
    assert rrd.update_all_rrds(sqlite_engine, ssh_settings).hosts == ["self"]


def test_network_graph_measured_over_ssh(sshd: SshServer, ssh_settings: Settings) -> None:
    uri = ensure_libvirtd()
    hosts = [this_machine(sshd, name, uri) for name in ("self-a", "self-b")]
    steps: list[str] = []
    graph = G.collect_data_from_host(hosts, ssh_settings, steps.append)
    assert len(steps) == G.measurement_count(2) == 4 and steps[-1] == "self-b -> self-a"
    assert [n.name for n in graph.nodes] == ["self-a", "self-b"]
    assert [n.label for n in graph.nodes] == ["unknown", "unknown"]  # lo has no link speed
    assert [(e.source, e.target) for e in graph.edges] == [(0, 1), (1, 0)]
    for edge in graph.edges:
        assert edge.latency_ms is not None and 0 < edge.latency_ms < 5
        assert edge.throughput_mbps is not None and edge.throughput_mbps > 100
    # nothing of iperf3 is left running
    time.sleep(0.5)
    assert subprocess.run(["pgrep", "-f", f"iperf3 -s -1 -D.*-p {G.IPERF_PORT}"]).returncode == 1
