"""Idle and long shut-off VMs (upstream's vm_daily_checks and vm_garbage_collector).

The daily check warns the users of a running VM older than ``idle_vm_days`` whose RRD
history over that window never reached the CPU or network thresholds (and has data for
at least ``C.IDLE_MIN_KNOWN`` of it: a VM nobody measured is not idle), and of a VM shut
off for ``shutdown_vm_days``. The warning is the VM row's deadline (upstream's columns:
``shutdown_warning_date`` for idle VMs, ``delete_warning_date`` for shut-off ones) and a
mail. Once the deadline passes, the garbage collector queues 'Destroy VM' for a VM still
idle and 'Delete VM' for one still shut off; any other VM just loses its warning.

An admin's lock (``locked``) keeps a VM out of all this; a user's "keep" clears the
warning and keeps the VM out for the next ``idle_vm_days`` (an event in the VM's log).

Planning reads the rows in one short transaction and the RRD files outside any; each
step then runs in its own transaction and only if the VM still looks as planned (a user
who keeps the VM meanwhile wins). A dry run is the plan alone.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from baadal import constants as C
from baadal.config import Settings
from baadal.db.models import VM, VMEventLog
from baadal.db.session import session_scope
from baadal.errors import BaadalError, ConflictError, user_message
from baadal.mail import notify
from baadal.monitor.rrd import fetch_rrd_peaks
from baadal.tasks import queue
from baadal.tasks.registry import TaskContext, TaskResult, handler
from baadal.timeutil import utcnow
from baadal.vm.common import log_vm_event

log = logging.getLogger("baadal")

#: the VM event log attribute of warnings and answers
EVENT = "idle check"
KEPT = "kept"
#: the kinds notify.idle_warning is told
IDLE, SHUTDOWN = "idle", "shutdown"


class IdleAction(StrEnum):
    WARN_IDLE = "warn: idle"
    WARN_SHUTDOWN = "warn: shut off"
    DESTROY = "destroy"
    DELETE = "delete"
    CLEAR = "clear warning"


@dataclass(frozen=True)
class IdleStep:
    """One thing the next run does to one VM, and what the VM must still look like."""

    vm_id: int
    vm_name: str
    action: IdleAction
    reason: str
    #: the warning's deadline (warnings), or the deadline that ran out
    deadline: datetime | None
    status: int
    shutdown_warning: datetime | None
    delete_warning: datetime | None


@dataclass(frozen=True)
class _Candidate:
    vm_id: int
    vm_name: str
    identity: str
    status: int
    start_time: datetime
    shutdown_warning: datetime | None
    delete_warning: datetime | None
    #: when its status last changed (None: never since it was made)
    status_since: datetime | None
    kept: bool


def _candidates(engine: Engine, settings: Settings, now: datetime) -> list[_Candidate]:
    kept_since = now - timedelta(days=settings.general.idle_vm_days)
    with session_scope(engine) as session:
        status_since = (
            select(VMEventLog.vm_id, func.max(VMEventLog.timestamp).label("since"))
            .where(VMEventLog.attribute == "status")
            .group_by(VMEventLog.vm_id)
            .subquery()
        )
        kept = set(
            session.scalars(
                select(VMEventLog.vm_id).where(
                    VMEventLog.attribute == EVENT,
                    VMEventLog.new_value == KEPT,
                    VMEventLog.timestamp > kept_since,
                )
            )
        )
        rows = session.execute(
            select(VM, status_since.c.since)
            .outerjoin(status_since, status_since.c.vm_id == VM.id)
            .where(
                VM.locked.is_(False),
                VM.status.in_((C.VMStatus.RUNNING, C.VMStatus.SHUTDOWN)),
            )
            .order_by(VM.id)
        ).all()
        return [
            _Candidate(
                vm.id,
                vm.vm_name,
                vm.vm_identity,
                vm.status,
                vm.start_time,
                vm.shutdown_warning_date,
                vm.delete_warning_date,
                since,
                vm.id in kept,
            )
            for vm, since in rows
        ]


def idle_verdict(settings: Settings, identity: str, now: datetime) -> tuple[bool, str]:
    """Whether the VM stayed under every threshold for the last idle_vm_days, and why."""
    conf = settings.general
    end = int(now.replace(tzinfo=UTC).timestamp())  # naive UTC, as stored
    try:
        peaks = fetch_rrd_peaks(settings, identity, end - conf.idle_vm_days * 86400, end)
    except BaadalError as exc:
        return False, user_message(exc)
    if peaks.known < C.IDLE_MIN_KNOWN:
        return False, f"history covers {peaks.known:.0%} of {conf.idle_vm_days} days"
    cpu, rx, tx = peaks.cpu or 0.0, peaks.rx or 0.0, peaks.tx or 0.0
    reason = (
        f"peaks over {conf.idle_vm_days} days: CPU {cpu:.1f} %, "
        f"received {rx:.0f} B/s, sent {tx:.0f} B/s"
    )
    idle = (
        cpu < conf.cpu_threshold_limit
        and rx < conf.nw_read_threshold_limit
        and tx < conf.nw_write_threshold_limit
    )
    return idle, reason


def _off_since(vm: _Candidate) -> datetime:
    return vm.status_since or vm.start_time


def _step(
    vm: _Candidate, settings: Settings, now: datetime, *, warn: bool, collect: bool
) -> IdleStep | None:
    conf = settings.general

    def step(action: IdleAction, reason: str, deadline: datetime | None) -> IdleStep:
        return IdleStep(
            vm.vm_id,
            vm.vm_name,
            action,
            reason,
            deadline,
            vm.status,
            vm.shutdown_warning,
            vm.delete_warning,
        )

    long_off = now - timedelta(days=conf.shutdown_vm_days)
    due = [d for d in (vm.shutdown_warning, vm.delete_warning) if d is not None and d <= now]
    if due:
        if not collect:
            return None
        if vm.shutdown_warning in due and vm.status == C.VMStatus.RUNNING:
            idle, reason = idle_verdict(settings, vm.identity, now)
            if idle:
                return step(IdleAction.DESTROY, f"still idle; {reason}", vm.shutdown_warning)
            return step(IdleAction.CLEAR, f"no longer idle: {reason}", vm.shutdown_warning)
        if vm.delete_warning in due and vm.status == C.VMStatus.SHUTDOWN:
            since = _off_since(vm)
            if since <= long_off:
                return step(
                    IdleAction.DELETE, f"shut off since {since:%Y-%m-%d}", vm.delete_warning
                )
        return step(IdleAction.CLEAR, "started or stopped since the warning", due[0])
    if not warn or vm.kept or vm.shutdown_warning or vm.delete_warning:
        return None
    deadline = now + timedelta(days=conf.idle_warning_days)
    if vm.status == C.VMStatus.RUNNING:
        if vm.start_time > now - timedelta(days=conf.idle_vm_days):
            return None
        idle, reason = idle_verdict(settings, vm.identity, now)
        return step(IdleAction.WARN_IDLE, reason, deadline) if idle else None
    since = _off_since(vm)
    if since <= long_off:
        return step(IdleAction.WARN_SHUTDOWN, f"shut off since {since:%Y-%m-%d}", deadline)
    return None


def plan_idle_vms(
    engine: Engine,
    settings: Settings,
    now: datetime | None = None,
    *,
    warn: bool = True,
    collect: bool = True,
) -> list[IdleStep]:
    """What a run at ``now`` does: warnings (``warn``) and what happens to the VMs whose
    warning ran out (``collect``). Changes nothing."""
    now = now or utcnow()
    steps = []
    for vm in _candidates(engine, settings, now):
        found = _step(vm, settings, now, warn=warn, collect=collect)
        if found is not None:
            steps.append(found)
    return steps


def _unchanged(vm: VM, step: IdleStep) -> bool:
    return (
        not vm.locked
        and vm.status == step.status
        and vm.shutdown_warning_date == step.shutdown_warning
        and vm.delete_warning_date == step.delete_warning
    )


#: the task each collecting step queues
_TASKS = {IdleAction.DESTROY: C.TaskType.DESTROY_VM, IdleAction.DELETE: C.TaskType.DELETE_VM}


def _warn(session: Session, vm: VM, step: IdleStep) -> str:
    assert step.deadline is not None
    kind = IDLE if step.action == IdleAction.WARN_IDLE else SHUTDOWN
    if kind == IDLE:
        vm.shutdown_warning_date = step.deadline
    else:
        vm.delete_warning_date = step.deadline
    log_vm_event(session, vm, EVENT, None, f"{kind} warning until {step.deadline:%Y-%m-%d}")
    notify.idle_warning(session, vm, kind, step.deadline)
    return f"{step.vm_name}: warned ({kind}) until {step.deadline:%Y-%m-%d %H:%M}"


def _take(engine: Engine, step: IdleStep) -> str:
    """Take one step in its own transaction; what happened, in words."""
    with session_scope(engine) as session:
        vm = session.get(VM, step.vm_id, with_for_update=True)
        if vm is None or not _unchanged(vm, step):
            return f"{step.vm_name}: changed meanwhile, left alone"
        if step.action not in _TASKS and step.action != IdleAction.CLEAR:
            return _warn(session, vm, step)
        done = f"warning cleared ({step.reason})"
        if step.action in _TASKS:
            task = queue.enqueue(
                session, _TASKS[step.action], vm_id=vm.id, requester_id=C.SYSTEM_USER_ID
            )
            done = f"{step.action.value} queued (task {task.id})"
        vm.shutdown_warning_date = vm.delete_warning_date = None
        log_vm_event(session, vm, EVENT, "warned", step.action.value)
        return f"{step.vm_name}: {done}"


def take_idle_steps(engine: Engine, steps: list[IdleStep]) -> list[str]:
    """Take the planned steps; a VM with a conflicting task queued is left for next time."""
    done = []
    for step in steps:
        try:
            done.append(_take(engine, step))
        except ConflictError as exc:
            done.append(f"{step.vm_name}: {exc}; left for the next run")
    for line in done:
        log.info("idle VMs: %s", line)
    return done


def _run(ctx: TaskContext, *, warn: bool, collect: bool) -> TaskResult:
    steps = plan_idle_vms(ctx.engine, ctx.settings, warn=warn, collect=collect)
    done = take_idle_steps(ctx.engine, steps)
    return TaskResult.success("; ".join(done) if done else "nothing to do")


@handler(C.TaskType.VM_DAILY_CHECKS, periodic=("vm_daily_checks",))
def vm_daily_checks(ctx: TaskContext) -> TaskResult:
    """Warn the users of idle and long shut-off VMs."""
    return _run(ctx, warn=True, collect=False)


@handler(C.TaskType.VM_GARBAGE_COLLECTOR, periodic=("vm_garbage_collector",))
def vm_garbage_collector(ctx: TaskContext) -> TaskResult:
    """Destroy the still idle and delete the still shut-off VMs whose warning ran out."""
    return _run(ctx, warn=False, collect=True)
