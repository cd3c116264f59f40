"""VM requests: what the front doors call to create and operate VMs.

Every function validates first (clear error, nothing written), then records the change
and its task in the caller's transaction. The handlers in ``baadal.vm`` do the work.
Roles are checked by the front doors' auth layer (a later issue); here ``requester`` is
who asked, recorded on the rows and tasks.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from baadal import constants as C
from baadal import placement
from baadal.auth import users
from baadal.config import Settings
from baadal.db.models import (
    VM,
    Host,
    SecurityDomain,
    Snapshot,
    Task,
    Template,
    User,
    UserVMMap,
)
from baadal.errors import ConflictError, NotFoundError, ValidationError
from baadal.net.validators import check_safe_name
from baadal.services import inventory, networks
from baadal.tasks import queue
from baadal.vm import install, migration, storage
from baadal.vm.disk import check_disk_size
from baadal.vm.edit import check_ram_vcpus
from baadal.vm.snapshot import check_user_snapshot_limit

#: operations a VM's users queue directly (no approval needed)
DIRECT_OPERATIONS = {
    "start": C.TaskType.START_VM,
    "stop": C.TaskType.STOP_VM,
    "suspend": C.TaskType.SUSPEND_VM,
    "resume": C.TaskType.RESUME_VM,
    "destroy": C.TaskType.DESTROY_VM,
    "delete": C.TaskType.DELETE_VM,
    "save-template": C.TaskType.SAVE_AS_TEMPLATE,
}


@dataclass(frozen=True)
class Queued:
    vm_id: int
    task_id: int


def vm_identity(session: Session, owner: User, vm_name: str) -> str:
    """<organisation>_<owner username>_<vm name>: the libvirt domain name."""
    org = owner.organisation.name if owner.organisation else "NOORG"
    identity = f"{org}_{owner.username}_{vm_name}"
    return check_safe_name(identity, "VM identity", C.VM_NAME_MAX)


def get_user(session: Session, username: str | None) -> User:
    """The named user; None means the system user (what the CLI acts as)."""
    if username is None:
        return session.get(User, C.SYSTEM_USER_ID)
    return users.get_user(session, username)


def find_vm(session: Session, name_or_id: str | int) -> VM:
    """A VM by id, identity or (unique) name."""
    text = str(name_or_id)
    vm = session.get(VM, int(text)) if text.isdigit() else None
    if vm is None:
        vm = session.scalar(select(VM).where(VM.vm_identity == text))
    if vm is None:
        matches = session.scalars(select(VM).where(VM.vm_name == text)).all()
        if len(matches) > 1:
            raise ConflictError(f"several VMs are named {text!r}; use the id or identity")
        vm = matches[0] if matches else None
    if vm is None:
        raise NotFoundError(f"no VM {text!r}")
    return vm


def _template(session: Session, settings: Settings, name_or_id: str | int) -> Template:
    template = inventory.get_template(session, name_or_id)
    if not template.is_active:
        raise NotFoundError(f"template {template.name!r} is not active")
    if not storage.template_path(settings, template).is_file():
        raise NotFoundError(f"template {template.name}: image file is missing on the datastore")
    return template


def _security_domain(session: Session, name: str | None) -> SecurityDomain | None:
    if name is None:
        return None
    domain = session.scalar(select(SecurityDomain).where(SecurityDomain.name == name))
    if domain is None:
        raise NotFoundError(f"no security domain named {name!r}")
    return domain


def _host(session: Session, name: str | None) -> Host | None:
    """The host a VM was asked to go on: it must be UP."""
    if name is None:
        return None
    host = inventory.get_host(session, name)
    if host.status != C.HostStatus.UP:
        raise ConflictError(f"host {host.host_name} is {C.HostStatus(host.status).name}")
    return host


def request_vm(
    session: Session,
    settings: Settings,
    *,
    vm_name: str,
    template: str | int,
    ram_mb: int,
    vcpus: int,
    owner: User,
    requester: User | None = None,
    security_domain: str | None = None,
    public_ip: bool = False,
    extra_disk_gb: int = 0,
    host: str | None = None,
    purpose: str | None = None,
) -> Queued:
    """An approved VM request: the VM row (IN_QUEUE), its users, its 'Create VM' task."""
    requester = requester or owner
    check_safe_name(vm_name, "VM name", 30)
    check_ram_vcpus(ram_mb, vcpus)
    if extra_disk_gb:
        check_disk_size(extra_disk_gb)
    tmpl = _template(session, settings, template)
    domain = _security_domain(session, security_domain)
    chosen = _host(session, host)
    identity = vm_identity(session, owner, vm_name)
    if session.scalar(select(VM.id).where(VM.vm_identity == identity)) is not None:
        raise ConflictError(f"{owner.username} already has a VM named {vm_name!r}")
    # early, non-binding checks so the user hears now, not from a failed task
    placement.choose_datastore(session, tmpl.hdd + extra_disk_gb)
    others = session.scalars(select(Host.id).where(Host.id != chosen.id)).all() if chosen else ()
    placement.find_new_host(session, ram_mb, vcpus, exclude_host_ids=others)
    vm = VM(
        vm_name=vm_name,
        vm_identity=identity,
        RAM=ram_mb,
        vCPU=vcpus,
        HDD=tmpl.hdd,
        extra_HDD=extra_disk_gb,
        template_id=tmpl.id,
        owner_id=owner.id,
        requester_id=requester.id,
        security_domain_id=domain.id if domain else None,
        public_ip_wanted=public_ip,
        purpose=purpose,
        status=C.VMStatus.IN_QUEUE,
    )
    session.add(vm)
    session.flush()
    for user_id in {owner.id, requester.id}:
        session.add(UserVMMap(user_id=user_id, vm_id=vm.id))
    params = {"host_id": chosen.id} if chosen else {}
    task = queue.enqueue(
        session, C.TaskType.CREATE_VM, vm_id=vm.id, parameters=params, requester_id=requester.id
    )
    return Queued(vm.id, task.id)


def launch_existing_vm_image(
    session: Session,
    settings: Settings,
    *,
    vm_name: str,
    template: str | int,
    datastore: str,
    ram_mb: int,
    vcpus: int,
    owner: User,
    security_domain: str | None = None,
    host: str | None = None,
) -> VM:
    """Admin: make a VM of the image already at <datastore>/<vms>/<identity>/ (no task)."""
    check_safe_name(vm_name, "VM name", 30)
    check_ram_vcpus(ram_mb, vcpus)
    tmpl = _template(session, settings, template)
    domain = _security_domain(session, security_domain)
    chosen = _host(session, host)
    ds = inventory.get_datastore(session, datastore)
    identity = vm_identity(session, owner, vm_name)
    if session.scalar(select(VM.id).where(VM.vm_identity == identity)) is not None:
        raise ConflictError(f"{owner.username} already has a VM named {vm_name!r}")
    vm = VM(
        vm_name=vm_name,
        vm_identity=identity,
        RAM=ram_mb,
        vCPU=vcpus,
        template_id=tmpl.id,
        owner_id=owner.id,
        requester_id=owner.id,
        datastore_id=ds.id,
        security_domain_id=domain.id if domain else None,
        status=C.VMStatus.IN_QUEUE,
    )
    session.add(vm)
    session.flush()
    session.add(UserVMMap(user_id=owner.id, vm_id=vm.id))
    install.launch_existing_vm_image(session, settings, vm, host_id=chosen.id if chosen else None)
    return vm


def _installed(vm: VM) -> None:
    if vm.status in (C.VMStatus.IN_QUEUE, C.VMStatus.UNKNOWN) or vm.host_id is None:
        raise ConflictError(f"VM {vm.vm_name} is not installed")


def operate(session: Session, vm: VM, operation: str, requester_id: int | None) -> Task:
    """Queue a direct operation (start, stop, suspend, resume, destroy, delete, ...)."""
    task_type = DIRECT_OPERATIONS.get(operation)
    if task_type is None:
        raise ValidationError(
            f"unknown operation {operation!r}; use one of {', '.join(DIRECT_OPERATIONS)}"
        )
    if task_type != C.TaskType.DELETE_VM:
        _installed(vm)
    return queue.enqueue(session, task_type, vm_id=vm.id, requester_id=requester_id)


def request_snapshot(session: Session, vm: VM, requester_id: int | None) -> Task:
    _installed(vm)
    check_user_snapshot_limit(session, vm.id)
    return queue.enqueue(
        session,
        C.TaskType.SNAPSHOT_VM,
        vm_id=vm.id,
        parameters={"snapshot_type": int(C.SnapshotType.USER)},
        requester_id=requester_id,
    )


def _snapshot_of(session: Session, vm: VM, snapshot: str | int) -> Snapshot:
    text = str(snapshot)
    snap = session.get(Snapshot, int(text)) if text.isdigit() else None
    snap = snap or session.scalar(
        select(Snapshot).where(Snapshot.vm_id == vm.id, Snapshot.snapshot_name == text)
    )
    if snap is None or snap.vm_id != vm.id:
        raise NotFoundError(f"VM {vm.vm_name} has no snapshot {text!r}")
    return snap


def request_revert(session: Session, vm: VM, snapshot: str | int, requester_id: int | None) -> Task:
    snap = _snapshot_of(session, vm, snapshot)
    return queue.enqueue(
        session,
        C.TaskType.REVERT_TO_SNAPSHOT,
        vm_id=vm.id,
        parameters={"snapshot_id": snap.id},
        requester_id=requester_id,
    )


def request_delete_snapshot(
    session: Session, vm: VM, snapshot: str | int, requester_id: int | None
) -> Task:
    snap = _snapshot_of(session, vm, snapshot)
    return queue.enqueue(
        session,
        C.TaskType.DELETE_SNAPSHOT,
        vm_id=vm.id,
        parameters={"snapshot_id": snap.id},
        requester_id=requester_id,
        allow_duplicate=True,
    )


def request_attach_disk(session: Session, vm: VM, size_gb: int, requester_id: int | None) -> Task:
    _installed(vm)
    check_disk_size(size_gb)
    placement.choose_datastore(session, size_gb)  # refuse a disk that fits nowhere
    return queue.enqueue(
        session,
        C.TaskType.ATTACH_DISK,
        vm_id=vm.id,
        parameters={"disk_size": size_gb},
        requester_id=requester_id,
    )


def request_edit(
    session: Session,
    vm: VM,
    requester_id: int | None,
    *,
    ram_mb: int | None = None,
    vcpus: int | None = None,
    public_ip: bool | None = None,
    security_domain: str | None = None,
) -> Task:
    """Queue only the keys that change (upstream: 'Edit -> only changed keys')."""
    _installed(vm)
    check_ram_vcpus(ram_mb, vcpus)
    params: dict[str, object] = {}
    if security_domain is not None:
        domain = networks.get_security_domain(session, security_domain)
        networks.check_domain_change(session, vm, domain)
        params["security_domain"] = domain.id
    if ram_mb is not None and ram_mb != vm.RAM:
        params["ram"] = ram_mb
    if vcpus is not None and vcpus != vm.vCPU:
        params["vcpus"] = vcpus
    if public_ip is not None and public_ip != (vm.public_ip_id is not None):
        params["public_ip"] = public_ip
    if not params:
        raise ValidationError("nothing to change: the VM already has this configuration")
    return queue.enqueue(
        session,
        C.TaskType.EDIT_VM_CONFIG,
        vm_id=vm.id,
        parameters=params,
        requester_id=requester_id,
    )


def request_clone(
    session: Session, vm: VM, count: int, requester_id: int | None, *, full: bool = False
) -> tuple[Task, list[int]]:
    """N clone rows named <name>_clone<k> (parent's config and users) and one task."""
    _installed(vm)
    if vm.status != C.VMStatus.SHUTDOWN:
        raise ConflictError(f"{vm.vm_name} must be shut off to be cloned")
    if not 1 <= count <= 100:
        raise ValidationError("clone count must be 1-100")
    owner = session.get(User, vm.owner_id) if vm.owner_id is not None else get_user(session, None)
    users = session.scalars(select(UserVMMap.user_id).where(UserVMMap.vm_id == vm.id)).all()
    clone_ids = []
    k = 1
    while len(clone_ids) < count:
        name = f"{vm.vm_name}_clone{k}"
        k += 1
        identity = vm_identity(session, owner, name)
        if session.scalar(select(VM.id).where(VM.vm_identity == identity)) is not None:
            continue
        clone = VM(
            vm_name=name,
            vm_identity=identity,
            RAM=vm.RAM,
            vCPU=vm.vCPU,
            HDD=vm.HDD,
            extra_HDD=vm.extra_HDD,
            template_id=vm.template_id,
            owner_id=vm.owner_id,
            requester_id=requester_id,
            security_domain_id=vm.security_domain_id,
            parent_id=vm.id,
            purpose=vm.purpose,
            status=C.VMStatus.IN_QUEUE,
        )
        session.add(clone)
        session.flush()
        for user_id in users:
            session.add(UserVMMap(user_id=user_id, vm_id=clone.id))
        clone_ids.append(clone.id)
    task = queue.enqueue(
        session,
        C.TaskType.CLONE_VM,
        vm_id=vm.id,
        parameters={"clone_vm_id": clone_ids, "full": full},
        requester_id=requester_id,
    )
    return task, clone_ids


def request_migrate(
    session: Session, vm: VM, dest_host: str | None, live: bool, requester_id: int | None
) -> Task:
    """Validate now (installed, destination UP, not its own, with room: a clear error
    and nothing queued), then queue. Without ``dest_host`` placement chooses at run
    time."""
    migration.check_installed(vm)
    dest_id = inventory.get_host(session, dest_host).id if dest_host is not None else None
    migration.choose_destination(session, vm, dest_id)
    return migration.add_migrate_task_to_queue(session, vm.id, dest_id, live, requester_id)
