"""Power operations and deletion (the seed's start, suspend, resume, destroy, delete).

Each handler checks the domain's real state first (the host, not the DB, is the truth),
makes the libvirt call, then records the new status with an event log row.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from sqlalchemy import Connection, delete
from sqlalchemy.orm import Session

from baadal import constants as C
from baadal.config import Settings
from baadal.db.models import VM, UserVMMap
from baadal.db.session import session_scope
from baadal.drivers.base import DomainNotFound, Hypervisor
from baadal.errors import ConflictError
from baadal.monitor import rrd
from baadal.tasks.registry import TaskContext, TaskResult, handler
from baadal.vm import network
from baadal.vm.common import (
    PLACED_VM,
    claimed_vm,
    graceful_stop,
    load_vm,
    network_lock,
    placed_hypervisor,
    record_status,
    vm_hypervisor,
)
from baadal.vm.install import free_vm_properties


def _power_op(
    ctx: TaskContext,
    *,
    allowed_from: tuple[C.VMStatus, ...],
    action: Callable[[Hypervisor, str, Settings], None],
    new_status: C.VMStatus,
    done: str,
) -> TaskResult:
    """The shared shape of start/suspend/resume/destroy: check, act, record.

    The new status is recorded with the task's end (one transaction). A later run of the
    task (its earlier run was lost, or an admin retried it) that finds the domain in the
    state the operation makes has nothing left to do but record it.
    """
    try:
        vm = claimed_vm(ctx)
        hv, name, identity = placed_hypervisor(vm), vm.vm_name, vm.vm_identity
        current = hv.domain_info(identity).status
        if current not in allowed_from and not (ctx.attempt > 1 and current == new_status):
            raise ConflictError(f"{name} is {current.name.lower()}; cannot do this now")
        if current != new_status:
            action(hv, identity, ctx.settings)
    except Exception as exc:
        return TaskResult.error(exc, prefix="")

    def record(conn: Connection) -> None:
        record_status(conn, ctx.vm_id, new_status, ctx.requester_id)

    return TaskResult.success(f"{name} is {done} successfully", record)


@handler(C.TaskType.START_VM, reads=PLACED_VM)
def start(ctx: TaskContext) -> TaskResult:
    return _power_op(
        ctx,
        allowed_from=(C.VMStatus.SHUTDOWN,),
        action=lambda hv, name, _s: hv.start(name),
        new_status=C.VMStatus.RUNNING,
        done="started",
    )


@handler(C.TaskType.SUSPEND_VM, reads=PLACED_VM)
def suspend(ctx: TaskContext) -> TaskResult:
    return _power_op(
        ctx,
        allowed_from=(C.VMStatus.RUNNING,),
        action=lambda hv, name, _s: hv.suspend(name),
        new_status=C.VMStatus.SUSPENDED,
        done="suspend",  # the seed's message: "<VM_NAME> is suspend successfully"
    )


@handler(C.TaskType.RESUME_VM, reads=PLACED_VM)
def resume(ctx: TaskContext) -> TaskResult:
    return _power_op(
        ctx,
        allowed_from=(C.VMStatus.SUSPENDED,),
        action=lambda hv, name, _s: hv.resume(name),
        new_status=C.VMStatus.RUNNING,
        done="resumed",
    )


@handler(C.TaskType.DESTROY_VM, reads=PLACED_VM)
def destroy(ctx: TaskContext) -> TaskResult:
    """Hard power off."""
    return _power_op(
        ctx,
        allowed_from=(C.VMStatus.RUNNING, C.VMStatus.SUSPENDED),
        action=lambda hv, name, _s: hv.destroy(name),
        new_status=C.VMStatus.SHUTDOWN,
        done="destroyed",
    )


@handler(C.TaskType.STOP_VM, reads=PLACED_VM)
def stop(ctx: TaskContext) -> TaskResult:
    return _power_op(
        ctx,
        allowed_from=(C.VMStatus.RUNNING, C.VMStatus.SUSPENDED),
        action=graceful_stop,
        new_status=C.VMStatus.SHUTDOWN,
        done="stopped",
    )


def clean_up_database_after_vm_deletion(session: Session, settings: Settings, vm: VM) -> None:
    """Files, addresses, port, datastore space and rows of a deleted VM.

    vm_event_log rows stay (the audit trail outlives the VM); snapshots, disks rows,
    affinity and user maps go with the VM.
    """
    free_vm_properties(session, settings, vm)
    session.execute(delete(UserVMMap).where(UserVMMap.vm_id == vm.id))
    session.delete(vm)


@handler(C.TaskType.DELETE_VM)
def delete_vm(ctx: TaskContext) -> TaskResult:
    """The 'Delete VM' handler: power off, undefine (with snapshots), remove everything."""
    try:
        with session_scope(ctx.engine) as session:
            vm = load_vm(session, ctx.vm_id)
            name, identity = vm.vm_name, vm.vm_identity
            hv = vm_hypervisor(vm) if vm.host is not None else None
        if hv is not None:  # outside the transaction: it can take seconds
            with contextlib.suppress(DomainNotFound):
                hv.undefine(identity)
        with network_lock(ctx.settings):  # no restore in between puts the rules back
            network.withdraw_vm_network(ctx.engine, ctx.settings, ctx.vm_id)
            with session_scope(ctx.engine) as session:
                vm = load_vm(session, ctx.vm_id)
                clean_up_database_after_vm_deletion(session, ctx.settings, vm)
        rrd.forget_rrd(ctx.settings, identity)
    except Exception as exc:
        return TaskResult.error(exc, prefix="")
    return TaskResult.success(f"{name} is deleted successfully")
