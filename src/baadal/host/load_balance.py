"""Moving VMs off hosts short of memory (upstream's vm_loadbalance), through the queue.

Each UP host's memory in use is read from the host (libvirt node memory; a host that
cannot say is left out and named). From each host above ``[balance]
memory_threshold_pct``, the most loaded first, running VMs leave, largest first, until
the host is under the threshold: each goes to the least loaded host that stays under the
threshold with it and that placement accepts (room, affinity). Each move is a 'Migrate VM
Between Hosts' task (upstream migrated outside the queue), and no more are queued than
``[balance] max_migrations`` minus the migrations already queued or running. VMs with a
task of their own waiting are left where they are.

Planning talks to the hosts outside any transaction; queuing recounts the migrations in
its own, and a file lock keeps two balancing runs on the controller from both filling
the same free slots.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from baadal import constants as C
from baadal.config import Settings
from baadal.db.models import VM, Host, Task
from baadal.db.session import session_scope
from baadal.drivers import hypervisor_for
from baadal.errors import BaadalError, ConflictError, user_message
from baadal.filelock import flocked
from baadal.home import secure_home
from baadal.tasks.registry import TaskContext, TaskResult, handler
from baadal.vm import migration

log = logging.getLogger("baadal")

KIB_PER_MB = 1024


@dataclass
class HostLoad:
    host_id: int
    name: str
    total_mb: int
    #: memory in use now, then as the planned moves leave it
    used_mb: int

    @property
    def percent(self) -> float:
        return 100.0 * self.used_mb / self.total_mb if self.total_mb else 100.0


@dataclass(frozen=True)
class PlannedMove:
    vm_id: int
    vm_name: str
    ram_mb: int
    source: str
    dest_id: int
    dest: str


@dataclass
class BalancePlan:
    """The hosts as measured, the moves, and what was left out (with why)."""

    loads: list[HostLoad] = field(default_factory=list)
    moves: list[PlannedMove] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: VM id -> its migration task, once queued
    queued: dict[int, int] = field(default_factory=dict)


def _measure(engine: Engine, plan: BalancePlan) -> None:
    with session_scope(engine) as session:
        hosts = session.execute(
            select(Host.id, Host.host_name, Host.libvirt_uri)
            .where(Host.status == C.HostStatus.UP)
            .order_by(Host.host_name)
        ).all()
    for host_id, name, uri in hosts:
        try:
            memory = hypervisor_for(uri).node_memory_kb()
        except BaadalError as exc:
            plan.notes.append(f"{name}: memory use unknown ({user_message(exc)})")
            continue
        plan.loads.append(
            HostLoad(host_id, name, memory.total_kb // KIB_PER_MB, memory.used_kb // KIB_PER_MB)
        )


def unfinished_migrations(session: Session) -> int:
    return session.scalar(
        select(func.count())
        .select_from(Task)
        .where(Task.task_type == C.TaskType.MIGRATE_VM_HOST, Task.status.in_(C.TASK_UNFINISHED))
    )


def _movable(session: Session, host_id: int) -> list[VM]:
    """Running VMs of the host with nothing queued, largest first."""
    busy = select(Task.vm_id).where(Task.vm_id.is_not(None), Task.status.in_(C.TASK_UNFINISHED))
    return list(
        session.scalars(
            select(VM)
            .where(VM.host_id == host_id, VM.status == C.VMStatus.RUNNING, VM.id.not_in(busy))
            .order_by(VM.RAM.desc(), VM.id)
        )
    )


def _destination(
    session: Session, settings: Settings, vm: VM, source: HostLoad, loads: list[HostLoad]
) -> HostLoad | None:
    threshold = settings.balance.memory_threshold_pct
    for dest in sorted(loads, key=lambda load: load.percent):
        if dest is source:
            continue
        if 100.0 * (dest.used_mb + vm.RAM) / dest.total_mb > threshold:
            continue
        try:
            migration.choose_destination(session, vm, dest.host_id, settings)
        except BaadalError:
            continue
        return dest
    return None


def plan_balance(engine: Engine, settings: Settings) -> BalancePlan:
    """The moves a balancing run would queue now; changes nothing."""
    plan = BalancePlan()
    _measure(engine, plan)
    threshold = settings.balance.memory_threshold_pct
    with session_scope(engine) as session:
        room = settings.balance.max_migrations - unfinished_migrations(session)
        overloaded = sorted(
            (load for load in plan.loads if load.percent > threshold),
            key=lambda load: -load.percent,
        )
        if overloaded and room <= 0:
            plan.notes.append(
                f"{settings.balance.max_migrations} migration(s) already queued or running"
            )
        for source in overloaded:
            for vm in _movable(session, source.host_id):
                if room <= 0 or source.percent <= threshold:
                    break
                dest = _destination(session, settings, vm, source, plan.loads)
                if dest is None:
                    continue
                plan.moves.append(
                    PlannedMove(vm.id, vm.vm_name, vm.RAM, source.name, dest.host_id, dest.name)
                )
                source.used_mb -= vm.RAM
                dest.used_mb += vm.RAM
                room -= 1
            if source.percent > threshold:
                plan.notes.append(f"{source.name}: still above {threshold} % after this run")
    return plan


def balance(engine: Engine, settings: Settings, *, dry_run: bool) -> BalancePlan:
    """Plan and (unless ``dry_run``) queue the moves, one migration task each."""
    secure_home(settings)
    with flocked(settings.home / "balance.lock"):
        plan = plan_balance(engine, settings)
        if dry_run or not plan.moves:
            return plan
        with session_scope(engine) as session:
            room = settings.balance.max_migrations - unfinished_migrations(session)
            for index, move in enumerate(plan.moves):
                if index >= room:
                    plan.notes.append(f"{move.vm_name}: the migration limit was reached meanwhile")
                    continue
                try:
                    with session.begin_nested():
                        task = migration.add_migrate_task_to_queue(
                            session, move.vm_id, move.dest_id, True, C.SYSTEM_USER_ID
                        )
                except ConflictError as exc:  # a task of its own was queued meanwhile
                    plan.notes.append(f"{move.vm_name}: {exc}")
                    continue
                plan.queued[move.vm_id] = task.id
    log.info("load balancing: %d migration(s) queued; %s", len(plan.queued), plan.notes)
    return plan


@handler(C.TaskType.VM_LOADBALANCE, periodic=("vm_loadbalance",))
def vm_loadbalance(ctx: TaskContext) -> TaskResult:
    """The periodic balancing run."""
    plan = balance(ctx.engine, ctx.settings, dry_run=False)
    lines = [f"{m.vm_name}: {m.source} -> {m.dest}" for m in plan.moves if m.vm_id in plan.queued]
    return TaskResult.success("; ".join(lines + plan.notes) or "every host is under the threshold")
