"""One lab compute host: a network + mount namespace with its own OVS, virtlogd, libvirtd
and sshd.

The namespace sees private bind mounts of libvirt's and OVS's state directories, all kept
under the host's directory in the lab, so two libvirtds never share a socket, a domain or a
host UUID. ``/run`` is a bind mount of ``<host dir>/run`` too: the daemons' pid files and
OVS's database socket are then reachable from the controller, which is how ``lab status``
and ``lab down`` find them. The start script is a fixed file; its inputs are arguments.

A lab host can be powered off and woken for real: ``/run/baadal-lab-boot`` starts its
daemons (at ``lab up`` and on wake-up), ``/run/baadal-lab-poweroff`` (Baadal's
``[power] poweroff_command`` over SSH) kills them all and leaves only a wake-on-LAN
listener in the host's namespaces, which boots the host when a magic packet for its
``mgmt0`` MAC arrives on UDP port 9. ``lab down`` kills that listener with the rest of
the namespace.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from baadal.drivers.remote import run_local
from baadal.lab.ssh import prepare_sshd

#: runs as ``ip netns exec NS unshare --mount --propagation private sh start-host.sh ...``
START_SCRIPT = r"""#!/bin/sh
# Start one Baadal lab compute host inside its namespaces (written by baadal.lab.hostns).
# Arguments: HOST_DIR BRIDGE TRUNK_INTERFACE
set -eu
H="$1"
mount --bind "$H/run" /run
printf '%s\n' "$1" "$2" "$3" >/run/baadal-lab-host.args
mount --bind "$H/var-lib-libvirt" /var/lib/libvirt
mount --bind "$H/etc-libvirt" /etc/libvirt
mount --bind "$H/var-log-libvirt" /var/log/libvirt
mount --bind "$H/var-cache-libvirt" /var/cache/libvirt
mount --bind "$H/etc-openvswitch" /etc/openvswitch
mount --bind "$H/var-log-openvswitch" /var/log/openvswitch
sh /run/baadal-lab-boot
"""

#: the host's "power on": its daemons; run by start-host.sh and by the WOL listener
BOOT_SCRIPT = r"""#!/bin/sh
# Boot a Baadal lab host's daemons (written by baadal.lab.hostns); runs in its namespaces.
set -eu
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
{ read -r H; read -r BR; read -r TRUNK; } </run/baadal-lab-host.args
echo 0 >/proc/sys/net/ipv4/icmp_echo_ignore_all
mkdir -p /run/lock /run/libvirt /run/openvswitch
/usr/share/openvswitch/scripts/ovs-ctl start --system-id=random >>"$H/ovs-ctl.log" 2>&1
ovs-vsctl --may-exist add-br "$BR" -- set bridge "$BR" datapath_type=netdev
ovs-vsctl --may-exist add-port "$BR" "$TRUNK"
virtlogd -d
libvirtd --listen -d
mkdir -p /run/sshd
/usr/sbin/sshd -f "$H/sshd/sshd_config" -E "$H/sshd/sshd.log"
"""

#: the host's "power off", run over SSH: returns at once, then (detached from the SSH
#: session) stops everything of this host the way a power cut would, stops answering
#: ping, and leaves only the wake-on-LAN listener ("the NIC") running
POWEROFF_SCRIPT = r"""#!/bin/sh
# Power off a Baadal lab host (written by baadal.lab.hostns); runs in its namespaces.
set -u
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
{ read -r H; read -r BR; read -r TRUNK; } </run/baadal-lab-host.args
if [ "${1:-}" != --detached ]; then
    setsid nohup sh "$0" --detached </dev/null >>"$H/power.log" 2>&1 &
    exit 0
fi
echo "$(date '+%F %T') power off"
sleep 1  # let the SSH command that started us report its exit status

alive() {  # alive PID: running and not a zombie (PID 1 may never reap daemons)
    state=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -c1)
    [ -n "$state" ] && [ "$state" != Z ]
}

stop() {  # stop PID_FILE SIGNAL: signal the pid in the file, wait up to 10 s, then kill
    pid=$(cat "$1" 2>/dev/null) || return 0
    [ -n "$pid" ] && alive "$pid" || return 0
    kill "-$2" "$pid" 2>/dev/null || true
    i=0
    while alive "$pid" && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
    kill -KILL "$pid" 2>/dev/null || true
}

for f in /run/libvirt/qemu/*.pid; do stop "$f" KILL; done
stop /run/libvirtd.pid TERM
stop /run/virtlogd.pid TERM
/usr/share/openvswitch/scripts/ovs-ctl stop >>"$H/ovs-ctl.log" 2>&1 || true
stop /run/sshd.pid TERM
# what is left in this host's network namespace (SSH sessions, helpers) dies too
me=$(readlink /proc/$$/ns/net)
for d in /proc/[0-9]*; do
    pid=${d#/proc/}
    [ "$pid" = $$ ] && continue
    [ "$(readlink "$d/ns/net" 2>/dev/null)" = "$me" ] && kill -KILL "$pid" 2>/dev/null
done
rm -rf /run/libvirt/*  # /run is a tmpfs on a real machine: its state does not survive
echo 1 >/proc/sys/net/ipv4/icmp_echo_ignore_all
echo "$(date '+%F %T') off; waiting for a wake-on-LAN packet"
exec python3 /run/baadal-lab-wol.py
"""

#: "the NIC" of a powered-off lab host: waits for a magic packet for its mgmt0 MAC on
#: UDP port 9, then boots the host (it runs in the host's network and mount namespace)
WOL_LISTENER = r"""# Wake-on-LAN listener of a Baadal lab host (written by baadal.lab.hostns).
import os
import socket
import time

with open("/sys/class/net/mgmt0/address") as f:
    mac = bytes.fromhex(f.read().strip().replace(":", ""))
magic = b"\xff" * 6 + mac * 16
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("", 9))
    while True:
        data, sender = sock.recvfrom(4096)
        if magic in data:
            break
print(time.strftime("%F %T"), "magic packet from", sender[0], "- booting", flush=True)
os.execvp("sh", ["sh", "/run/baadal-lab-boot"])
"""

#: the scripts inside the host, as seen there (under ``/run``, i.e. ``<host dir>/run``)
HOST_SCRIPTS = {
    "baadal-lab-boot": BOOT_SCRIPT,
    "baadal-lab-poweroff": POWEROFF_SCRIPT,
    "baadal-lab-wol.py": WOL_LISTENER,
}
#: ``[power] poweroff_command`` for the lab's hosts
POWEROFF_COMMAND = ["sh", "/run/baadal-lab-poweroff"]

BIND_DIRS = (
    "run",
    "var-lib-libvirt",
    "etc-libvirt",
    "var-log-libvirt",
    "var-cache-libvirt",
    "etc-openvswitch",
    "var-log-openvswitch",
)


@dataclass(frozen=True)
class LabHost:
    """A compute host of the lab: names, addresses and its directory."""

    index: int
    name: str  # the host row's name
    netns: str
    mgmt_ip: str
    host_uuid: str
    #: where its BMC answers IPMI (served from the lab's BMC namespace)
    bmc_ip: str

    @property
    def uri(self) -> str:
        return f"qemu+tcp://{self.mgmt_ip}/system"

    @property
    def mgmt_link(self) -> str:
        """Root-side end of the management veth."""
        return f"bdl-m{self.index}"

    @property
    def trunk_link(self) -> str:
        """Root-side end of the VLAN trunk veth."""
        return f"bdl-t{self.index}"

    def directory(self, lab_dir: Path) -> Path:
        return lab_dir / "hosts" / self.name

    def ovs_db(self, lab_dir: Path) -> str:
        """The host's OVS database socket, as seen from the controller."""
        return f"unix:{self.directory(lab_dir) / 'run' / 'openvswitch' / 'db.sock'}"

    def pid_file(self, lab_dir: Path, daemon: str) -> Path:
        return self.directory(lab_dir) / "run" / f"{daemon}.pid"


def mgmt_mac(host: LabHost) -> str:
    """The MAC of the host's management NIC (what wake-on-LAN packets must carry)."""
    argv = ["ip", "netns", "exec", host.netns, "cat", "/sys/class/net/mgmt0/address"]
    return run_local(argv, timeout=10).stdout.strip().upper()


def prepare_host_dir(host: LabHost, lab_dir: Path) -> Path:
    """Fresh private copies of libvirt's state for one host; returns the start script."""
    h = host.directory(lab_dir)
    shutil.rmtree(h, ignore_errors=True)
    h.mkdir(parents=True)
    for name in BIND_DIRS:
        (h / name).mkdir()
    (h / "run").chmod(0o755)
    _copy_tree(Path("/etc/libvirt"), h / "etc-libvirt", with_files=True)
    qemu_etc = h / "etc-libvirt" / "qemu"
    # the root host's domains and networks are not this host's
    for pattern in ("*.xml", "autostart/*", "networks/*.xml", "networks/autostart/*"):
        for path in qemu_etc.glob(pattern):
            path.unlink()
    conf = h / "etc-libvirt" / "libvirtd.conf"
    with conf.open("a") as f:
        f.write(
            "\n# Baadal lab host\n"
            "listen_tls = 0\nlisten_tcp = 1\n"
            f'listen_addr = "{host.mgmt_ip}"\nauth_tcp = "none"\n'
            f'host_uuid = "{host.host_uuid}"\n'
        )
    _copy_tree(Path("/var/lib/libvirt"), h / "var-lib-libvirt", with_files=False)
    _copy_tree(Path("/var/log/libvirt"), h / "var-log-libvirt", with_files=False)
    # the QEMU capability cache: libvirtd starts in 0.2 s instead of 12 s
    _copy_tree(Path("/var/cache/libvirt"), h / "var-cache-libvirt", with_files=True)
    prepare_sshd(h / "sshd", host.mgmt_ip, "/run/sshd.pid", lab_dir)
    for name, text in HOST_SCRIPTS.items():
        (h / "run" / name).write_text(text)
    script = h / "start-host.sh"
    script.write_text(START_SCRIPT)
    script.chmod(0o755)
    return script


def _copy_tree(src: Path, dst: Path, *, with_files: bool) -> None:
    """Copy directories (and files when asked) keeping owners and modes (qemu dirs are
    owned by libvirt-qemu); symlinks and special files are skipped."""
    if not src.is_dir():
        return
    for root, dirs, files in os.walk(src):
        rel = Path(root).relative_to(src)
        target = dst / rel
        target.mkdir(exist_ok=True)
        shutil.copystat(root, target)
        st = os.stat(root)
        os.chown(target, st.st_uid, st.st_gid)
        if with_files:
            for name in files:
                path = Path(root) / name
                if path.is_symlink() or not path.is_file():
                    continue
                shutil.copy2(path, target / name)
                st = path.stat()
                os.chown(target / name, st.st_uid, st.st_gid)
        dirs[:] = [d for d in dirs if not (Path(root) / d).is_symlink()]
