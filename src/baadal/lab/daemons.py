"""The lab's processes: the compute hosts (OVS, virtlogd, libvirtd, sshd in their
namespaces), dnsmasq, the BMCs; starting them, waiting until they answer, and ending
them."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from baadal.config import Settings
from baadal.drivers.remote import run_local
from baadal.files import write_atomically
from baadal.lab import bmc, ssh
from baadal.lab.hostns import LabHost, prepare_host_dir
from baadal.lab.layout import (
    BMC_MGMT_LINK,
    BMC_NETNS,
    DHCP_NETNS,
    HOSTS,
    LIBVIRT_PORT,
    MGMT_PREFIX,
    NAT_MGMT_IP,
    SWITCH_BRIDGE,
    VLANS,
)
from baadal.lab.state import LabError, State, dns_dir, hosts_file, lab_dir, nat_dir
from baadal.lab.wiring import add_netns, mgmt_leg, run, vlan_port

LIBVIRT_WAIT_S = 90.0


BMC_START_S = 20.0


def pid_alive(pid_file: Path, comm: str | None = None) -> int | None:
    """The pid in ``pid_file`` if that process lives (and is called ``comm``)."""
    try:
        pid = int(pid_file.read_text().strip())
        name = Path(f"/proc/{pid}/comm").read_text().strip()
    except (OSError, ValueError):
        return None
    if (comm is not None and name != comm[:15]) or not running(pid):
        return None
    return pid


def running(pid: int) -> bool:
    """Alive and not a zombie (daemons are re-parented to a PID 1 that may never reap)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def netns_pids(netns: str) -> list[int]:
    out = run_local(["ip", "netns", "pids", netns], check=False).stdout
    return [int(p) for p in out.split() if p.isdigit()]


def kill_all(pids: list[int], grace_s: float = 5.0) -> None:
    """TERM, then KILL what is left after ``grace_s``."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if not any(running(p) for p in pids):
            return
        time.sleep(0.1)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def libvirt_answers(uri: str, address: str, timeout: float = 3.0) -> tuple[bool, str]:
    """True once libvirtd on ``uri`` answers an API call (a TCP probe first: no hang)."""
    try:
        with socket.create_connection((address, LIBVIRT_PORT), timeout=timeout):
            pass
    except OSError as exc:
        return False, f"port {LIBVIRT_PORT}: {exc.strerror or exc}"
    import libvirt

    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    try:
        conn = libvirt.open(uri)
    except libvirt.libvirtError as exc:
        return False, str(exc)
    try:
        return True, f"libvirt {conn.getLibVersion()} uuid {_host_uuid(conn)}"
    finally:
        conn.close()


def _host_uuid(conn: object) -> str:
    import re

    xml = conn.getCapabilities()  # type: ignore[attr-defined]
    match = re.search(r"<uuid>([^<]+)</uuid>", xml)
    return match.group(1) if match else "?"


def fix_kvm_permissions() -> None:
    """/dev/kvm 0660 root:kvm: with 0600 libvirt drops its capability cache on every use
    (libvirtd start 12-16 s instead of 0.2 s, lab-notes.md)."""
    kvm = Path("/dev/kvm")
    if not kvm.exists():
        return
    import grp

    with contextlib.suppress(KeyError, OSError):
        os.chown(kvm, -1, grp.getgrnam("kvm").gr_gid)
        kvm.chmod(0o660)


def start_hosts(settings: Settings, state: State) -> None:
    lab = lab_dir(settings)
    for host in HOSTS:
        add_netns(state, host.netns)
        mgmt_leg(state, host.netns, host.mgmt_link, host.mgmt_ip)
        state.record("link", host.trunk_link)
        run(["ip", "link", "add", host.trunk_link, "type", "veth",
              "peer", "name", "trunk0", "netns", host.netns])  # fmt: skip
        run(["ip", "link", "set", host.trunk_link, "up"])
        run(["ip", "-n", host.netns, "link", "set", "trunk0", "up"])
        run(["ovs-vsctl", "--timeout=10", "add-port", SWITCH_BRIDGE, host.trunk_link])

    def start(host: LabHost) -> None:
        script = prepare_host_dir(host, lab)
        run(
            ["ip", "netns", "exec", host.netns, "unshare", "--mount", "--propagation",
             "private", "sh", str(script), str(host.directory(lab)),
             settings.network.bridge, "trunk0"],
            timeout=120,
        )  # fmt: skip

    with ThreadPoolExecutor(len(HOSTS)) as pool:
        list(pool.map(start, HOSTS))


def start_dhcp(settings: Settings, state: State) -> None:
    """One dnsmasq in its own namespace with a leg on every VLAN, serving the hosts file;
    each VLAN's router option points at the NAT box."""
    dns = dns_dir(settings)
    add_netns(state, DHCP_NETNS)
    argv = ["ip", "netns", "exec", DHCP_NETNS, "dnsmasq", "--conf-file=/dev/null",
            "--no-resolv", "--no-hosts", "--port=0", "--bind-interfaces",
            "--except-interface=lo"]  # fmt: skip
    for vlan in VLANS:
        vlan_port(state, vlan, vlan.dhcp_port, vlan.dhcp_ip, DHCP_NETNS)
        first, last = vlan.dynamic_range
        argv += [
            f"--interface={vlan.dhcp_port}",
            f"--dhcp-range=set:{vlan.name},{first},{last},{vlan.network.netmask},1h",
            f"--dhcp-option=tag:{vlan.name},option:router,{vlan.gateway_ip}",
        ]
    hosts = hosts_file(settings)
    if not hosts.exists():
        write_atomically(hosts, "")
    argv += [f"--dhcp-hostsfile={hosts}", f"--dhcp-leasefile={dns / 'leases'}",
             "--dhcp-authoritative", f"--pid-file={dns / 'dnsmasq.pid'}", "--log-dhcp",
             f"--log-facility={dns / 'dnsmasq.log'}"]  # fmt: skip
    run(argv)


def start_bmcs(settings: Settings, state: State) -> None:
    """The hosts' BMCs: a process per host answering IPMI on its BMC address, with a
    fresh password in a root-only file."""
    add_netns(state, BMC_NETNS)
    first, *others = HOSTS
    mgmt_leg(state, BMC_NETNS, BMC_MGMT_LINK, first.bmc_ip)
    for host in others:
        run(["ip", "-n", BMC_NETNS, "addr", "add", f"{host.bmc_ip}/{MGMT_PREFIX}",
              "dev", "mgmt0"])  # fmt: skip
    lab = lab_dir(settings)
    secret = bmc.password_file(lab)
    secret.parent.mkdir(mode=0o700, exist_ok=True)
    secret.touch(mode=0o600)
    secret.write_text(secrets.token_urlsafe(16) + "\n")
    procs = [(host, _start_bmc(lab, host)) for host in HOSTS]
    deadline = time.monotonic() + BMC_START_S
    for host, proc in procs:
        log = bmc.log_file(lab, host)
        while "BMC listening" not in log.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = log.read_text(errors="replace")[-800:]
                raise LabError(f"the BMC of {host.name} did not start: {tail}")
            time.sleep(0.1)


def _start_bmc(lab: Path, host: LabHost) -> subprocess.Popen[bytes]:
    argv = ["ip", "netns", "exec", BMC_NETNS, sys.executable, "-m", "baadal.lab.bmc",
            str(lab), host.name]  # fmt: skip
    with open(bmc.log_file(lab, host), "wb") as log:
        proc = subprocess.Popen(  # noqa: S603 - fixed argument list, no shell
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    bmc.pid_file(lab, host).write_text(f"{proc.pid}\n")
    return proc


def wait_daemons(settings: Settings) -> None:
    """Every libvirtd and sshd answers; then the sshds' host keys go into known_hosts."""
    deadline = time.monotonic() + LIBVIRT_WAIT_S
    lab = lab_dir(settings)
    checks: list[tuple[str, Callable[[], tuple[bool, str]]]] = []
    for host in HOSTS:
        checks.append(
            (f"libvirtd of {host.name}", lambda h=host: libvirt_answers(h.uri, h.mgmt_ip))
        )
        checks.append((f"sshd of {host.name}", lambda h=host: ssh.sshd_answers(h.mgmt_ip)))
    checks.append(("sshd of the NAT box", lambda: ssh.sshd_answers(NAT_MGMT_IP)))
    for what, check in checks:
        while True:
            ok, detail = check()
            if ok:
                break
            if time.monotonic() > deadline:
                raise LabError(f"{what} does not answer: {detail}")
            time.sleep(0.1)
    lines = {
        h.mgmt_ip: ssh.host_key_line(h.mgmt_ip, h.directory(lab) / "sshd" / "sshd_config")
        for h in HOSTS
    }
    lines[NAT_MGMT_IP] = ssh.host_key_line(NAT_MGMT_IP, nat_dir(settings) / "sshd" / "sshd_config")
    ssh.trust_host_keys(settings, lines)
