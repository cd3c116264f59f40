"""A small cloud in the database for VM tests: datastore, template, VLAN, hosts.

Hosts point at libvirt URIs given by the test: ``test:///<file>`` or the in-memory
``fake:///<name>`` (which can migrate) for fast unit tests, ``qemu:///system`` for the
real thing.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine

from baadal import address_pools
from baadal import constants as C
from baadal.config import Settings
from baadal.db.models import Datastore, Host, SecurityDomain, Template
from baadal.db.session import session_scope

TEST_NODE_XML = """<node>
  <cpu><mhz>2000</mhz><model>x86_64</model><nodes>1</nodes><sockets>1</sockets>
  <cores>{cpus}</cores><threads>1</threads></cpu>
  <memory>{memory_kib}</memory>
</node>
"""


def fake_host_uri(directory: Path, name: str, cpus: int = 8, memory_gb: int = 16) -> str:
    """A private libvirt test-driver node (test:///default is shared by the process)."""
    path = directory / f"{name}-node.xml"
    path.write_text(TEST_NODE_XML.format(cpus=cpus, memory_kib=memory_gb * 1024 * 1024))
    return f"test://{path}"


@dataclass
class Cloud:
    datastore_id: int
    datastore_path: Path
    template_id: int
    template_file: Path
    host_ids: list[int]
    domain: str = "research"


def make_cloud(
    engine: Engine,
    settings: Settings,
    root: Path,
    host_uris: list[str],
    *,
    capacity_gb: int = 100,
    template_file: Path | None = None,
    template_hdd_gb: int = 1,
    boot: tuple[str, str, str] | None = None,
    host_cpus: int = 8,
    host_ram_gb: int = 16,
    address: str = "127.0.0.1",
) -> Cloud:
    ds_path = root / "datastore"
    templates = ds_path / settings.paths.templates_dir
    templates.mkdir(parents=True, exist_ok=True)
    if template_file is None:
        template_file = templates / "base.qcow2"
        subprocess.run(
            ["qemu-img", "create", "-q", "-f", "qcow2", str(template_file), f"{template_hdd_gb}G"],
            check=True,
        )
    with session_scope(engine) as s:
        ds = Datastore(
            ds_name="ds1", capacity=capacity_gb, path=str(ds_path), system_mount_point=str(ds_path)
        )
        s.add(ds)
        s.flush()
        kernel, initrd, cmdline = boot or (None, None, None)
        tmpl = Template(
            name="tiny",
            os_version="1",
            hdd=template_hdd_gb,
            hdfile=str(template_file.relative_to(templates)),
            datastore_id=ds.id,
            boot_kernel=kernel,
            boot_initrd=initrd,
            boot_cmdline=cmdline,
        )
        s.add(tmpl)
        vlan = address_pools.create_vlan(s, "vlan10", 10, "10.99.10.0/24")
        address_pools.add_private_ips(s, vlan.id, "10.99.10.20", "10.99.10.60")
        address_pools.add_public_ips(s, "192.0.2.10", "192.0.2.20")
        s.add(SecurityDomain(name="research", vlan_id=vlan.id))
        hosts = []
        for i, uri in enumerate(host_uris, start=1):
            host = Host(
                host_name=f"host{i}",
                address=address,
                CPUs=host_cpus,
                RAM=host_ram_gb,
                HDD=100,
                libvirt_uri=uri,
                status=C.HostStatus.UP,
            )
            s.add(host)
            hosts.append(host)
        s.flush()
        return Cloud(ds.id, ds_path, tmpl.id, template_file, [h.id for h in hosts])
