"""The lab: a small multi-host cloud on one machine (``baadal lab up | down | status``).

Layout (names and addresses in :mod:`baadal.lab.layout`)::

    controller (root ns) 10.99.0.1 on Linux bridge bdl-mgmt --veth-- host N, NAT box
    root OVS bridge bdl-sw (the "switch") --veth trunk bdl-tN-- host N's OVS bridge
        internal ports tagged per VLAN: bdl-vT (controller), bdl-dT (dnsmasq in bdl-dhcp),
        bdl-nT (the NAT box's gateway leg in bdl-nat)
    host N = namespace bdl-hN + private mounts: OVS (userspace), virtlogd, libvirtd on
        qemu+tcp://10.99.0.1N/system and sshd (see :mod:`baadal.lab.hostns`)
    NAT box = namespace bdl-nat: sshd on 10.99.0.2, forwarding + masquerade to pub0,
        which is wired to namespace bdl-inet (the "internet", 10.99.200.1)
    <home>/lab/datastore: the shared datastore (the "filer"), same path for every host

Everything made is recorded in ``<home>/lab/state.json`` *before* it is made, so ``down``
(and ``up`` after a crash) removes exactly that; names with the lab's reserved prefix are
swept too, for a crash before the record was written.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from baadal import address_pools
from baadal import constants as C
from baadal.config import Settings
from baadal.db.models import (
    VM,
    Datastore,
    Host,
    PrivateIpPool,
    PublicIpPool,
    SecurityDomain,
    Template,
    Vlan,
)
from baadal.drivers.remote import run_local
from baadal.errors import BaadalError, ConfigError, ConflictError, NotFoundError
from baadal.filelock import flocked
from baadal.files import write_atomically
from baadal.lab import bmc, ssh
from baadal.lab.guest import build_tiny_guest
from baadal.lab.hostns import POWEROFF_COMMAND, LabHost, mgmt_mac, prepare_host_dir
from baadal.lab.layout import (
    BMC_MGMT_LINK,
    BMC_NETNS,
    CONTROLLER_MGMT_IP,
    DATASTORE_NAME,
    DHCP_NETNS,
    HOSTS,
    INTERNET_IP,
    INTERNET_NETNS,
    LIBVIRT_PORT,
    MGMT_BRIDGE,
    MGMT_BROADCAST,
    MGMT_PREFIX,
    NAT_MGMT_IP,
    NAT_MGMT_LINK,
    NAT_NETNS,
    NAT_PUBLIC_IF,
    NAT_PUBLIC_IP,
    OVS_CTL,
    PREFIX,
    PUBLIC_CIDR,
    PUBLIC_POOL,
    SWITCH_BRIDGE,
    TEMPLATE_DIR,
    TEMPLATE_NAME,
    VLANS,
    VNC_IP,
    LabVlan,
    pool_mac,
)
from baadal.net import dhcp
from baadal.services import inventory
from baadal.services.policy import SYSTEM
from baadal.vm import storage
from baadal.vm.lifecycle import clean_up_database_after_vm_deletion
from baadal.vm.network import dhcp_entries_from_db

CMD_TIMEOUT_S = 60.0
LIBVIRT_WAIT_S = 90.0
BMC_START_S = 20.0
REQUIRED_TOOLS = (
    "ip", "unshare", "ovs-vsctl", "libvirtd", "virtlogd", "dnsmasq", "qemu-img", "iptables",
    ssh.SSHD, "ssh-keygen",
)  # fmt: skip
#: marks the NAT box rules the lab itself adds (Baadal's own rules carry another tag)
LAB_RULE_TAG = "baadal-lab"


class LabError(BaadalError):
    """The lab could not be built or taken down."""


@dataclass(frozen=True)
class Part:
    """One piece of the lab and whether it works, for ``lab status``."""

    name: str
    kind: str
    healthy: bool
    detail: str


def lab_dir(settings: Settings) -> Path:
    return settings.home / "lab"


def datastore_dir(settings: Settings) -> Path:
    return lab_dir(settings) / "datastore"


def dns_dir(settings: Settings) -> Path:
    return lab_dir(settings) / "dns"


def hosts_file(settings: Settings) -> Path:
    return dns_dir(settings) / "hosts"


# --- state ---------------------------------------------------------------------------


class State:
    """What the lab made, in order; saved after every change so a crash loses nothing."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.created: list[list[str]] = []
        self.complete = False
        if path.is_file():
            with contextlib.suppress(ValueError):
                data = json.loads(path.read_text())
                self.created = [list(x) for x in data.get("created", [])]
                self.complete = bool(data.get("complete", False))

    def record(self, kind: str, name: str) -> None:
        if [kind, name] not in self.created:
            self.created.append([kind, name])
            self.save()

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"created": self.created, "complete": self.complete}, indent=1))
        tmp.rename(self.path)


@contextlib.contextmanager
def _locked(settings: Settings) -> Iterator[None]:
    """One lab operation at a time; the lock is on the home directory so no file is left."""
    settings.home.mkdir(parents=True, exist_ok=True)
    with flocked(settings.home):
        yield


# --- small command helpers -----------------------------------------------------------


def _run(argv: list[str], timeout: float = CMD_TIMEOUT_S) -> str:
    return run_local(argv, timeout=timeout).stdout


def _ok(argv: list[str], timeout: float = CMD_TIMEOUT_S) -> bool:
    try:
        return run_local(argv, timeout=timeout, check=False).ok
    except BaadalError:
        return False


def _netns_list() -> list[str]:
    out = run_local(["ip", "netns", "list"], check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _links() -> list[str]:
    out = run_local(["ip", "-o", "link", "show"], check=False).stdout
    names = []
    for line in out.splitlines():
        parts = line.split(":", 2)
        if len(parts) >= 2:
            names.append(parts[1].strip().split("@", 1)[0])
    return names


def _ovs_bridges(db: str | None = None) -> list[str]:
    argv = ["ovs-vsctl", "--timeout=5"] + ([f"--db={db}"] if db else []) + ["list-br"]
    result = run_local(argv, check=False, timeout=10)
    return result.stdout.split() if result.ok else []


def _pid_alive(pid_file: Path, comm: str | None = None) -> int | None:
    """The pid in ``pid_file`` if that process lives (and is called ``comm``)."""
    try:
        pid = int(pid_file.read_text().strip())
        name = Path(f"/proc/{pid}/comm").read_text().strip()
    except (OSError, ValueError):
        return None
    if (comm is not None and name != comm[:15]) or not _running(pid):
        return None
    return pid


def _running(pid: int) -> bool:
    """Alive and not a zombie (daemons are re-parented to a PID 1 that may never reap)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _netns_pids(netns: str) -> list[int]:
    out = run_local(["ip", "netns", "pids", netns], check=False).stdout
    return [int(p) for p in out.split() if p.isdigit()]


def _kill_all(pids: list[int], grace_s: float = 5.0) -> None:
    """TERM, then KILL what is left after ``grace_s``."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if not any(_running(p) for p in pids):
            return
        time.sleep(0.1)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _libvirt_answers(uri: str, address: str, timeout: float = 3.0) -> tuple[bool, str]:
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


def _check_searchable(path: Path) -> None:
    """libvirt-qemu (disks, kernels) and dnsmasq's nobody (hosts file) must reach ``path``."""
    for directory in (path, *path.parents):
        if not directory.stat().st_mode & 0o001:
            raise ConfigError(
                f"{directory} is not searchable by other users, so QEMU (libvirt-qemu) and "
                f"dnsmasq (nobody) cannot reach {path}: chmod o+x {directory} or set "
                "BAADAL_HOME to a directory such as /var/lib/baadal"
            )


# --- status --------------------------------------------------------------------------


def status(settings: Settings) -> list[Part]:
    """Every part of the lab and its health (nothing is changed)."""
    lab = lab_dir(settings)
    bridge = settings.network.bridge
    namespaces = set(_netns_list())
    links = set(_links())
    parts = [
        Part("state", "file", (lab / "state.json").is_file(), str(lab / "state.json")),
        Part(MGMT_BRIDGE, "linux bridge", MGMT_BRIDGE in links, f"{CONTROLLER_MGMT_IP}/24"),
    ]
    root_bridges = _ovs_bridges()
    parts.append(Part(SWITCH_BRIDGE, "ovs bridge", SWITCH_BRIDGE in root_bridges, "root OVS"))
    for vlan in VLANS:
        port = vlan.controller_port
        parts.append(Part(port, "ovs port", port in links, f"VLAN {vlan.tag} {vlan.controller_ip}"))
    for host in HOSTS:
        ns_ok = host.netns in namespaces
        parts.append(Part(host.netns, "namespace", ns_ok, host.name))
        host_bridges = _ovs_bridges(host.ovs_db(lab)) if ns_ok else []
        parts.append(Part(f"{host.name} ovs", "ovs bridge", bridge in host_bridges, bridge))
        ok, detail = _libvirt_answers(host.uri, host.mgmt_ip) if ns_ok else (False, "no namespace")
        parts.append(Part(f"{host.name} libvirtd", "libvirtd", ok, f"{host.uri}: {detail}"))
        parts.append(_sshd_part(f"{host.name} sshd", host.mgmt_ip, ns_ok))
    parts.append(Part(DHCP_NETNS, "namespace", DHCP_NETNS in namespaces, "DHCP server"))
    pid = _pid_alive(dns_dir(settings) / "dnsmasq.pid", "dnsmasq")
    parts.append(
        Part("dnsmasq", "process", pid is not None, f"pid {pid}" if pid else "not running")
    )
    nat_ok = NAT_NETNS in namespaces
    parts.append(Part(NAT_NETNS, "namespace", nat_ok, f"NAT box {NAT_PUBLIC_IP}"))
    parts.append(_sshd_part("NAT box sshd", NAT_MGMT_IP, nat_ok))
    for host in HOSTS:
        pid = _pid_alive(bmc.pid_file(lab, host))
        detail = f"IPMI on {host.bmc_ip}, pid {pid}" if pid else "not running"
        parts.append(Part(f"{host.name} BMC", "process", pid is not None, detail))
    inet_ok = INTERNET_NETNS in namespaces
    parts.append(Part(INTERNET_NETNS, "namespace", inet_ok, f"internet {INTERNET_IP}"))
    ds = datastore_dir(settings)
    parts.append(Part("datastore", "directory", ds.is_dir(), str(ds)))
    return parts


def _sshd_part(name: str, address: str, namespace_up: bool) -> Part:
    ok, detail = ssh.sshd_answers(address) if namespace_up else (False, "no namespace")
    return Part(name, "sshd", ok, f"{address}: {detail}")


def healthy(parts: list[Part]) -> bool:
    return all(p.healthy for p in parts)


# --- down ----------------------------------------------------------------------------


def down(settings: Settings, *, db: Callable[[], contextlib.AbstractContextManager[Session]]
         | None = None) -> list[str]:  # fmt: skip
    """Remove everything the lab made (and only that); returns what was removed."""
    with _locked(settings):
        removed = _teardown(settings)
        if db is not None:
            with db() as session:
                _mark_hosts_down(session)
                removed += [f"VM {name} (its disk was in the lab)" for name in
                            forget_lost_vms(session, settings)]  # fmt: skip
        return removed


def _teardown(settings: Settings) -> list[str]:
    lab = lab_dir(settings)
    state = State(lab / "state.json")
    recorded = {(k, n) for k, n in state.created}
    removed: list[str] = []
    namespaces = [n for n in _netns_list() if n.startswith(PREFIX)]
    namespaces += [n for k, n in state.created if k == "netns" and n not in namespaces]
    existing = set(_netns_list())
    # every process in a lab namespace: dnsmasq, OVS, virtlogd, libvirtd, QEMU guests
    for ns in namespaces:
        if ns in existing:
            pids = _netns_pids(ns)
            _kill_all(pids)
            if pids:
                removed.append(f"{len(pids)} process(es) in {ns}")
    for ns in namespaces:
        if ns in existing and _ok(["ip", "netns", "delete", ns]):
            removed.append(f"namespace {ns}")
    for br in _ovs_bridges():
        mine = br.startswith(PREFIX) or ("ovs-bridge", br) in recorded
        if mine and _ok(["ovs-vsctl", "--timeout=10", "--if-exists", "del-br", br]):
            removed.append(f"ovs bridge {br}")
    for link in _links():
        mine = link.startswith(PREFIX) or ("link", link) in recorded
        if mine and _ok(["ip", "link", "delete", link]):
            removed.append(f"link {link}")
    root_ovs_mine = ("root-ovs", "started") in recorded
    if root_ovs_mine and not _ovs_bridges() and _ok([OVS_CTL, "stop"]):
        removed.append("root Open vSwitch (started by the lab)")
    if _remove_lab_config(settings):
        removed.append(f"settings file {lab_config_file(settings)}")
    if ssh.forget_host_keys(settings, _ssh_addresses()):
        removed.append(f"lab host keys in {ssh.known_hosts_file(settings)}")
    if lab.exists():
        shutil.rmtree(lab, ignore_errors=True)
        removed.append(f"directory {lab}")
    return removed


def _ssh_addresses() -> set[str]:
    return {NAT_MGMT_IP, *(h.mgmt_ip for h in HOSTS)}


def _mark_hosts_down(session: Session) -> None:
    for host in HOSTS:
        row = session.scalar(select(Host).where(Host.host_name == host.name))
        if row is not None:
            row.status = int(C.HostStatus.DOWN)
    session.flush()


def forget_lost_vms(session: Session, settings: Settings) -> list[str]:
    """VMs whose disk was on the lab's datastore and is gone with it (``lab down``, or a
    rebuild after a crash): their rows, addresses and ports go, as for a deleted VM, so
    the next ``lab up`` and demo start clean. Their event log stays."""
    ds = session.scalar(select(Datastore).where(Datastore.ds_name == DATASTORE_NAME))
    if ds is None:
        return []
    gone = []
    for vm in session.scalars(select(VM).where(VM.datastore_id == ds.id).order_by(VM.id)):
        if storage.get_vm_image_location(settings, ds, vm.vm_identity).present:
            continue
        vm.host_id = None  # its host's domains went with the lab
        clean_up_database_after_vm_deletion(session, settings, vm)
        gone.append(vm.vm_name)
    session.flush()
    return gone


# --- up ------------------------------------------------------------------------------


@dataclass
class UpResult:
    already_up: bool
    seconds: float
    steps: list[tuple[str, float]]
    cleaned: list[str]


def up(
    settings: Settings,
    db: Callable[[], contextlib.AbstractContextManager[Session]],
    *,
    progress: Callable[[str], None] | None = None,
) -> UpResult:
    """Build the lab (or leave a healthy one as it is) and register it in the database."""
    if os.geteuid() != 0:
        raise ConfigError("the lab needs root (namespaces, OVS, libvirtd)")
    missing = [t for t in REQUIRED_TOOLS if shutil.which(t) is None]
    if missing or not Path(OVS_CTL).exists():
        raise ConfigError(
            f"missing {', '.join(missing) or OVS_CTL}: apt-get install libvirt-daemon-system "
            "qemu-system-x86 qemu-utils openvswitch-switch dnsmasq iproute2 busybox-static"
        )
    say = progress or (lambda _msg: None)
    start = time.monotonic()
    steps: list[tuple[str, float]] = []

    def step(name: str, func: Callable[[], object]) -> None:
        say(name)
        t0 = time.monotonic()
        func()
        steps.append((name, time.monotonic() - t0))

    with _locked(settings):
        lab = lab_dir(settings)
        state = State(lab / "state.json")
        cleaned: list[str] = []
        if state.complete and healthy(status(settings)):
            step("host keys", lambda: _wait_daemons(settings))
            step("settings", lambda: apply_lab_settings(settings))
            step("database rows", lambda: _register(settings, db))
            step("DHCP reservations", lambda: _rebuild_dhcp(settings, db))
            return UpResult(True, time.monotonic() - start, steps, cleaned)
        step("clean up leftovers", lambda: cleaned.extend(_teardown(settings)))
        try:
            state = State(lab / "state.json")
            step("directories", lambda: _make_dirs(settings))
            step("root switch", lambda: _root_network(state))
            step("compute hosts", lambda: _start_hosts(settings, state))
            step("DHCP server", lambda: _start_dhcp(settings, state))
            step("NAT box and internet", lambda: _start_natbox(settings, state))
            step("BMCs", lambda: _start_bmcs(settings, state))
            step("tiny guest", lambda: _build_guest(settings))
            step("libvirtd and sshd answer", lambda: _wait_daemons(settings))
            step("settings", lambda: apply_lab_settings(settings))
            step("database rows", lambda: _register(settings, db))
            step("DHCP reservations", lambda: _rebuild_dhcp(settings, db))
        except BaseException:
            state.save()
            raise
        state.complete = True
        state.save()
        return UpResult(False, time.monotonic() - start, steps, cleaned)


def _make_dirs(settings: Settings) -> None:
    lab = lab_dir(settings)
    for directory in (lab, datastore_dir(settings), dns_dir(settings), lab / "hosts"):
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o755)
    ssh.prepare_client(lab)
    _check_searchable(datastore_dir(settings))
    fix_kvm_permissions()


def _root_network(state: State) -> None:
    """The controller's side: management bridge, the OVS switch and a port per VLAN."""
    if not _ok(["ovs-vsctl", "--timeout=5", "show"]):
        state.record("root-ovs", "started")
        _run([OVS_CTL, "start", "--system-id=random"])
    state.record("link", MGMT_BRIDGE)
    if not _ok(["ip", "link", "add", MGMT_BRIDGE, "type", "bridge"]):
        raise LabError(f"cannot create the Linux bridge {MGMT_BRIDGE} (no bridge support?)")
    _run(["ip", "addr", "add", f"{CONTROLLER_MGMT_IP}/{MGMT_PREFIX}", "dev", MGMT_BRIDGE])
    _run(["ip", "link", "set", MGMT_BRIDGE, "up"])
    state.record("ovs-bridge", SWITCH_BRIDGE)
    _run(["ovs-vsctl", "--timeout=10", "add-br", SWITCH_BRIDGE, "--",
          "set", "bridge", SWITCH_BRIDGE, "datapath_type=netdev"])  # fmt: skip
    for vlan in VLANS:
        _vlan_port(state, vlan, vlan.controller_port, vlan.controller_ip)


def _add_netns(state: State, netns: str) -> None:
    state.record("netns", netns)
    _run(["ip", "netns", "add", netns])
    _run(["ip", "-n", netns, "link", "set", "lo", "up"])


def _mgmt_leg(state: State, netns: str, link: str, address: str) -> None:
    """A veth from the management bridge to ``mgmt0`` in ``netns`` with ``address``."""
    state.record("link", link)
    _run(["ip", "link", "add", link, "type", "veth", "peer", "name", "mgmt0", "netns", netns])
    _run(["ip", "link", "set", link, "master", MGMT_BRIDGE, "up"])
    _run(["ip", "-n", netns, "addr", "add", f"{address}/{MGMT_PREFIX}", "dev", "mgmt0"])
    _run(["ip", "-n", netns, "link", "set", "mgmt0", "up"])


def _vlan_port(
    state: State, vlan: LabVlan, port: str, address: str, netns: str | None = None
) -> None:
    """An OVS internal port on ``vlan`` with ``address``, moved into ``netns`` if given."""
    state.record("link", port)
    _run(["ovs-vsctl", "--timeout=10", "add-port", SWITCH_BRIDGE, port, f"tag={vlan.tag}",
          "--", "set", "interface", port, "type=internal"])  # fmt: skip
    _wait_link(port)
    ip = ["ip"]
    if netns is not None:
        _run(["ip", "link", "set", port, "netns", netns])
        ip = ["ip", "-n", netns]
    _run([*ip, "addr", "add", f"{address}/{vlan.network.prefixlen}", "dev", port])
    _run([*ip, "link", "set", port, "up"])


def _wait_link(name: str, netns: str | None = None, timeout: float = 10.0) -> None:
    """OVS creates internal ports asynchronously; wait until the kernel has it."""
    argv = ["ip"] + (["-n", netns] if netns else []) + ["link", "show", name]
    deadline = time.monotonic() + timeout
    while not _ok(argv):
        if time.monotonic() > deadline:
            raise LabError(f"interface {name} did not appear")
        time.sleep(0.05)


def _start_hosts(settings: Settings, state: State) -> None:
    lab = lab_dir(settings)
    for host in HOSTS:
        _add_netns(state, host.netns)
        _mgmt_leg(state, host.netns, host.mgmt_link, host.mgmt_ip)
        state.record("link", host.trunk_link)
        _run(["ip", "link", "add", host.trunk_link, "type", "veth",
              "peer", "name", "trunk0", "netns", host.netns])  # fmt: skip
        _run(["ip", "link", "set", host.trunk_link, "up"])
        _run(["ip", "-n", host.netns, "link", "set", "trunk0", "up"])
        _run(["ovs-vsctl", "--timeout=10", "add-port", SWITCH_BRIDGE, host.trunk_link])

    def start(host: LabHost) -> None:
        script = prepare_host_dir(host, lab)
        _run(
            ["ip", "netns", "exec", host.netns, "unshare", "--mount", "--propagation",
             "private", "sh", str(script), str(host.directory(lab)),
             settings.network.bridge, "trunk0"],
            timeout=120,
        )  # fmt: skip

    with ThreadPoolExecutor(len(HOSTS)) as pool:
        list(pool.map(start, HOSTS))


def _start_dhcp(settings: Settings, state: State) -> None:
    """One dnsmasq in its own namespace with a leg on every VLAN, serving the hosts file;
    each VLAN's router option points at the NAT box."""
    dns = dns_dir(settings)
    _add_netns(state, DHCP_NETNS)
    argv = ["ip", "netns", "exec", DHCP_NETNS, "dnsmasq", "--conf-file=/dev/null",
            "--no-resolv", "--no-hosts", "--port=0", "--bind-interfaces",
            "--except-interface=lo"]  # fmt: skip
    for vlan in VLANS:
        _vlan_port(state, vlan, vlan.dhcp_port, vlan.dhcp_ip, DHCP_NETNS)
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
    _run(argv)


def nat_dir(settings: Settings) -> Path:
    return lab_dir(settings) / "nat"


def _start_natbox(settings: Settings, state: State) -> None:
    """The NAT box: gateway leg on every VLAN, public leg to the "internet" namespace,
    forwarding with masquerade, no routing between VLANs (security domains), and sshd on
    the management network so Baadal configures it like a real NAT machine."""
    _add_netns(state, NAT_NETNS)
    _mgmt_leg(state, NAT_NETNS, NAT_MGMT_LINK, NAT_MGMT_IP)
    for vlan in VLANS:
        _vlan_port(state, vlan, vlan.nat_port, vlan.gateway_ip, NAT_NETNS)
    _add_netns(state, INTERNET_NETNS)
    prefix = ipaddress.IPv4Network(PUBLIC_CIDR).prefixlen
    nat = ["ip", "-n", NAT_NETNS]
    _run([*nat, "link", "add", NAT_PUBLIC_IF, "type", "veth",
          "peer", "name", "wan0", "netns", INTERNET_NETNS])  # fmt: skip
    _run([*nat, "addr", "add", f"{NAT_PUBLIC_IP}/{prefix}", "dev", NAT_PUBLIC_IF])
    _run([*nat, "link", "set", NAT_PUBLIC_IF, "up"])
    _run(["ip", "-n", INTERNET_NETNS, "addr", "add", f"{INTERNET_IP}/{prefix}", "dev", "wan0"])
    _run(["ip", "-n", INTERNET_NETNS, "link", "set", "wan0", "up"])
    _run([*nat, "route", "add", "default", "via", INTERNET_IP])
    in_nat = ["ip", "netns", "exec", NAT_NETNS]
    _run([*in_nat, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])
    tag = ["-m", "comment", "--comment", LAB_RULE_TAG]
    private = str(ipaddress.IPv4Network("10.99.0.0/16"))
    _run([*in_nat, "iptables", "-t", "nat", "-A", "POSTROUTING", "-s", private,
          "-o", NAT_PUBLIC_IF, "-j", "MASQUERADE", *tag])  # fmt: skip
    _run([*in_nat, "iptables", "-A", "FORWARD", "-i", f"{PREFIX}n+", "-o", f"{PREFIX}n+",
          "-j", "DROP", *tag])  # fmt: skip
    config = ssh.prepare_sshd(
        nat_dir(settings) / "sshd", NAT_MGMT_IP, str(nat_dir(settings) / "sshd.pid"),
        lab_dir(settings),
    )  # fmt: skip
    _run([*in_nat, *ssh.sshd_argv(config)])


def _start_bmcs(settings: Settings, state: State) -> None:
    """The hosts' BMCs: a process per host answering IPMI on its BMC address, with a
    fresh password in a root-only file."""
    _add_netns(state, BMC_NETNS)
    first, *others = HOSTS
    _mgmt_leg(state, BMC_NETNS, BMC_MGMT_LINK, first.bmc_ip)
    for host in others:
        _run(["ip", "-n", BMC_NETNS, "addr", "add", f"{host.bmc_ip}/{MGMT_PREFIX}",
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


def _build_guest(settings: Settings) -> None:
    templates = datastore_dir(settings) / settings.paths.templates_dir.strip("/")
    build_tiny_guest(templates / TEMPLATE_DIR)


def _wait_daemons(settings: Settings) -> None:
    """Every libvirtd and sshd answers; then the sshds' host keys go into known_hosts."""
    deadline = time.monotonic() + LIBVIRT_WAIT_S
    lab = lab_dir(settings)
    checks: list[tuple[str, Callable[[], tuple[bool, str]]]] = []
    for host in HOSTS:
        checks.append(
            (f"libvirtd of {host.name}", lambda h=host: _libvirt_answers(h.uri, h.mgmt_ip))
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


# --- settings ------------------------------------------------------------------------

LAB_CONFIG_MARK = "# written by `baadal lab up` (removed by `baadal lab down`)"


def lab_settings(settings: Settings) -> dict[str, dict[str, str | list[str]]]:
    """How Baadal reaches the lab's DHCP server and NAT box, as settings sections."""
    dns = dns_dir(settings)
    return {
        "dhcp": {
            "backend": C.DhcpBackend.DNSMASQ.value,
            "dhcp_ip": "",
            "hosts_file": str(hosts_file(settings)),
            "pid_file": str(dns / "dnsmasq.pid"),
        },
        "nat": {
            "nat_type": C.NatType.SOFTWARE.value,
            "nat_ip": NAT_MGMT_IP,
            "nat_user": "root",
            "nat_ssh_key": str(ssh.client_key(lab_dir(settings))),
            "public_interface": NAT_PUBLIC_IF,
            "vnc_ip": VNC_IP,
        },
        # a lab host "powers off" by stopping its daemons and waits for a real WOL packet;
        # its BMC (IPMI) does the same on request
        "power": {
            "poweroff_command": list(POWEROFF_COMMAND),
            "wol_broadcast": MGMT_BROADCAST,
            "ipmi_user": bmc.BMC_USER,
            "ipmi_password_file": str(bmc.password_file(lab_dir(settings))),
        },
    }


def lab_config_file(settings: Settings) -> Path:
    return settings.home / "baadal.toml"


def apply_lab_settings(settings: Settings) -> None:
    """Point this process's settings at the lab, and write them to the home's settings
    file so every later ``baadal`` command (and worker) uses them too. A settings file
    the lab did not write, or an explicit BAADAL_CONFIG, is left alone."""
    sections = lab_settings(settings)
    for section, values in sections.items():
        target = getattr(settings, section)
        for key, value in values.items():
            setattr(target, key, type(getattr(target, key))(value))
    path = lab_config_file(settings)
    if os.environ.get("BAADAL_CONFIG") or (path.exists() and not _lab_wrote(path)):
        return
    lines = [LAB_CONFIG_MARK]
    for section, values in sections.items():
        lines += ["", f"[{section}]"] + [f"{k} = {json.dumps(v)}" for k, v in values.items()]
    write_atomically(path, "\n".join(lines) + "\n")


def _lab_wrote(path: Path) -> bool:
    with contextlib.suppress(OSError):
        return path.read_text().startswith(LAB_CONFIG_MARK)
    return False


def _remove_lab_config(settings: Settings) -> bool:
    path = lab_config_file(settings)
    if path.exists() and _lab_wrote(path):
        path.unlink()
        return True
    return False


# --- database ------------------------------------------------------------------------


def _register(
    settings: Settings, db: Callable[[], contextlib.AbstractContextManager[Session]]
) -> None:
    """Hosts, datastore, template, VLAN 10 with its pool and security domain 'lab'."""
    with db() as session:
        register_rows(session, settings)


def register_rows(session: Session, settings: Settings) -> None:
    """Idempotent: existing rows are kept (hosts are set UP), missing ones are added;
    VMs whose disks did not survive a rebuild are forgotten."""
    ds_path = datastore_dir(settings)
    try:
        ds = inventory.get_datastore(session, SYSTEM, DATASTORE_NAME)
        if ds.system_mount_point != str(ds_path):
            raise ConflictError(
                f"datastore {DATASTORE_NAME!r} already exists at {ds.system_mount_point}"
            )
        inventory.ensure_datastore_layout(settings, ds_path)
    except NotFoundError:
        ds = inventory.add_datastore(
            session, SYSTEM, name=DATASTORE_NAME, mount_point=str(ds_path), capacity_gb=100,
            settings=settings,
        )  # fmt: skip
    session.flush()
    forget_lost_vms(session, settings)
    if session.scalar(select(Template).where(Template.name == TEMPLATE_NAME)) is None:
        guest = build_tiny_guest(inventory.templates_dir(settings, ds) / TEMPLATE_DIR)
        inventory.add_template(
            session, SYSTEM, name=TEMPLATE_NAME, datastore=ds.id,
            hdfile=f"{TEMPLATE_DIR}/tiny-disk.qcow2", os_version=guest.kernel_version,
            hdd_gb=1, os="Linux", os_name="Others",
            boot_kernel=f"{TEMPLATE_DIR}/vmlinuz", boot_initrd=f"{TEMPLATE_DIR}/tiny-initrd.gz",
            boot_cmdline=guest.cmdline, settings=settings,
        )  # fmt: skip
    cpus = os.cpu_count() or 1
    ram_gb = max(1, _total_ram_gb() // len(HOSTS))
    key = str(ssh.client_key(lab_dir(settings)))
    for host in HOSTS:
        row = session.scalar(select(Host).where(Host.host_name == host.name))
        if row is None:
            row = inventory.add_host(
                session, SYSTEM, name=host.name, address=host.mgmt_ip, cpus=cpus, ram_gb=ram_gb,
                hdd_gb=100, libvirt_uri=host.uri, host_type=C.HostType.VIRTUAL,
                category="lab", status=C.HostStatus.UP,
            )  # fmt: skip
        row.status = int(C.HostStatus.UP)
        row.ssh_user, row.ssh_port, row.ssh_key_ref = "root", 22, key
        row.mac_addr = mgmt_mac(host)  # for Wake-on-LAN
        row.bmc_address = host.bmc_ip  # for IPMI
    for vlan in VLANS:
        _register_vlan(session, vlan)
    have = set(session.scalars(select(PublicIpPool.public_ip)))
    first, last = (ipaddress.IPv4Address(a) for a in PUBLIC_POOL)
    for ip in range(int(first), int(last) + 1):
        if str(ipaddress.IPv4Address(ip)) not in have:
            address_pools.add_public_ips(
                session, str(ipaddress.IPv4Address(ip)), str(ipaddress.IPv4Address(ip))
            )
    session.flush()


def _register_vlan(session: Session, lab_vlan: LabVlan) -> None:
    """The VLAN, its pool (fixed MACs) and its security domain; missing pieces only."""
    vlan = session.scalar(select(Vlan).where(Vlan.vlan_tag == lab_vlan.tag))
    if vlan is None:
        vlan = address_pools.create_vlan(
            session, lab_vlan.name, lab_vlan.tag, str(lab_vlan.network)
        )
    elif ipaddress.IPv4Network(vlan.vlan_addr, strict=False) != lab_vlan.network:
        raise ConflictError(f"VLAN {lab_vlan.tag} exists with network {vlan.vlan_addr}")
    have = set(
        session.scalars(select(PrivateIpPool.private_ip).where(PrivateIpPool.vlan_id == vlan.id))
    )
    first, last = (ipaddress.IPv4Address(a) for a in lab_vlan.pool)
    wanted = [str(ipaddress.IPv4Address(i)) for i in range(int(first), int(last) + 1)]
    missing = [ip for ip in wanted if ip not in have]
    if len(missing) == len(wanted):
        address_pools.add_private_ips(
            session, vlan.id, *lab_vlan.pool, [pool_mac(ip) for ip in wanted]
        )
    else:
        for ip in missing:
            address_pools.add_private_ips(session, vlan.id, ip, ip, [pool_mac(ip)])
    domain = session.scalar(select(SecurityDomain).where(SecurityDomain.vlan_id == vlan.id))
    if domain is None:
        session.add(SecurityDomain(name=lab_vlan.domain, vlan_id=vlan.id))
    elif domain.name != lab_vlan.domain:
        raise ConflictError(
            f"VLAN {vlan.name!r} already belongs to security domain {domain.name!r}"
        )
    session.flush()


def _total_ram_gb() -> int:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // (1024 * 1024)
    return 1


def _rebuild_dhcp(
    settings: Settings, db: Callable[[], contextlib.AbstractContextManager[Session]]
) -> None:
    """The reservations of the VMs already in the database (after a rebuilt lab)."""
    with db() as session:
        entries = dhcp_entries_from_db(session)
    dhcp.rebuild_dhcp_entries(settings, entries)
