"""The lab in the database: hosts, datastore, template, VLANs with their pools and
security domains, public IPs; VMs whose disks went with the lab are forgotten."""

from __future__ import annotations

import contextlib
import ipaddress
import os
from collections.abc import Callable
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
from baadal.errors import ConflictError, NotFoundError
from baadal.lab import ssh
from baadal.lab.guest import build_tiny_guest
from baadal.lab.hostns import mgmt_mac
from baadal.lab.layout import (
    DATASTORE_NAME,
    HOSTS,
    PUBLIC_POOL,
    TEMPLATE_DIR,
    TEMPLATE_NAME,
    VLANS,
    LabVlan,
    pool_mac,
)
from baadal.lab.state import datastore_dir, lab_dir
from baadal.net import dhcp
from baadal.services import inventory
from baadal.services.policy import SYSTEM
from baadal.vm import storage
from baadal.vm.lifecycle import clean_up_database_after_vm_deletion
from baadal.vm.network import dhcp_entries_from_db


def mark_hosts_down(session: Session) -> None:
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


def register(
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
        if Path(ds.system_mount_point).resolve() != ds_path.resolve():
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


def rebuild_dhcp(
    settings: Settings, db: Callable[[], contextlib.AbstractContextManager[Session]]
) -> None:
    """The reservations of the VMs already in the database (after a rebuilt lab)."""
    with db() as session:
        entries = dhcp_entries_from_db(session)
    dhcp.rebuild_dhcp_entries(settings, entries)
