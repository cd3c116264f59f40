"""Host hardware and utilization against this machine: a real sshd on 127.0.0.1
(tests/support/sshd.py) and the real libvirtd (qemu:///system). Every number is checked
against what the machine itself says."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from baadal import constants as C
from baadal.config import Settings, load_settings
from baadal.db.models import Host
from baadal.drivers.remote import RemoteTarget, close_all, execute_remote_cmd
from baadal.errors import RemoteCommandError
from baadal.host import resources as R
from baadal.host import usage as U
from tests.support.cloud import fake_host_uri
from tests.support.libvirtd import ensure_libvirtd
from tests.support.sshd import HOST, SshServer, running_sshd

pytestmark = pytest.mark.integration

GIB = 1024**3


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    with running_sshd(tmp_path_factory.mktemp("sshd")) as server:
        yield server
        close_all()


@pytest.fixture(scope="module")
def libvirt_uri() -> str:
    return ensure_libvirtd()


@pytest.fixture
def ssh_settings(sshd: SshServer, _isolated_home: Path) -> Settings:
    return load_settings(ssh={"known_hosts": str(sshd.known_hosts), "connect_timeout_s": 5})


@pytest.fixture
def host(sshd: SshServer, libvirt_uri: str) -> Host:
    """This machine as a host row: SSH to the test sshd, libvirt to the local libvirtd."""
    return Host(
        host_name="self",
        address=HOST,
        ssh_user="root",
        ssh_port=sshd.port,
        ssh_key_ref=str(sshd.client_key),
        libvirt_uri=libvirt_uri,
    )


def meminfo_kb() -> dict[str, int]:
    values = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        key, _, rest = line.partition(":")
        values[key] = int(rest.split()[0])
    return values


# --------------------------------------------------------------------------- hardware


def test_resource_details_are_this_machines(host: Host, ssh_settings: Settings) -> None:
    details = R.host_resource_details(host, ssh_settings)
    assert details.cpus == os.cpu_count()
    assert abs(details.ram_gb - meminfo_kb()["MemTotal"] / 1024**2) <= 1
    assert abs(details.hdd_gb - shutil.disk_usage("/").total / GIB) <= 1
    # another mount point (tmpfs, sized differently from /) through the parameter
    shm = R.get_host_hdd(host, ssh_settings, "/dev/shm")
    assert abs(shm - shutil.disk_usage("/dev/shm").total / GIB) <= 1


def test_missing_disk_path_is_a_clear_error(host: Host, ssh_settings: Settings) -> None:
    with pytest.raises(RemoteCommandError, match=r"df -P -k -- /no/such/dir.*exit 1"):
        R.get_host_hdd(host, ssh_settings, "/no/such/dir")


def test_mac_address_of_the_loopback_address(host: Host, ssh_settings: Settings) -> None:
    # 127.0.0.1 is on lo, whose MAC is all zeros
    local = Path("/sys/class/net/lo/address").read_text().strip().upper()
    assert R.get_host_mac_address(host, ssh_settings) == local == "00:00:00:00:00:00"


def test_host_type_matches_cpuinfo_and_dmi(host: Host, ssh_settings: Settings) -> None:
    flags = re.search(r"^flags\s*:(.*)$", Path("/proc/cpuinfo").read_text(), re.M)
    dmi = " ".join(Path(f).read_text() for f in R.DMI_FILES if Path(f).is_file()).lower()
    virtual = (flags is not None and "hypervisor" in flags[1].split()) or any(
        m in dmi for m in R.VIRTUAL_DMI_MARKERS
    )
    expected = C.HostType.VIRTUAL if virtual else C.HostType.PHYSICAL
    assert R.get_host_type(host, ssh_settings) == expected


# --------------------------------------------------------------------------- utilization


def test_usage_costs_one_interval(host: Host, ssh_settings: Settings) -> None:
    execute_remote_cmd(RemoteTarget.for_host(host, ssh_settings), ["true"])  # connect first
    start = time.monotonic()
    usage = U.get_host_resources_usage(host, ssh_settings, interval_s=1.0)
    elapsed = time.monotonic() - start
    assert 1.0 <= elapsed < 2.5, elapsed  # one interval, not four (4 s)
    assert 0.0 <= usage.cpu_percent <= 100.0
    assert usage.disk_kbps >= 0.0
    mem = meminfo_kb()
    local_used = mem["MemTotal"] - mem["MemFree"] - mem["Buffers"] - mem["Cached"]
    assert 0 < usage.ram_used_kb < mem["MemTotal"]
    assert abs(usage.ram_used_kb - local_used) < 512 * 1024  # within 512 MiB of a re-read
    assert usage.net_rx_bytes > 0 and usage.net_tx_bytes > 0


def test_cpu_usage_sees_a_busy_process(host: Host, ssh_settings: Settings) -> None:
    burner = subprocess.Popen(
        [sys.executable, "-c", "import time\nend = time.time() + 3\nwhile time.time() < end: pass"]
    )
    try:
        execute_remote_cmd(RemoteTarget.for_host(host, ssh_settings), ["true"])
        time.sleep(0.2)
        busy = U.get_host_cpu_usage(host, ssh_settings, interval_s=1.0)
    finally:
        burner.kill()
        burner.wait()
    # one of os.cpu_count() CPUs spinning: at least most of its share
    assert 0.0 <= busy <= 100.0
    assert busy >= 0.6 * 100.0 / (os.cpu_count() or 1), busy


def test_disk_usage_sees_writes(host: Host, ssh_settings: Settings, tmp_path: Path) -> None:
    blob = tmp_path / "blob"

    def write() -> None:
        time.sleep(0.3)  # after the first sample
        with blob.open("wb") as fh:
            for _ in range(16):
                fh.write(os.urandom(1024 * 1024))
            fh.flush()
            os.fsync(fh.fileno())

    # connect first, so the first sample is taken before the writer starts
    execute_remote_cmd(RemoteTarget.for_host(host, ssh_settings), ["true"])
    writer = threading.Thread(target=write)
    writer.start()
    try:
        kbps = U.get_host_disk_usage(host, ssh_settings, interval_s=1.5)
    finally:
        writer.join()
    # 16 MiB reached the disk within the interval (a rate, so at least ~16 MiB / 1.5 s)
    assert kbps >= 8 * 1024, kbps


def test_network_counters_grow_with_traffic(host: Host, ssh_settings: Settings) -> None:
    target = RemoteTarget.for_host(host, ssh_settings)

    def counters() -> dict[str, tuple[int, int]]:
        return U.parse_net_dev(execute_remote_cmd(target, ["cat", "/proc/net/dev"]).stdout)

    # 1 MiB over loopback, to a listener of our own
    before = counters()["lo"]
    with socket.create_server((HOST, 0)) as server:
        port = server.getsockname()[1]
        with socket.create_connection((HOST, port)) as client:
            conn, _ = server.accept()
            with conn:
                client.sendall(b"x" * (1024 * 1024))
                received = 0
                while received < 1024 * 1024:
                    received += len(conn.recv(65536))
    after = counters()["lo"]
    assert after[0] - before[0] >= 1024 * 1024 and after[1] - before[1] >= 1024 * 1024

    # the reported totals leave lo out: traffic on real links is checked on the lab
    # (tests/e2e/test_lab_hosts.py), whose hosts have their own interfaces


def test_test_driver_host_falls_back_to_proc_over_ssh(
    sshd: SshServer, ssh_settings: Settings, tmp_path: Path
) -> None:
    """libvirt's test:/// node has no memory statistics: RAM comes from /proc/meminfo."""
    host = Host(
        address=HOST,
        ssh_user="root",
        ssh_port=sshd.port,
        ssh_key_ref=str(sshd.client_key),
        libvirt_uri=fake_host_uri(tmp_path, "fake", cpus=3, memory_gb=5),
    )
    used = U.get_host_mem_usage(host, ssh_settings)
    assert 0 < used < meminfo_kb()["MemTotal"]
    assert R.host_resource_details(host, ssh_settings).cpus == 3
    assert R.get_host_ram(host) == 5
