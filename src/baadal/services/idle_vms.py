"""Idle and long shut-off VMs for the doors: the checks now (or their dry run), an admin's
lock, a user's answer to a warning. The periodic jobs are in :mod:`baadal.vm.idle_checks`.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from baadal.config import Settings
from baadal.errors import ConflictError
from baadal.services import lookup
from baadal.services.policy import Action, Actor, guarded, require, vm_filter
from baadal.vm import idle_checks
from baadal.vm.common import log_vm_event
from baadal.vm.idle_checks import IdleStep


@dataclass(frozen=True)
class IdleRun:
    """What a run plans and, unless it was a dry run, what it did."""

    steps: list[IdleStep]
    done: list[str]


@guarded(Action.VM_IDLE_CHECK)
def check(engine: Engine, actor: Actor, settings: Settings, *, dry_run: bool) -> IdleRun:
    """Both periodic jobs now (warnings, then destroy/delete where a warning ran out);
    with ``dry_run`` only the list of what they would do."""
    steps = idle_checks.plan_idle_vms(engine, settings)
    done = [] if dry_run else idle_checks.take_idle_steps(engine, steps)
    return IdleRun(steps, done)


@guarded(Action.VM_LOCK)
def set_locked(session: Session, actor: Actor, name_or_id: str | int, locked: bool) -> str:
    """Lock (the idle clean-up leaves the VM alone; its warnings go) or unlock a VM.
    Returns the VM's name."""
    vm = lookup.vm(session, name_or_id)
    if vm.locked != locked:
        log_vm_event(session, vm, "locked", vm.locked, locked, actor.user_id)
        vm.locked = locked
    if locked:
        vm.shutdown_warning_date = vm.delete_warning_date = None
    return vm.vm_name


@guarded(Action.VM_KEEP)
def keep(session: Session, actor: Actor, name_or_id: str | int) -> str:
    """A user of the VM answers its warning: the warning goes, and the checks leave the
    VM alone for the next idle_vm_days. Returns the VM's name."""
    vm = lookup.vm(session, name_or_id, prefer=vm_filter(actor, Action.VM_READ))
    require(session, actor, Action.VM_KEEP, vm, f"VM {vm.vm_name}")
    # the collector takes its step under the same row lock: either it sees the answer, or
    # the answer sees that the warning already ran out and its task is queued
    session.refresh(vm, with_for_update=True)
    if vm.shutdown_warning_date is None and vm.delete_warning_date is None:
        raise ConflictError(f"VM {vm.vm_name} has no idle or shut-off warning to answer")
    vm.shutdown_warning_date = vm.delete_warning_date = None
    log_vm_event(session, vm, idle_checks.EVENT, "warned", idle_checks.KEPT, actor.user_id)
    return vm.vm_name
