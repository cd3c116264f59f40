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

This module is ``up``, ``down`` and ``status``; the pieces they put together:

    state           the lab's directories and its record of what it made
    wiring          namespaces, the management bridge, the OVS switch, VLAN ports
    daemons         compute hosts, dnsmasq, BMCs: started, awaited, ended
    gateway         the NAT box and the "internet"
    settings_file   the settings pointing Baadal at the lab
    registration    the lab's rows in the database
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.orm import Session

from baadal.config import Settings
from baadal.errors import ConfigError
from baadal.home import open_for_lab
from baadal.lab import bmc, ssh
from baadal.lab.daemons import (
    fix_kvm_permissions,
    kill_all,
    libvirt_answers,
    netns_pids,
    pid_alive,
    start_bmcs,
    start_dhcp,
    start_hosts,
    wait_daemons,
)
from baadal.lab.gateway import start_natbox
from baadal.lab.guest import build_tiny_guest
from baadal.lab.layout import (
    CONTROLLER_MGMT_IP,
    DHCP_NETNS,
    HOSTS,
    INTERNET_IP,
    INTERNET_NETNS,
    MGMT_BRIDGE,
    NAT_MGMT_IP,
    NAT_NETNS,
    NAT_PUBLIC_IP,
    OVS_CTL,
    PREFIX,
    SWITCH_BRIDGE,
    TEMPLATE_DIR,
    VLANS,
)
from baadal.lab.registration import forget_lost_vms, mark_hosts_down, rebuild_dhcp, register
from baadal.lab.settings_file import apply_lab_settings, lab_config_file, remove_lab_config
from baadal.lab.state import State, datastore_dir, dns_dir, lab_dir, locked
from baadal.lab.wiring import link_names, netns_list, ovs_bridges, root_network, succeeds

REQUIRED_TOOLS = (
    "ip", "unshare", "ovs-vsctl", "libvirtd", "virtlogd", "dnsmasq", "qemu-img", "iptables",
    ssh.SSHD, "ssh-keygen",
)  # fmt: skip


@dataclass(frozen=True)
class Part:
    """One piece of the lab and whether it works, for ``lab status``."""

    name: str
    kind: str
    healthy: bool
    detail: str


def _check_searchable(path: Path) -> None:
    """libvirt-qemu (disks, kernels) and dnsmasq's nobody (hosts file) must reach ``path``."""
    for directory in (path, *path.parents):
        if not directory.stat().st_mode & 0o001:
            raise ConfigError(
                f"{directory} is not searchable by other users, so QEMU (libvirt-qemu) and "
                f"dnsmasq (nobody) cannot reach {path}: chmod o+x {directory} or set "
                "BAADAL_HOME to a directory such as /var/lib/baadal"
            )


def status(settings: Settings) -> list[Part]:
    """Every part of the lab and its health (nothing is changed)."""
    lab = lab_dir(settings)
    bridge = settings.network.bridge
    namespaces = set(netns_list())
    links = set(link_names())
    parts = [
        Part("state", "file", (lab / "state.json").is_file(), str(lab / "state.json")),
        Part(MGMT_BRIDGE, "linux bridge", MGMT_BRIDGE in links, f"{CONTROLLER_MGMT_IP}/24"),
    ]
    root_bridges = ovs_bridges()
    parts.append(Part(SWITCH_BRIDGE, "ovs bridge", SWITCH_BRIDGE in root_bridges, "root OVS"))
    for vlan in VLANS:
        port = vlan.controller_port
        parts.append(Part(port, "ovs port", port in links, f"VLAN {vlan.tag} {vlan.controller_ip}"))
    for host in HOSTS:
        ns_ok = host.netns in namespaces
        parts.append(Part(host.netns, "namespace", ns_ok, host.name))
        host_bridges = ovs_bridges(host.ovs_db(lab)) if ns_ok else []
        parts.append(Part(f"{host.name} ovs", "ovs bridge", bridge in host_bridges, bridge))
        ok, detail = libvirt_answers(host.uri, host.mgmt_ip) if ns_ok else (False, "no namespace")
        parts.append(Part(f"{host.name} libvirtd", "libvirtd", ok, f"{host.uri}: {detail}"))
        parts.append(_sshd_part(f"{host.name} sshd", host.mgmt_ip, ns_ok))
    parts.append(Part(DHCP_NETNS, "namespace", DHCP_NETNS in namespaces, "DHCP server"))
    pid = pid_alive(dns_dir(settings) / "dnsmasq.pid", "dnsmasq")
    parts.append(
        Part("dnsmasq", "process", pid is not None, f"pid {pid}" if pid else "not running")
    )
    nat_ok = NAT_NETNS in namespaces
    parts.append(Part(NAT_NETNS, "namespace", nat_ok, f"NAT box {NAT_PUBLIC_IP}"))
    parts.append(_sshd_part("NAT box sshd", NAT_MGMT_IP, nat_ok))
    for host in HOSTS:
        pid = pid_alive(bmc.pid_file(lab, host))
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


def down(settings: Settings, *, db: Callable[[], contextlib.AbstractContextManager[Session]]
         | None = None) -> list[str]:  # fmt: skip
    """Remove everything the lab made (and only that); returns what was removed."""
    with locked(settings):
        removed = _teardown(settings)
        if db is not None:
            with db() as session:
                mark_hosts_down(session)
                removed += [f"VM {name} (its disk was in the lab)" for name in
                            forget_lost_vms(session, settings)]  # fmt: skip
        return removed


def _teardown(settings: Settings) -> list[str]:
    lab = lab_dir(settings)
    state = State(lab / "state.json")
    recorded = {(k, n) for k, n in state.created}
    removed: list[str] = []
    namespaces = [n for n in netns_list() if n.startswith(PREFIX)]
    namespaces += [n for k, n in state.created if k == "netns" and n not in namespaces]
    existing = set(netns_list())
    # every process in a lab namespace: dnsmasq, OVS, virtlogd, libvirtd, QEMU guests
    for ns in namespaces:
        if ns in existing:
            pids = netns_pids(ns)
            kill_all(pids)
            if pids:
                removed.append(f"{len(pids)} process(es) in {ns}")
    for ns in namespaces:
        if ns in existing and succeeds(["ip", "netns", "delete", ns]):
            removed.append(f"namespace {ns}")
    for br in ovs_bridges():
        mine = br.startswith(PREFIX) or ("ovs-bridge", br) in recorded
        if mine and succeeds(["ovs-vsctl", "--timeout=10", "--if-exists", "del-br", br]):
            removed.append(f"ovs bridge {br}")
    for link in link_names():
        mine = link.startswith(PREFIX) or ("link", link) in recorded
        if mine and succeeds(["ip", "link", "delete", link]):
            removed.append(f"link {link}")
    root_ovs_mine = ("root-ovs", "started") in recorded
    if root_ovs_mine and not ovs_bridges() and succeeds([OVS_CTL, "stop"]):
        removed.append("root Open vSwitch (started by the lab)")
    if remove_lab_config(settings):
        removed.append(f"settings file {lab_config_file(settings)}")
    if ssh.forget_host_keys(settings, _ssh_addresses()):
        removed.append(f"lab host keys in {ssh.known_hosts_file(settings)}")
    if lab.exists():
        shutil.rmtree(lab, ignore_errors=True)
        removed.append(f"directory {lab}")
    return removed


def _ssh_addresses() -> set[str]:
    return {NAT_MGMT_IP, *(h.mgmt_ip for h in HOSTS)}


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

    with locked(settings):
        lab = lab_dir(settings)
        state = State(lab / "state.json")
        cleaned: list[str] = []
        if state.complete and healthy(status(settings)):
            step("host keys", lambda: wait_daemons(settings))
            step("settings", lambda: apply_lab_settings(settings))
            step("database rows", lambda: register(settings, db))
            step("DHCP reservations", lambda: rebuild_dhcp(settings, db))
            return UpResult(True, time.monotonic() - start, steps, cleaned)
        step("clean up leftovers", lambda: cleaned.extend(_teardown(settings)))
        try:
            state = State(lab / "state.json")
            step("directories", lambda: _make_dirs(settings))
            step("root switch", lambda: root_network(state))
            step("compute hosts", lambda: start_hosts(settings, state))
            step("DHCP server", lambda: start_dhcp(settings, state))
            step("NAT box and internet", lambda: start_natbox(settings, state))
            step("BMCs", lambda: start_bmcs(settings, state))
            step("tiny guest", lambda: _build_guest(settings))
            step("libvirtd and sshd answer", lambda: wait_daemons(settings))
            step("settings", lambda: apply_lab_settings(settings))
            step("database rows", lambda: register(settings, db))
            step("DHCP reservations", lambda: rebuild_dhcp(settings, db))
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
    open_for_lab(settings.home)
    ssh.prepare_client(lab)
    _check_searchable(datastore_dir(settings))
    fix_kvm_permissions()


def _build_guest(settings: Settings) -> None:
    templates = datastore_dir(settings) / settings.paths.templates_dir.strip("/")
    build_tiny_guest(templates / TEMPLATE_DIR)
