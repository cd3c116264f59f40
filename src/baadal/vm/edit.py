"""Changing a VM: edit_vm_config (RAM, vCPU, public IP, security domain) and
save-as-template.

RAM and vCPU change the persistent definition, so the VM must be shut off (as upstream).
Every edited item adds its own "Edited ... successfully." to the task message.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from baadal import address_pools
from baadal import constants as C
from baadal.db.models import VM, Template, TemplateOwner, UserVMMap
from baadal.db.session import session_scope
from baadal.errors import ConflictError, ValidationError
from baadal.tasks.params import EditVMConfigParams
from baadal.tasks.registry import TaskContext, TaskResult, handler
from baadal.vm import nat, network, storage
from baadal.vm.common import load_vm, log_vm_event, network_lock, vm_hypervisor


def check_ram_vcpus(ram_mb: int | None, vcpus: int | None) -> None:
    if ram_mb is not None and ram_mb not in C.ALLOWED_RAM_MB:
        raise ValidationError(f"RAM must be one of {', '.join(map(str, C.ALLOWED_RAM_MB))} MB")
    if vcpus is not None and vcpus not in C.ALLOWED_VCPUS:
        raise ValidationError(f"vCPUs must be one of {', '.join(map(str, C.ALLOWED_VCPUS))}")


@handler(C.TaskType.EDIT_VM_CONFIG)
def edit_vm_config(ctx: TaskContext[EditVMConfigParams]) -> TaskResult:
    """The 'Edit VM Config' handler: libvirt, the NAT box and DHCP are called outside
    transactions."""
    ram, vcpus = ctx.params.ram, ctx.params.vcpus
    public_ip, domain_id = ctx.params.public_ip, ctx.params.security_domain
    messages = []
    try:
        check_ram_vcpus(ram, vcpus)
        with session_scope(ctx.engine) as session:
            vm = load_vm(session, ctx.vm_id)
            hv, identity = vm_hypervisor(vm), vm.vm_identity
        if ram is not None or vcpus is not None:
            if hv.domain_info(identity).status != C.VMStatus.SHUTDOWN:
                raise ConflictError(f"{vm.vm_name} must be shut off to change RAM or vCPUs")
            hv.set_memory_and_vcpus(identity, ram, vcpus)
            with session_scope(ctx.engine) as session:
                vm = load_vm(session, ctx.vm_id)
                if ram is not None:
                    log_vm_event(session, vm, "RAM", vm.RAM, ram, ctx.requester_id)
                    vm.RAM = ram
                    messages.append("Edited RAM successfully.")
                if vcpus is not None:
                    log_vm_event(session, vm, "vCPU", vm.vCPU, vcpus, ctx.requester_id)
                    vm.vCPU = vcpus
                    messages.append("Edited vCPU successfully.")
        if public_ip is not None and _edit_public_ip(ctx, attach=bool(public_ip)):
            messages.append("Edited public IP successfully.")
        if domain_id is not None:
            messages.append(
                network.update_security_domain(
                    ctx.engine, ctx.settings, ctx.vm_id, domain_id, ctx.requester_id
                )
            )
    except Exception as exc:
        return TaskResult.error(exc, prefix="".join(f"{m} " for m in messages))
    if not messages:
        return TaskResult.failed("nothing to edit: the VM already has this configuration")
    return TaskResult.success(" ".join(messages))


def _edit_public_ip(ctx: TaskContext, *, attach: bool) -> bool:
    """Attach: take an address, then map it on the NAT box (undone if mapping fails).
    Detach: unmap first, then give the address back. False when nothing was to do."""
    with network_lock(ctx.settings):  # a restore sees the address before or after
        with session_scope(ctx.engine) as session:
            vm = load_vm(session, ctx.vm_id)
            if (vm.public_ip_id is not None) == attach:
                return False
            if attach:
                ip = address_pools.allocate_public_ip(session, vm.id)
                vm.public_ip_wanted = True
                log_vm_event(session, vm, "public_ip", None, ip, ctx.requester_id)
        if attach:
            try:
                nat.create_public_ip_mapping_in_nat(ctx.engine, ctx.settings, ctx.vm_id)
            except Exception:
                with session_scope(ctx.engine) as session:
                    vm = load_vm(session, ctx.vm_id)
                    address_pools.release_public_ip(session, vm.id)
                    vm.public_ip_wanted = False
                raise
            return True
        nat.remove_public_ip_mapping_from_nat(ctx.engine, ctx.settings, ctx.vm_id)
        with session_scope(ctx.engine) as session:
            vm = load_vm(session, ctx.vm_id)
            ip = address_pools.release_public_ip(session, vm.id)
            vm.public_ip_wanted = False
            log_vm_event(session, vm, "public_ip", ip, None, ctx.requester_id)
        return True


def _saved_template_name(session: Session, vm: VM) -> str:
    """The name the VM's template will get; refuses a second one or a taken name."""
    if vm.saved_template_id is not None:
        raise ConflictError(f"{vm.vm_name} already has a saved template")
    name = f"{vm.vm_name}_template"[:30]
    if session.scalar(select(Template.id).where(Template.name == name)) is not None:
        raise ConflictError(f"a template named {name} already exists")
    return name


@handler(C.TaskType.SAVE_AS_TEMPLATE)
def save_as_template(ctx: TaskContext) -> TaskResult:
    """The 'Save As Template' handler: a standalone image + a private template row.

    The VM must be shut off: a copy of a running disk is not consistent. The copy is made
    outside any transaction into a file of this task's own and renamed into place only
    once the template row is written, so a rival run never loses or overwrites it.
    """
    try:
        with session_scope(ctx.engine) as session:
            vm = load_vm(session, ctx.vm_id)
            _saved_template_name(session, vm)
            hv, identity, vm_name = vm_hypervisor(vm), vm.vm_identity, vm.vm_name
            relative = f"saved/{identity}_template.qcow2"
            source = storage.get_vm_image_location(ctx.settings, vm.datastore, identity).path
            dest = storage.template_file(ctx.settings, vm.datastore, relative)
        if hv.domain_info(identity).status != C.VMStatus.SHUTDOWN:
            raise ConflictError(f"{vm_name} must be shut off to be saved as a template")
        partial = dest.with_name(f"{dest.name}.task{ctx.task_id}")
        try:
            storage.full_copy(source, partial)
            with session_scope(ctx.engine) as session:
                vm = load_vm(session, ctx.vm_id)
                name = _saved_template_name(session, vm)
                _add_saved_template(session, vm, name, relative, ctx.requester_id)
                partial.replace(dest)
        finally:
            storage.remove_path(partial)
    except Exception as exc:
        return TaskResult.error(exc)
    return TaskResult.success(f"Saved {vm_name} as template {name} successfully")


def _add_saved_template(
    session: Session, vm: VM, name: str, relative: str, requester_id: int | None
) -> None:
    base = vm.template
    template = Template(
        name=name,
        os=base.os,
        os_name=base.os_name,
        os_version=base.os_version,
        os_type=base.os_type,
        arch=base.arch,
        hdd=vm.HDD,
        hdfile=relative,
        type=C.TemplateDiskType.QCOW2,
        datastore_id=vm.datastore_id,
        boot_kernel=base.boot_kernel,
        boot_initrd=base.boot_initrd,
        boot_cmdline=base.boot_cmdline,
    )
    session.add(template)
    session.flush()
    for user_id in session.scalars(select(UserVMMap.user_id).where(UserVMMap.vm_id == vm.id)):
        session.add(TemplateOwner(template_id=template.id, user_id=user_id))
    vm.saved_template_id = template.id
    log_vm_event(session, vm, "saved template", None, name, requester_id)
