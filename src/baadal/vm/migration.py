"""Moving a VM to another host (the seed's VM_migration).

The datastore is shared, so only the guest's memory (live) or its definition (offline)
moves. libvirt refuses to migrate a domain with snapshot metadata, so the snapshots'
XML is saved first under the datastore's migration directory, their metadata deleted,
the domain migrated, and the snapshots redefined on the destination parents first
(lab-recipe.md). On failure they are redefined on the source instead (undo_migration).

The saved XML is the record of an unfinished migration: a worker that died mid-way
leaves it, and :func:`compensate_migration` settles the VM where its domain really is.
The VM row's host changes only once the domain is on the destination. Libvirt calls
run between short transactions, never inside one.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from baadal import constants as C
from baadal import placement
from baadal.config import Settings
from baadal.db.models import VM, Datastore, Host, Task
from baadal.db.session import session_scope
from baadal.drivers import domain_xml, hypervisor_for
from baadal.drivers.base import DomainNotFound, Hypervisor, NotSupported, SnapshotInfo
from baadal.errors import BaadalError, ConflictError, NotFoundError, ResourceExhausted
from baadal.tasks import queue
from baadal.tasks.params import MigrateVMHostParams
from baadal.tasks.registry import TaskContext, TaskResult, handler
from baadal.vm import nat, storage
from baadal.vm.common import load_vm, log_vm_event

log = logging.getLogger("baadal")

VNC_REVOKED = " Its VNC console access was revoked (the NAT box could not be changed)."
_CURRENT_FILE = "current"


def migrated_message(vm_name: str) -> str:
    return f"{vm_name} is migrated successfully"


@dataclass(frozen=True)
class Place:
    """A host as a migration needs it."""

    host_id: int
    name: str
    address: str
    hv: Hypervisor
    #: where the VM's VNC console listens on this host (as vm_domain_spec sets it)
    vnc_listen: str


@dataclass(frozen=True)
class Move:
    """One migration, read from the DB before libvirt is asked anything."""

    vm_id: int
    vm_name: str
    identity: str
    source: Place
    dest: Place
    #: the VM's directory under the datastore's migration directory
    backup: Path


def _place(settings: Settings, host: Host) -> Place:
    return Place(
        host.id,
        host.host_name,
        host.address,
        hypervisor_for(host.libvirt_uri),
        settings.vm.vnc_listen or host.address,
    )


def migration_dir(settings: Settings, datastore: Datastore, vm_identity: str) -> Path:
    """<mount>/<vm_migration_data>/<vm_identity>: the VM's saved snapshot XMLs."""
    return Path(datastore.system_mount_point) / settings.paths.vm_migration_data / vm_identity


# --- the saved snapshot XMLs -------------------------------------------------------------


def save_snapshot_xmls(directory: Path, snapshots: list[SnapshotInfo]) -> None:
    """One file per snapshot, numbered parents first, and the current one's name. Only
    root may read them: the snapshot XML carries the domain's VNC password."""
    storage.remove_path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    directory.mkdir(mode=0o700)
    for index, snap in enumerate(snapshots):
        _write_private(directory / f"{index:03d}-{snap.name}.xml", snap.xml)
        if snap.is_current:
            _write_private(directory / _CURRENT_FILE, snap.name)


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def saved_snapshots(directory: Path) -> list[SnapshotInfo]:
    """What :func:`save_snapshot_xmls` wrote, parents first; empty if nothing was saved."""
    if not directory.is_dir():
        return []
    current_file = directory / _CURRENT_FILE
    current = current_file.read_text() if current_file.is_file() else None
    snaps = []
    for path in sorted(directory.glob("*.xml")):
        name = path.stem.split("-", 1)[1]
        snaps.append(SnapshotInfo(name, path.read_text(), name == current))
    return snaps


def clean_migration_directory(directory: Path) -> None:
    storage.remove_path(directory)


def redefine_snapshots(place: Place, identity: str, snapshots: list[SnapshotInfo]) -> None:
    """Redefine what the host lacks, parents first, the current one marked current.

    The domain inside each snapshot gets this host's VNC address: reverting restores it.
    """
    existing = {s.name for s in place.hv.snapshot_list(identity)}
    for snap in snapshots:
        if snap.name not in existing:
            xml = domain_xml.set_vnc_listen(snap.xml, place.vnc_listen)
            place.hv.snapshot_redefine(identity, xml, current=snap.is_current)


# --- the steps -----------------------------------------------------------------------------


def migrate_domain_with_snapshots(
    engine: Engine, move: Move, live: bool, requester_id: int | None
) -> None:
    """Save and drop the snapshot metadata, migrate, record the new host, redefine the
    snapshots there and forget the saved XML. Any failure leaves the saved XML."""
    source, identity = move.source.hv, move.identity
    if not source.capabilities.live_migration:  # refuse before touching the snapshots
        raise NotSupported(f"migration is not supported by {source.uri}")
    snapshots = source.snapshot_list(identity)
    save_snapshot_xmls(move.backup, snapshots)
    for snap in reversed(snapshots):  # children first
        source.snapshot_delete(identity, snap.name, metadata_only=True)
    source.migrate(
        identity, move.dest.hv.uri, move.dest.address, live=live, vnc_listen=move.dest.vnc_listen
    )
    _finish(engine, move.vm_id, identity, move.dest, [move.source], move.backup, requester_id)


def undo_migration(place: Place, identity: str, backup: Path) -> None:
    """The domain stayed on ``place`` (its source): give it its snapshots back."""
    redefine_snapshots(place, identity, saved_snapshots(backup))
    clean_migration_directory(backup)


def _record_host(engine: Engine, vm_id: int, place: Place, requester_id: int | None) -> None:
    with session_scope(engine) as session:
        vm = load_vm(session, vm_id)
        if vm.host_id != place.host_id:
            old = vm.host.host_name if vm.host else None
            log_vm_event(session, vm, "host", old, place.name, requester_id)
            vm.host_id = place.host_id


def _finish(
    engine: Engine,
    vm_id: int,
    identity: str,
    dest: Place,
    others: list[Place],
    backup: Path,
    requester_id: int | None,
) -> None:
    """The domain is on ``dest``: the VM row follows, the snapshots are redefined there,
    and a definition an interrupted migration left elsewhere is removed (two
    definitions of one disk must never both start)."""
    _record_host(engine, vm_id, dest, requester_id)
    redefine_snapshots(dest, identity, saved_snapshots(backup))
    clean_migration_directory(backup)
    uuid = dest.hv.domain_info(identity).uuid
    for place in others:
        try:
            info = place.hv.domain_info(identity)
        except DomainNotFound:
            continue
        if info.uuid == uuid and not info.active:
            place.hv.undefine(identity)


def locate_domain(places: list[Place], identity: str) -> Place:
    """The host the domain is on: the one where it is active, else the only one where
    it is defined. Anything else needs a person (ConflictError)."""
    found: list[tuple[Place, bool]] = []
    for place in places:
        try:
            found.append((place, place.hv.domain_info(identity).active))
        except DomainNotFound:
            continue
    running = [place for place, active in found if active]
    if len(running) == 1:
        return running[0]
    if len(found) == 1 and not running:
        return found[0][0]
    names = ", ".join(place.name for place, _ in found) or "none"
    raise ConflictError(f"cannot tell where {identity} is; hosts defining it: {names}")


def settle(
    engine: Engine,
    vm_id: int,
    identity: str,
    db_host_id: int,
    places: list[Place],
    backup: Path,
    requester_id: int | None,
) -> Place:
    """Make the VM row, the snapshot metadata and the saved XML agree with where the
    domain is: undo on the VM row's host, finish anywhere else. Returns that host."""
    where = locate_domain(places, identity)
    if where.host_id == db_host_id:
        undo_migration(where, identity, backup)
    else:
        others = [place for place in places if place.host_id != where.host_id]
        _finish(engine, vm_id, identity, where, others, backup, requester_id)
    return where


def _move(
    engine: Engine, settings: Settings, move: Move, live: bool, requester_id: int | None
) -> str:
    """Run one migration; on failure settle the VM where the domain is. The message."""

    def settle_move() -> Place:
        places = [move.source, move.dest]
        return settle(
            engine,
            move.vm_id,
            move.identity,
            move.source.host_id,
            places,
            move.backup,
            requester_id,
        )

    if move.backup.exists():  # an earlier attempt did not finish: settle it first
        where = settle_move()
        if where.host_id != move.source.host_id:
            raise ConflictError(
                f"{move.vm_name} is already on {where.name}: an earlier migration finished"
            )
    try:
        migrate_domain_with_snapshots(engine, move, live, requester_id)
    except Exception as exc:
        try:
            where = settle_move()
        except Exception:
            log.exception("could not settle %s after a failed migration", move.identity)
            raise exc from None
        if where.host_id != move.dest.host_id:
            raise
    return migrated_message(move.vm_name) + follow_with_vnc_grants(engine, settings, move.vm_id)


def follow_with_vnc_grants(engine: Engine, settings: Settings, vm_id: int) -> str:
    """Active console grants follow the VM to its new host; if the NAT box cannot be
    changed they are revoked rather than left pointing at the old host. Never raises: the
    VM has moved either way. Returns what to add to the task message."""
    try:
        nat.move_vnc_grants(engine, settings, vm_id)
        return ""
    except BaadalError as exc:
        log.error("VNC grants of VM %d could not follow it: %s", vm_id, exc)
    try:
        nat.remove_vnc_mapping_from_nat(engine, settings, vm_id)
    except BaadalError as exc:  # the rules stay until `net nat clear`; the grants end
        log.error("VNC rules of VM %d could not be removed from the NAT box: %s", vm_id, exc)
        nat.end_vnc_grants(engine, vm_id)
    return VNC_REVOKED


# --- choosing and checking the destination -------------------------------------------------


def check_installed(vm: VM) -> None:
    if vm.status in (C.VMStatus.IN_QUEUE, C.VMStatus.UNKNOWN) or vm.host is None:
        raise ConflictError(f"VM {vm.vm_name} is not installed")
    if vm.datastore is None:
        raise ConflictError(f"VM {vm.vm_name} names no datastore")


def choose_destination(
    session: Session, vm: VM, dest_host_id: int | None, settings: Settings | None = None
) -> Host:
    """The asked host if it is UP, not the VM's own and has room (placement's rules and
    message), else the best other host placement finds (affinity respected). The VM
    keeps its VNC port (the running console cannot change it), so a host where another
    VM holds that port is not a destination (ports are drawn at random: rare)."""
    port_taken = (
        []
        if vm.vnc_port is None
        else list(
            session.scalars(select(VM.host_id).where(VM.vnc_port == vm.vnc_port, VM.id != vm.id))
        )
    )
    if dest_host_id is None:
        return placement.find_new_host(
            session,
            vm.RAM,
            vm.vCPU,
            vm_id=vm.id,
            exclude_host_ids=[vm.host_id, *port_taken],
            settings=settings,
        )
    host = session.get(Host, int(dest_host_id))
    if host is None:
        raise NotFoundError(f"no host with id {dest_host_id}")
    if host.id == vm.host_id:
        raise ConflictError(f"VM {vm.vm_name} is already on host {host.host_name}")
    if host.id in port_taken:
        raise ConflictError(
            f"cannot migrate {vm.vm_name} to {host.host_name}: another VM there holds its"
            f" VNC port {vm.vnc_port} (respawn it there instead, or choose another host)"
        )
    if host.status != C.HostStatus.UP:
        raise ConflictError(
            f"cannot migrate to host {host.host_name}: it is {C.HostStatus(host.status).name}"
        )
    others = session.scalars(select(Host.id).where(Host.id != host.id)).all()
    try:
        placement.find_new_host(
            session, vm.RAM, vm.vCPU, vm_id=vm.id, exclude_host_ids=others, settings=settings
        )
    except ResourceExhausted as exc:
        raise ResourceExhausted(f"cannot migrate {vm.vm_name} to {host.host_name}: {exc}") from None
    return host


def plan_migration(
    engine: Engine, settings: Settings, vm_id: int, dest_host_id: int | None
) -> Move:
    with session_scope(engine) as session:
        vm = load_vm(session, vm_id)
        check_installed(vm)
        # a host in maintenance is being emptied: its VMs may (must) leave it
        if vm.host.status not in (C.HostStatus.UP, C.HostStatus.MAINTENANCE):
            raise ConflictError(f"host {vm.host.host_name} of {vm.vm_name} is not UP")
        dest = choose_destination(session, vm, dest_host_id, settings)
        return Move(
            vm.id,
            vm.vm_name,
            vm.vm_identity,
            _place(settings, vm.host),
            _place(settings, dest),
            migration_dir(settings, vm.datastore, vm.vm_identity),
        )


# --- entry points ------------------------------------------------------------------------


def migrate_domain(
    engine: Engine,
    settings: Settings,
    vm_id: int,
    dest_host_id: int | None,
    live: bool,
    requester_id: int | None = None,
) -> TaskResult:
    """Move the VM to ``dest_host_id`` (None: placement chooses). A shut-off VM always
    moves offline; a running one pauses while it moves unless ``live``."""
    try:
        move = plan_migration(engine, settings, vm_id, dest_host_id)
        message = _move(engine, settings, move, live, requester_id)
    except Exception as exc:
        return TaskResult.error(exc)
    return TaskResult.success(message)


def compensate_migration(ctx: TaskContext[MigrateVMHostParams]) -> None:
    """A worker died mid-migration: settle the VM where its domain is now (finish the
    bookkeeping on another host, console grants moved along, or give the snapshots back on
    its own)."""
    with session_scope(ctx.engine) as session:
        vm = session.get(VM, ctx.vm_id)
        if vm is None or vm.host_id is None or vm.datastore is None:
            return
        identity, db_host_id = vm.vm_identity, vm.host_id
        backup = migration_dir(ctx.settings, vm.datastore, identity)
        places = [
            _place(ctx.settings, host)
            for host in session.scalars(
                select(Host).where(Host.status.in_((C.HostStatus.UP, C.HostStatus.MAINTENANCE)))
            )
        ]
    where = settle(ctx.engine, ctx.vm_id, identity, db_host_id, places, backup, ctx.requester_id)
    if where.host_id != db_host_id:
        follow_with_vnc_grants(ctx.engine, ctx.settings, ctx.vm_id)


@handler(C.TaskType.MIGRATE_VM_HOST, compensate=compensate_migration)
def migrate(ctx: TaskContext[MigrateVMHostParams]) -> TaskResult:
    """The 'Migrate VM Between Hosts' handler.

    A re-run after a lost attempt that compensation finished (the VM left the host it
    was on when queued) reports that migration instead of starting another.
    """
    params = ctx.params
    if ctx.attempt > 1 and params.source_host is not None:
        with session_scope(ctx.engine) as session:
            vm = load_vm(session, ctx.vm_id)
            moved, name = vm.host_id != params.source_host, vm.vm_name
        if moved:
            return TaskResult.success(migrated_message(name))
    return migrate_domain(
        ctx.engine,
        ctx.settings,
        ctx.vm_id,
        params.destination_host,
        params.live_migration,
        ctx.requester_id,
    )


def migrate_clone_to_new_host(
    engine: Engine, settings: Settings, clone_vm_id: int, new_host_id: int
) -> bool:
    """Offline migration of a shut-off clone; False (logged) when it stays where it is."""
    try:
        move = plan_migration(engine, settings, clone_vm_id, new_host_id)
        if move.source.hv.domain_info(move.identity).active:
            raise ConflictError(f"clone {move.vm_name} must be shut off to be moved")
        _move(engine, settings, move, False, None)
    except BaadalError as exc:
        log.warning("clone %s stays on its host: %s", clone_vm_id, exc)
        return False
    return True


def add_migrate_task_to_queue(
    session: Session,
    vm_id: int,
    dest_host_id: int | None,
    live_migration: bool,
    requester_id: int | None = None,
) -> Task:
    """The seed's host_helper function; the source host is recorded so a re-run can tell
    a migration that already happened."""
    vm = load_vm(session, vm_id)
    return queue.enqueue(
        session,
        C.TaskType.MIGRATE_VM_HOST,
        vm_id=vm_id,
        parameters=MigrateVMHostParams(
            destination_host=dest_host_id, live_migration=live_migration, source_host=vm.host_id
        ),
        requester_id=requester_id,
    )
