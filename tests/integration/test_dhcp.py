"""DHCP reservations against real servers.

dnsmasq runs in a network namespace of the test's own with a veth to a client namespace:
a reservation made by :func:`create_dhcp_entry` reaches dnsmasq by SIGHUP (its log shows
the hosts file read again, its pid is unchanged) and a busybox udhcpc with the entry's
MAC gets the reserved address; after removal it gets a dynamic one again.
isc-dhcp-server's ``dhcpd -t`` checks the rendered host blocks (and rejects broken ones).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from baadal import constants as C
from baadal.config import DhcpConf, Settings, load_settings
from baadal.drivers.remote import close_all
from baadal.errors import ConfigError, RemoteCommandError
from baadal.net.dhcp import (
    DhcpEntry,
    create_dhcp_bulk_entry,
    create_dhcp_entry,
    dhcp_name,
    read_dhcp_entries,
    remove_dhcp_entry,
    render_isc_hosts,
)
from tests.support.sshd import HOST, running_sshd

pytestmark = pytest.mark.integration

SERVER_IP = "10.98.77.1"
RESERVED_IP = "10.98.77.10"
CLIENT_MAC = "a2:00:00:98:77:10"
LEASE_RE = re.compile(r"lease of (\S+) obtained")


def _run(argv: list[str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=True)


def _need_root_and(*tools: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    for tool in tools:
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")


@dataclass
class DnsmasqLab:
    server_ns: str
    client_ns: str
    work: Path
    hosts: Path
    pid_file: Path
    log: Path

    def pid(self) -> int:
        return int(self.pid_file.read_text().strip())

    def reads(self) -> int:
        """How often dnsmasq has read the hosts file (start + one per SIGHUP)."""
        return self.log.read_text(errors="replace").count(f"read {self.hosts}\n")

    def wait_reads(self, count: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while self.reads() < count:
            assert time.monotonic() < deadline, f"dnsmasq did not re-read {self.hosts}"
            time.sleep(0.05)

    def lease(self) -> str:
        """The address a fresh DHCP client with CLIENT_MAC is given."""
        out = _run(
            ["ip", "netns", "exec", self.client_ns, "busybox", "udhcpc", "-i", "cli0",
             "-n", "-q", "-s", "/bin/true", "-t", "8", "-T", "1"],
        )  # fmt: skip
        match = LEASE_RE.search(out.stdout + out.stderr)
        assert match, f"udhcpc got no lease: {out.stdout}{out.stderr}"
        return match[1]


def _stop(pid_file: Path) -> None:
    """Stop the dnsmasq this test started (the pid file is its own, checked by name)."""
    with contextlib.suppress(FileNotFoundError, ValueError):
        pid = int(pid_file.read_text().strip())
        comm = Path(f"/proc/{pid}/comm")
        if comm.exists() and comm.read_text().strip() == "dnsmasq":
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 5
            while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
                time.sleep(0.05)


@pytest.fixture
def dnsmasq_lab() -> Iterator[DnsmasqLab]:
    _need_root_and("ip", "dnsmasq", "busybox")
    tag = os.getpid()
    # not the lab's "bdl-" prefix: `lab down` sweeps every namespace that has it
    server_ns, client_ns = f"bdt-dhcps{tag}", f"bdt-dhcpc{tag}"
    # dnsmasq re-reads the file as nobody: pytest's tmp_path (0700) would hide it
    work = Path(tempfile.mkdtemp(prefix="bdt-dhcp-"))
    work.chmod(0o755)
    lab = DnsmasqLab(
        server_ns, client_ns, work, work / "hosts", work / "dnsmasq.pid", work / "dnsmasq.log"
    )
    namespaces: list[str] = []
    try:
        for ns in (server_ns, client_ns):
            _run(["ip", "netns", "add", ns])
            namespaces.append(ns)
            _run(["ip", "-n", ns, "link", "set", "lo", "up"])
        _run(["ip", "-n", server_ns, "link", "add", "srv0", "type", "veth",
              "peer", "name", "cli0", "netns", client_ns])  # fmt: skip
        _run(["ip", "-n", server_ns, "addr", "add", f"{SERVER_IP}/24", "dev", "srv0"])
        _run(["ip", "-n", server_ns, "link", "set", "srv0", "up"])
        _run(["ip", "-n", client_ns, "link", "set", "cli0", "address", CLIENT_MAC])
        _run(["ip", "-n", client_ns, "link", "set", "cli0", "up"])
        lab.hosts.write_text("")
        lab.hosts.chmod(0o644)
        _run(["ip", "netns", "exec", server_ns, "dnsmasq", "--conf-file=/dev/null",
              "--no-resolv", "--no-hosts", "--port=0", "--bind-interfaces",
              "--interface=srv0", "--dhcp-range=10.98.77.100,10.98.77.150,1h",
              f"--dhcp-hostsfile={lab.hosts}", f"--dhcp-leasefile={work / 'leases'}",
              f"--pid-file={lab.pid_file}", "--log-dhcp",
              f"--log-facility={lab.log}"])  # fmt: skip
        lab.wait_reads(1)
        yield lab
    finally:
        _stop(lab.pid_file)
        for ns in namespaces:
            subprocess.run(["ip", "netns", "del", ns], check=False, capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


def test_dnsmasq_rereads_on_sighup_and_serves_the_reservation(
    dnsmasq_lab: DnsmasqLab, settings: Settings
) -> None:
    lab = dnsmasq_lab
    conf = settings.model_copy(
        update={
            "dhcp": DhcpConf(
                backend=C.DhcpBackend.DNSMASQ,
                hosts_file=str(lab.hosts),
                pid_file=str(lab.pid_file),
            )
        }
    )
    pid = lab.pid()
    before = lab.lease()
    assert before != RESERVED_IP
    assert 100 <= int(before.rsplit(".", 1)[1]) <= 150

    assert create_dhcp_entry(conf, "vm-reserved", CLIENT_MAC, RESERVED_IP)
    lab.wait_reads(2)
    assert lab.pid() == pid and Path(f"/proc/{pid}").exists()  # re-read, not restarted
    assert lab.lease() == RESERVED_IP
    log = lab.log.read_text(errors="replace")
    assert f"DHCPACK(srv0) {RESERVED_IP} {CLIENT_MAC} vm-reserved" in log

    # the same entry again: nothing written, no signal
    assert not create_dhcp_entry(conf, "vm-reserved", CLIENT_MAC.upper(), RESERVED_IP)
    other = DhcpEntry("vm-other", "a2:00:00:98:77:11", "10.98.77.11")
    assert create_dhcp_bulk_entry(conf, [other])
    lab.wait_reads(3)
    assert read_dhcp_entries(conf) == [DhcpEntry("vm-reserved", CLIENT_MAC, RESERVED_IP), other]

    assert remove_dhcp_entry(conf, "vm-reserved", CLIENT_MAC, RESERVED_IP)
    lab.wait_reads(4)
    assert lab.lease() != RESERVED_IP
    assert lab.pid() == pid


def test_dnsmasq_gone_is_an_error_but_the_file_is_kept(
    dnsmasq_lab: DnsmasqLab, settings: Settings
) -> None:
    lab = dnsmasq_lab
    conf = settings.model_copy(
        update={
            "dhcp": DhcpConf(
                backend=C.DhcpBackend.DNSMASQ,
                hosts_file=str(lab.hosts),
                pid_file=str(lab.pid_file),
            )
        }
    )
    pid = lab.pid()
    _stop(lab.pid_file)
    with pytest.raises(ConfigError, match=f"dnsmasq is not running.*pid {pid}"):
        create_dhcp_entry(conf, "vm-reserved", CLIENT_MAC, RESERVED_IP)
    assert read_dhcp_entries(conf) == [DhcpEntry("vm-reserved", CLIENT_MAC, RESERVED_IP)]


# --------------------------------------------------------------------------- isc


def _dhcpd_check(conf_file: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["dhcpd", "-t", "-cf", str(conf_file)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_isc_dhcpd_accepts_the_rendered_hosts(settings: Settings, tmp_path: Path) -> None:
    if shutil.which("dhcpd") is None:
        pytest.skip("dhcpd is not installed (apt-get install isc-dhcp-server)")
    hosts = tmp_path / "baadal-hosts.conf"
    dhcpd_conf = tmp_path / "dhcpd.conf"
    dhcpd_conf.write_text(f'include "{hosts}";\nsubnet 10.98.77.0 netmask 255.255.255.0 {{}}\n')
    # the reload command is dhcpd's own syntax check: a bad file fails the change
    conf = settings.model_copy(
        update={
            "dhcp": DhcpConf(
                backend=C.DhcpBackend.ISC,
                isc_conf_file=str(hosts),
                isc_reload_command=["dhcpd", "-t", "-cf", str(dhcpd_conf)],
            )
        }
    )
    entries = [
        ("ORG_alice_web-1", "a2:00:00:98:77:10", "10.98.77.10"),
        ("123", "A2-00-00-98-77-11", "10.98.77.11"),
        ("a.b-c.d_e", "a2:00:00:98:77:12", "10.98.77.12"),
        ("subnet", "a2:00:00:98:77:13", "10.98.77.13"),  # a dhcpd keyword
        (dhcp_name("ORG_bob_my vm;{x}" + "y" * 80), "a2:00:00:98:77:14", "10.98.77.14"),
    ]
    assert create_dhcp_bulk_entry(conf, entries)
    assert create_dhcp_entry(conf, "ORG_bob_b", "a2:00:00:98:77:15", "10.98.77.15")
    assert remove_dhcp_entry(conf, "123", "a2:00:00:98:77:11", "10.98.77.11")
    check = _dhcpd_check(dhcpd_conf)
    assert check.returncode == 0, check.stderr
    assert len(read_dhcp_entries(conf)) == 5

    # the check can fail: two blocks with one name (the conflict rule prevents this) ...
    dup = DhcpEntry("ORG_bob_b", "a2:00:00:98:77:16", "10.98.77.16")
    hosts.write_text(render_isc_hosts([*read_dhcp_entries(conf), dup]))
    check = _dhcpd_check(dhcpd_conf)
    assert check.returncode != 0
    assert "already exists" in check.stderr
    # ... and a syntax error
    hosts.write_text(render_isc_hosts(read_dhcp_entries(conf)[:1]).replace(";", ""))
    assert _dhcpd_check(dhcpd_conf).returncode != 0
    # a change after which dhcpd refuses its configuration is reported
    hosts.write_text(render_isc_hosts([dup]))
    dhcpd_conf.write_text(f'include "{hosts}";\nsubnet 10.98.77.0 netmask 255.255.255.0 {{\n')
    with pytest.raises(RemoteCommandError, match="dhcpd -t"):
        create_dhcp_entry(conf, "vm-late", "a2:00:00:98:77:17", "10.98.77.17")


# --------------------------------------------------------------------------- remote


def _add_remote_in_child(settings: Settings, first: int) -> None:
    for i in range(first, first + 3):
        create_dhcp_entry(settings, f"vm-{i}", f"a2:00:00:00:03:{i:02x}", f"10.0.3.{i}")


def test_remote_server_over_ssh_keeps_every_entry_of_concurrent_workers(
    tmp_path: Path, settings: Settings
) -> None:
    """Four worker processes change the reservations on a DHCP machine over real SSH at
    once: each change is a read, an edit and a write of the whole file, so without a lock
    across processes entries get lost."""
    with running_sshd(tmp_path / "sshd") as sshd:
        conf_file = tmp_path / "dhcp" / "baadal-hosts.conf"
        conf_file.parent.mkdir()
        remote = load_settings(
            ssh={
                "user": "root",
                "port": sshd.port,
                "key_file": str(sshd.client_key),
                "known_hosts": str(sshd.known_hosts),
            },
            dhcp={
                "backend": C.DhcpBackend.ISC,
                "dhcp_ip": HOST,
                "isc_conf_file": str(conf_file),
                "isc_reload_command": ["true"],
            },
        )
        ctx = multiprocessing.get_context("fork")
        children = [
            ctx.Process(target=_add_remote_in_child, args=(remote, 3 * n)) for n in range(4)
        ]
        for child in children:
            child.start()
        for child in children:
            child.join(60)
        assert [c.exitcode for c in children] == [0] * 4
        entries = read_dhcp_entries(remote)
        assert sorted(e.ip for e in entries) == sorted(f"10.0.3.{i}" for i in range(12))
        assert sshd.accepted_connections() >= 4  # it really went over SSH
        close_all()
