"""One lab compute host: a network + mount namespace with its own OVS, virtlogd, libvirtd
and sshd.

The namespace sees private bind mounts of libvirt's and OVS's state directories, all kept
under the host's directory in the lab, so two libvirtds never share a socket, a domain or a
host UUID. ``/run`` is a bind mount of ``<host dir>/run`` too: the daemons' pid files and
OVS's database socket are then reachable from the controller, which is how ``lab status``
and ``lab down`` find them. The start script is a fixed file; its inputs are arguments.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from baadal.lab.ssh import prepare_sshd

#: runs as ``ip netns exec NS unshare --mount --propagation private sh start-host.sh ...``
START_SCRIPT = r"""#!/bin/sh
# Start one Baadal lab compute host inside its namespaces (written by baadal.lab.hostns).
# Arguments: HOST_DIR BRIDGE TRUNK_INTERFACE
set -eu
H="$1"
BR="$2"
TRUNK="$3"
mount --bind "$H/run" /run
mkdir -p /run/lock /run/libvirt /run/openvswitch
mount --bind "$H/var-lib-libvirt" /var/lib/libvirt
mount --bind "$H/etc-libvirt" /etc/libvirt
mount --bind "$H/var-log-libvirt" /var/log/libvirt
mount --bind "$H/var-cache-libvirt" /var/cache/libvirt
mount --bind "$H/etc-openvswitch" /etc/openvswitch
mount --bind "$H/var-log-openvswitch" /var/log/openvswitch
/usr/share/openvswitch/scripts/ovs-ctl start --system-id=random >"$H/ovs-ctl.log" 2>&1
ovs-vsctl --may-exist add-br "$BR" -- set bridge "$BR" datapath_type=netdev
ovs-vsctl --may-exist add-port "$BR" "$TRUNK"
virtlogd -d
libvirtd --listen -d
mkdir -p /run/sshd
/usr/sbin/sshd -f "$H/sshd/sshd_config" -E "$H/sshd/sshd.log"
"""

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
