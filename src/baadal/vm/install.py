"""Creating a VM (the seed's VM_helper.install and its steps).

    allocate_vm_properties   one transaction: datastore, host, IP+MAC, public IP, VNC port
    create_vm_image          qcow2 overlay on the template (full copy only when asked)
    vm_domain_spec           the domain definition (replaces get_install_command/virt-install)
    launch_vm_on_host        define + start on the host's libvirt, extra disk if requested
    update_db_after_vm_installation

Any failure runs free_vm_properties, which gives back everything the steps took (domain,
files, addresses, port, datastore space), so a failed install leaks nothing. The same
function is the handler's compensation when a worker died mid-install.
"""

from __future__ import annotations

import contextlib
import uuid
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from baadal import address_pools, placement
from baadal import constants as C
from baadal.config import Settings
from baadal.db.models import VM, AttachedDisk, Datastore, Host, Task, Template
from baadal.db.session import session_scope
from baadal.drivers import domain_xml, hypervisor_for
from baadal.drivers.base import DomainNotFound, Hypervisor
from baadal.errors import ConflictError, NotFoundError
from baadal.home import TINY_GUEST_ENTRY
from baadal.monitor import rrd
from baadal.tasks.params import CreateVMParams
from baadal.tasks.registry import TaskContext, TaskResult, handler
from baadal.vm import network, storage
from baadal.vm.common import load_vm, log_vm_event, network_lock, set_status
from baadal.vm.console import new_password
from baadal.vm.disk import serve_extra_disk_request

INSTALL_SUCCESS = "VM is installed successfully"


@dataclass(frozen=True)
class VMProperties:
    """What allocate_vm_properties reserved for the VM (the seed's vm_properties)."""

    host_id: int
    datastore_id: int
    private_ip: str | None
    mac_addr: str
    vlan_tag: int | None
    public_ip: str | None
    vnc_port: int


def vm_uuid(vm: VM) -> str:
    """A fixed UUID per VM: redefining a domain with another UUID fails (lab-notes.md)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"baadal:{vm.id}:{vm.vm_identity}"))


def active_template(session: Session, template_id: int | None) -> Template:
    template = session.get(Template, template_id) if template_id is not None else None
    if template is None or not template.is_active:
        raise NotFoundError(f"template {template_id} does not exist or is not active")
    return template


def _chosen_host(session: Session, vm: VM, host_id: int | None) -> Host:
    if host_id is None:
        return placement.find_new_host(session, vm.RAM, vm.vCPU, vm_id=vm.id)
    host = session.get(Host, host_id)
    if host is None:
        raise NotFoundError(f"no host with id {host_id}")
    others = session.scalars(select(Host.id).where(Host.id != host_id)).all()
    return placement.find_new_host(session, vm.RAM, vm.vCPU, vm_id=vm.id, exclude_host_ids=others)


def allocate_vm_properties(session: Session, vm: VM, *, host_id: int | None = None) -> VMProperties:
    """Reserve everything the VM needs, in the caller's transaction (all or nothing)."""
    template = active_template(session, vm.template_id)
    if vm.datastore_id is None:
        datastore = placement.choose_datastore(session, template.hdd + vm.extra_HDD)
        session.execute(
            update(Datastore)
            .where(Datastore.id == datastore.id)
            .values(used=Datastore.used + template.hdd)
        )
        vm.datastore_id = datastore.id
        vm.HDD = template.hdd
    if vm.host_id is None:
        vm.host_id = _chosen_host(session, vm, host_id).id
    mac, private_ip, vlan_tag = None, None, None
    if vm.security_domain_id is not None:
        address = address_pools.get_private_ip_mac(session, vm.id, vm.security_domain_id)
        private_ip, mac, vlan_tag = address.private_ip, address.mac_addr, address.vlan_tag
    public_ip = address_pools.allocate_public_ip(session, vm.id) if vm.public_ip_wanted else None
    vnc_port = address_pools.allocate_vnc_port(session, vm.id)
    session.flush()
    return VMProperties(
        host_id=vm.host_id,
        datastore_id=vm.datastore_id,
        private_ip=private_ip,
        mac_addr=mac or _stable_mac(vm),
        vlan_tag=vlan_tag,
        public_ip=public_ip,
        vnc_port=vnc_port,
    )


def _stable_mac(vm: VM) -> str:
    """A MAC for a VM outside any security domain (no DHCP reservation needed)."""
    digest = uuid.UUID(vm_uuid(vm)).bytes
    return "52:54:00:" + ":".join(f"{b:02X}" for b in digest[:3])


def create_vm_image(settings: Settings, source: Path, image: Path, hdd_gb: int) -> None:
    """The VM's system disk: an overlay on the template, or a full copy when configured.

    Called outside any transaction: a full copy can take minutes.
    """
    if settings.vm.full_copy:
        storage.ensure_fits(image.parent, hdd_gb, "the VM image")
        storage.full_copy(source, image)
    else:
        storage.create_overlay(source, image)


def vm_domain_spec(
    settings: Settings, vm: VM, host: Host, template: Template, image: Path, props: VMProperties
) -> domain_xml.DomainSpec:
    nic = domain_xml.NicSpec(
        mac=props.mac_addr,
        bridge=None if settings.network.libvirt_network else settings.network.bridge,
        network=settings.network.libvirt_network or None,
        vlan_tag=props.vlan_tag,
        openvswitch=settings.network.openvswitch and not settings.network.libvirt_network,
    )
    console = storage.console_log_path(settings, vm.datastore, vm.vm_identity)
    console.parent.mkdir(parents=True, exist_ok=True)
    return domain_xml.DomainSpec(
        name=vm.vm_identity,
        uuid=vm_uuid(vm),
        memory_mb=vm.RAM,
        vcpus=vm.vCPU,
        disks=[domain_xml.DiskSpec(str(image))],
        nics=[nic],
        domain_type=host_domain_type(settings, host),
        vnc_port=props.vnc_port,
        vnc_listen=settings.vm.vnc_listen or host.address,
        vnc_password=new_password(),  # told to nobody: each grant sets its own
        kernel=storage.template_boot_file(settings, template, template.boot_kernel),
        initrd=storage.template_boot_file(settings, template, template.boot_initrd),
        cmdline=template.boot_cmdline,
        serial_log=str(console),
        autostart=True,
    )


def host_domain_type(settings: Settings, host: Host) -> str:
    """'kvm' only where a boot probe (with the tiny guest's kernel) proved it works."""
    guest = settings.home / TINY_GUEST_ENTRY
    hv = hypervisor_for(host.libvirt_uri)
    return hv.domain_type(guest / "vmlinuz", guest / "tiny-initrd.gz")


def launch_vm_on_host(hv: Hypervisor, spec: domain_xml.DomainSpec) -> None:
    hv.define(domain_xml.build_domain_xml(spec), autostart=spec.autostart)
    hv.start(spec.name)


def check_if_vm_defined(hv: Hypervisor, vm_name: str) -> bool:
    return hv.is_defined(vm_name)


def update_db_after_vm_installation(
    session: Session, vm: VM, props: VMProperties, requester_id: int | None
) -> None:
    set_status(session, vm, C.VMStatus.RUNNING, requester_id)
    log_vm_event(session, vm, "host", None, vm.host.host_name if vm.host else None, requester_id)
    if props.private_ip:
        log_vm_event(session, vm, "private_ip", None, props.private_ip, requester_id)
    if props.public_ip:
        log_vm_event(session, vm, "public_ip", None, props.public_ip, requester_id)


def free_vm_properties(session: Session, settings: Settings, vm: VM) -> None:
    """Give back everything an install (or a VM) holds. Idempotent."""
    if vm.host is not None:
        with contextlib.suppress(DomainNotFound):
            hypervisor_for(vm.host.libvirt_uri).undefine(vm.vm_identity)
    for disk in session.scalars(select(AttachedDisk).where(AttachedDisk.vm_id == vm.id)):
        datastore = session.get(Datastore, disk.datastore_id)
        storage.remove_path(storage.extra_disk_dir(settings, datastore, vm.vm_identity))
        session.execute(
            update(Datastore)
            .where(Datastore.id == disk.datastore_id)
            .values(used=Datastore.used - disk.capacity)
        )
    session.execute(delete(AttachedDisk).where(AttachedDisk.vm_id == vm.id))
    if vm.datastore is not None:
        storage.remove_path(storage.vm_dir(settings, vm.datastore, vm.vm_identity))
        storage.remove_path(storage.console_log_path(settings, vm.datastore, vm.vm_identity))
        session.execute(
            update(Datastore)
            .where(Datastore.id == vm.datastore_id)
            .values(used=Datastore.used - vm.HDD)
        )
        vm.datastore_id = None
    address_pools.release_private_ip(session, vm.id)
    address_pools.release_public_ip(session, vm.id)
    address_pools.release_vnc_port(session, vm.id)
    vm.host_id = None
    session.flush()


def launch_existing_vm_image(
    session: Session, settings: Settings, vm: VM, *, host_id: int | None = None
) -> VMProperties:
    """Admin: run the image already at the VM's image location as the VM (synchronous).

    The VM row names its datastore; the image must be there (get_vm_image_location).
    Everything else is allocated as for a new VM; on failure it is all given back.
    """
    if vm.datastore is None:
        raise ConflictError(f"VM {vm.vm_name} names no datastore")
    image = storage.get_vm_image_location(settings, vm.datastore, vm.vm_identity)
    if not image.present:
        raise NotFoundError(f"no image at {image.path}")
    template = active_template(session, vm.template_id)
    vm.HDD = storage.virtual_size_gb(image.path) or template.hdd
    session.execute(
        update(Datastore)
        .where(Datastore.id == vm.datastore_id)
        .values(used=Datastore.used + vm.HDD)
    )
    props = allocate_vm_properties(session, vm, host_id=host_id)
    host = session.get(Host, props.host_id)
    hv = hypervisor_for(host.libvirt_uri)
    try:
        launch_vm_on_host(hv, vm_domain_spec(settings, vm, host, template, image.path, props))
    except Exception:
        with contextlib.suppress(DomainNotFound):
            hv.undefine(vm.vm_identity)
        raise
    update_db_after_vm_installation(session, vm, props, None)
    return props


#: a VM an install (or clone) has not finished yet
_NOT_INSTALLED = (C.VMStatus.IN_QUEUE, C.VMStatus.UNKNOWN)


def undo_unfinished_install(ctx: TaskContext, vm_id: int | None) -> None:
    """Give back whatever a lost attempt took for a VM it was making, so the re-run
    starts clean and a task given up holds nothing."""
    if vm_id is None:
        return
    with network_lock(ctx.settings):
        network.withdraw_quietly(ctx.engine, ctx.settings, vm_id)
        with session_scope(ctx.engine) as session:
            vm = session.get(VM, vm_id)
            if vm is not None and vm.status in _NOT_INSTALLED:
                free_vm_properties(session, ctx.settings, vm)
                vm.status = C.VMStatus.IN_QUEUE


def compensate_install(ctx: TaskContext) -> None:
    """A worker died mid-install: undo whatever it did."""
    undo_unfinished_install(ctx, ctx.vm_id)


def reset_vm_for_retry(session: Session, vm_id: int | None) -> None:
    """Admin retry of a failed create or clone: the VM waits to be made again."""
    vm = session.get(VM, vm_id) if vm_id is not None else None
    if vm is not None and vm.status == C.VMStatus.UNKNOWN:
        vm.status = C.VMStatus.IN_QUEUE


def drop_unfinished_vm(session: Session, vm_id: int | None) -> None:
    """Admin ignore of a failed create or clone: the never-made VM row goes away."""
    vm = session.get(VM, vm_id) if vm_id is not None else None
    if vm is not None and vm.status in _NOT_INSTALLED:
        session.delete(vm)


def reset_for_retry(session: Session, task: Task) -> None:
    reset_vm_for_retry(session, task.vm_id)


def drop_on_ignore(session: Session, task: Task) -> None:
    drop_unfinished_vm(session, task.vm_id)


@handler(
    C.TaskType.CREATE_VM,
    compensate=compensate_install,
    on_retry=reset_for_retry,
    on_ignore=drop_on_ignore,
)
def install(ctx: TaskContext[CreateVMParams]) -> TaskResult:
    """The 'Create VM' handler."""
    try:
        with session_scope(ctx.engine) as session:
            vm = load_vm(session, ctx.vm_id)
            if vm.status != C.VMStatus.IN_QUEUE:
                raise ConflictError(f"VM {vm.vm_name} is not waiting to be installed")
            props = allocate_vm_properties(session, vm, host_id=ctx.params.host_id)
        with session_scope(ctx.engine) as session:
            vm = load_vm(session, ctx.vm_id)
            template = active_template(session, vm.template_id)
            source = storage.template_path(ctx.settings, template)
            image = storage.get_vm_image_location(ctx.settings, vm.datastore, vm.vm_identity).path
            spec = vm_domain_spec(ctx.settings, vm, vm.host, template, image, props)
            hv = hypervisor_for(vm.host.libvirt_uri)
            hdd = template.hdd
            net = network.vm_network(vm)
        rrd.forget_rrd(ctx.settings, spec.name)  # a new VM: no history of an old namesake
        create_vm_image(ctx.settings, source, image, hdd)
        with network_lock(ctx.settings):  # the reservation exists before the guest asks
            network.publish(ctx.settings, net)
        launch_vm_on_host(hv, spec)
        if not check_if_vm_defined(hv, spec.name):
            raise ConflictError(f"domain {spec.name} is not defined on the host after install")
        disk_message = ""
        with session_scope(ctx.engine) as session:
            vm = load_vm(session, ctx.vm_id)
            if vm.extra_HDD > 0:
                ok = serve_extra_disk_request(session, ctx.settings, vm, vm.extra_HDD, new_vm=True)
                disk_message = (
                    " Attached extra disk successfully." if ok else " Attached extra disk failed."
                )
            update_db_after_vm_installation(session, vm, props, ctx.requester_id)
    except Exception as exc:
        with network_lock(ctx.settings):
            network.withdraw_quietly(ctx.engine, ctx.settings, ctx.vm_id)
            with session_scope(ctx.engine) as session:
                vm = session.get(VM, ctx.vm_id)
                if vm is not None and vm.status == C.VMStatus.IN_QUEUE:
                    free_vm_properties(session, ctx.settings, vm)
                    set_status(session, vm, C.VMStatus.UNKNOWN, ctx.requester_id)
        return TaskResult.error(exc)
    return TaskResult.success(INSTALL_SUCCESS + disk_message)
