"""Respawn: a VM whose domain is lost (its host DOWN, or undefined behind Baadal's back)
defined again from the database, on its own host or where placement puts it (the seed's
host_vms.respawn_dangling_vms); a DOWN host's VMs fenced first.

    respawn_vm                          define a VM's lost domain again from the DB
    respawn_dangling_vms                every VM of a DOWN host, on other hosts
    fence_vms / recover_down_host       make sure a DOWN host no longer runs them, then respawn

Libvirt and qemu-img calls run between short transactions, never inside one: on SQLite a
transaction holds the database's write lock for as long as it is open.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import re
import shlex
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from baadal import address_pools
from baadal import constants as C
from baadal.config import Settings
from baadal.db.models import VM, AttachedDisk, Datastore, Host, Snapshot
from baadal.db.session import session_scope
from baadal.drivers import domain_xml, hypervisor_for
from baadal.drivers.base import Hypervisor, HypervisorError
from baadal.drivers.remote import RemoteTarget, execute_remote_cmd
from baadal.errors import (
    BaadalError,
    ConflictError,
    NotFoundError,
    RemoteCommandError,
    user_message,
)
from baadal.vm import migration, storage
from baadal.vm.common import load_vm, log_vm_event
from baadal.vm.install import allocate_vm_properties, launch_vm_on_host, vm_domain_spec

log = logging.getLogger("baadal")


@dataclass(frozen=True)
class RespawnResult:
    vm_id: int
    vm_name: str
    old_host: str | None
    new_host: str | None
    ok: bool
    message: str


@dataclass(frozen=True)
class _Plan:
    """What one respawn does, read in the reservation transaction."""

    hv: Hypervisor
    #: the target, plus the old host while it is UP: where the domain must not exist
    live_hosts: list[Hypervisor]
    spec: domain_xml.DomainSpec
    status: C.VMStatus
    old_host_id: int | None
    old_host: str | None
    #: the VM's VNC port on its old host (ports are per host: a new host may give another)
    old_vnc_port: int | None
    new_host: str
    snapshots: list[tuple[str, int]]  # (name, creation time), oldest first


def _extra_disks(session: Session, settings: Settings, vm: VM) -> list[domain_xml.DiskSpec]:
    """The VM's attached disks as vdb, vdc, ... in the order they were attached."""
    disks = session.scalars(
        select(AttachedDisk)
        .where(AttachedDisk.vm_id == vm.id)
        .order_by(AttachedDisk.attached_disk_name)
    )
    return [
        domain_xml.DiskSpec(
            str(
                storage.get_extra_disk_location(
                    settings,
                    session.get(Datastore, disk.datastore_id),
                    vm.vm_identity,
                    disk.attached_disk_name,
                ).path
            ),
            domain_xml.DISK_TARGETS[index],
        )
        for index, disk in enumerate(disks, start=1)
    ]


def _reserve(engine: Engine, settings: Settings, vm_id: int, host_id: int | None) -> _Plan:
    """Choose the host and move the VM's reservation there; the rest of what the VM holds
    (MAC, IP, VNC port, datastore) is kept: allocate_vm_properties returns what is held."""
    with session_scope(engine) as session:
        vm = load_vm(session, vm_id)
        if vm.status in (C.VMStatus.IN_QUEUE, C.VMStatus.UNKNOWN):
            raise ConflictError(f"VM {vm.vm_name} was never installed: nothing to respawn")
        if vm.datastore is None or vm.template is None:
            raise ConflictError(f"VM {vm.vm_name} names no datastore or template")
        image = storage.get_vm_image_location(settings, vm.datastore, vm.vm_identity)
        if not image.present:
            raise NotFoundError(f"VM {vm.vm_name}: no image at {image.path}")
        old = vm.host
        old_host_id, old_name = vm.host_id, old.host_name if old else None
        old_vnc_port = vm.vnc_port
        keep = old is not None and old.status == C.HostStatus.UP and host_id in (None, old.id)
        if not keep:
            vm.host_id = None  # placement then counts the room this VM frees
            address_pools.release_vnc_port(session, vm.id)  # the new host gives one
        props = allocate_vm_properties(session, vm, host_id=None if keep else host_id)
        host = session.get(Host, props.host_id)
        spec = vm_domain_spec(settings, vm, host, vm.template, image.path, props)
        spec = dataclasses.replace(spec, disks=[*spec.disks, *_extra_disks(session, settings, vm)])
        snapshots = [
            (name, int(created.replace(tzinfo=UTC).timestamp()))
            for name, created in session.execute(
                select(Snapshot.snapshot_name, Snapshot.timestamp)
                .where(Snapshot.vm_id == vm.id)
                .order_by(Snapshot.timestamp, Snapshot.id)
            )
        ]
        hv = hypervisor_for(host.libvirt_uri)
        live_hosts = [hv]
        if old_host_id != host.id:
            log_vm_event(session, vm, "host", old_name, host.host_name)
            if old is not None and old.status == C.HostStatus.UP:
                live_hosts.append(hypervisor_for(old.libvirt_uri))
        return _Plan(
            hv,
            live_hosts,
            spec,
            C.VMStatus(vm.status),
            old_host_id,
            old_name,
            old_vnc_port,
            host.host_name,
            snapshots,
        )


def _internal_snapshots(path: Path) -> dict[str, bool]:
    """Snapshot name -> whether it holds the guest's memory (taken while running)."""
    info = storage.image_info(path)
    return {
        str(s["name"]): int(s.get("vm-state-size", 0)) > 0
        for s in info.get("snapshots", [])  # type: ignore[union-attr]
    }


def _redefine_snapshots(hv: Hypervisor, plan: _Plan) -> None:
    """Give libvirt back the metadata of the snapshots the disks still hold."""
    per_disk = {d.target: _internal_snapshots(Path(d.path)) for d in plan.spec.disks}
    system = per_disk[plan.spec.disks[0].target]
    dom = hv.xml(plan.spec.name, inactive=True, secure=True)
    kept = [(name, created) for name, created in plan.snapshots if name in system]
    parent = None
    for index, (name, created) in enumerate(kept):
        disks = {target: name in snaps for target, snaps in per_disk.items()}
        xml = domain_xml.internal_snapshot_xml(name, parent, created, system[name], disks, dom)
        hv.snapshot_redefine(plan.spec.name, xml, current=index == len(kept) - 1)
        parent = name


def _bring_up(plan: _Plan) -> None:
    """Define the domain and put it in the VM's recorded power state."""
    hv, spec = plan.hv, plan.spec
    if plan.status == C.VMStatus.SHUTDOWN:
        hv.define(domain_xml.build_domain_xml(spec), autostart=spec.autostart)
    else:
        launch_vm_on_host(hv, spec)
    if plan.snapshots:
        _redefine_snapshots(hv, plan)
    if plan.status == C.VMStatus.SUSPENDED:
        hv.suspend(spec.name)


def _revert_disks(plan: _Plan) -> str | None:
    """qemu-img's revert of every disk holding the latest snapshot (the domain is not
    running: nothing has the disks open). The snapshot's name, or None if no disk has it."""
    if not plan.snapshots:
        return None
    name = plan.snapshots[-1][0]
    reverted = False
    for disk in plan.spec.disks:
        if name in _internal_snapshots(Path(disk.path)):
            storage.qemu_img("snapshot", "-a", name, disk.path)
            reverted = True
    return name if reverted else None


def _give_back(engine: Engine, vm_id: int, plan: _Plan) -> None:
    """A failed respawn: the VM's reservation returns to its old host (its old VNC port
    there if still free)."""
    with session_scope(engine) as session:
        vm = load_vm(session, vm_id)
        if vm.host_id != plan.old_host_id:
            log_vm_event(session, vm, "host", plan.new_host, plan.old_host)
            address_pools.release_vnc_port(session, vm.id)
            vm.host_id = plan.old_host_id
            if vm.host_id is not None:
                address_pools.allocate_vnc_port(session, vm.id, prefer=plan.old_vnc_port)


def respawn_vm(
    engine: Engine,
    settings: Settings,
    vm_id: int,
    *,
    host_id: int | None = None,
    revert_to_latest_snapshot: bool = False,
) -> RespawnResult:
    """Define a VM's lost domain again from the DB, with its MAC, IP and VNC port.

    On its own host if that is UP (and no other was asked for), else where placement
    puts it. Refuses when the domain still exists on the target or the old UP host:
    two guests on one disk would corrupt it. On failure the VM returns to its old host.
    """
    plan = _reserve(engine, settings, vm_id, host_id)
    try:
        for hv in plan.live_hosts:
            if hv.is_defined(plan.spec.name):
                raise ConflictError(f"{plan.spec.name} is still defined on {hv.uri}")
    except BaadalError:
        _give_back(engine, vm_id, plan)
        raise
    try:
        reverted = _revert_disks(plan) if revert_to_latest_snapshot else None
        _bring_up(plan)
    except Exception:
        with contextlib.suppress(HypervisorError):  # the first error is the one to report
            plan.hv.undefine(plan.spec.name)
        _give_back(engine, vm_id, plan)
        raise
    message = f"respawned on {plan.new_host}" + (f", reverted to {reverted}" if reverted else "")
    message += migration.follow_with_vnc_grants(engine, settings, vm_id)
    with session_scope(engine) as session:
        vm = load_vm(session, vm_id)
        log_vm_event(session, vm, "respawn", plan.old_host, message)
        return RespawnResult(vm.id, vm.vm_name, plan.old_host, plan.new_host, True, message)


def respawn_dangling_vms(engine: Engine, settings: Settings, host_id: int) -> list[RespawnResult]:
    """Every VM of a DOWN host, respawned elsewhere; a running or paused one at its latest
    snapshot (as upstream: what the dead host's guests wrote since may be half-written).
    One failure does not stop the others."""
    with session_scope(engine) as session:
        host = session.get(Host, host_id)
        if host is None:
            raise NotFoundError(f"no host with id {host_id}")
        if host.status == C.HostStatus.UP:
            raise ConflictError(f"host {host.host_name} is UP: its VMs are not dangling")
        vms = session.execute(
            select(VM.id, VM.vm_name, VM.status)
            .where(
                VM.host_id == host_id,
                VM.status.in_((C.VMStatus.RUNNING, C.VMStatus.SUSPENDED, C.VMStatus.SHUTDOWN)),
            )
            .order_by(VM.id)
        ).all()
        host_name = host.host_name
    results: list[RespawnResult] = []
    for vm_id, vm_name, status in vms:
        # a shut-off VM's disk was closed cleanly: nothing to roll back
        revert = status != C.VMStatus.SHUTDOWN
        try:
            results.append(respawn_vm(engine, settings, vm_id, revert_to_latest_snapshot=revert))
        except Exception as exc:
            log.exception("respawn of VM %s from host %s failed", vm_name, host_name)
            results.append(RespawnResult(vm_id, vm_name, host_name, None, False, user_message(exc)))
    return results


def fence_commands(identity: str) -> list[list[str]]:
    """Run on a host whose libvirtd is gone: kill the VM's QEMU and remove its persistent
    and autostart definitions, so the host cannot run it again when libvirtd returns."""
    etc = "/etc/libvirt/qemu"
    return [
        ["pkill", "-KILL", "-f", "--", f"guest={re.escape(identity)},"],
        ["rm", "-f", "--", f"{etc}/autostart/{identity}.xml", f"{etc}/{identity}.xml"],
    ]


def fence_vms(host: Host, settings: Settings, identities: list[str]) -> str | None:
    """Make sure the VMs no longer run on ``host`` (over SSH); why not, or None when done.
    pkill finding nothing (exit 1) is fine: the guest was already gone."""
    target = RemoteTarget.for_host(host, settings)
    try:
        for identity in identities:
            for argv in fence_commands(identity):
                result = execute_remote_cmd(target, argv, check=False, timeout=30)
                if result.exit_code not in (0, 1):
                    return f"{shlex.join(argv)} exited {result.exit_code}: {result.stderr[:200]}"
    except RemoteCommandError as exc:
        return exc.reason
    return None


def recover_down_host(engine: Engine, settings: Settings, host_id: int) -> list[RespawnResult]:
    """A host went DOWN: fence its VMs, then respawn them on the other hosts. A host that
    cannot be fenced (no SSH: powered off, or cut off while its guests may still run) is
    left alone unless ``general.respawn_unfenced`` -- two guests on one disk destroy it."""
    with session_scope(engine) as session:
        host = session.get(Host, host_id)
        if host is None:
            raise NotFoundError(f"no host with id {host_id}")
        identities = list(
            session.scalars(select(VM.vm_identity).where(VM.host_id == host_id).order_by(VM.id))
        )
        session.expunge(host)
    if not identities:
        return []
    problem = fence_vms(host, settings, identities)
    if problem is not None:
        log.warning("host %s: its VMs could not be fenced: %s", host.host_name, problem)
        if not settings.general.respawn_unfenced:
            return [
                RespawnResult(0, name, host.host_name, None, False, f"not fenced: {problem}")
                for name in identities
            ]
    return respawn_dangling_vms(engine, settings, host_id)
