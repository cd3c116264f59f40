"""The parameters each task type takes, checked when the task is queued.

``task_queue.parameters`` is JSON; a task type's model says which keys it holds and their
types, so a wrong key is refused by the caller's ``enqueue`` (nothing is written) instead
of failing later in a worker. The queue imports this module, not the handler modules: a
process that only queues tasks still checks them. Task types outside ``C.TaskType``
(tests, plugins) declare their model with ``handler(..., params=...)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field

from baadal import constants as C
from baadal.errors import ValidationError


class TaskParams(BaseModel):
    """Base of every model: frozen, unknown keys refused."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: upstream keeps the VM id in the parameters too; the queue fills it from the task
    vm_id: int | None = None


class NoParams(TaskParams):
    """Task types whose only input is the VM (power operations, maintenance steps)."""


class PeriodicParams(TaskParams):
    """Periodic task types: the scheduler says which job fired and for which slot."""

    periodic_job: str | None = None
    slot: datetime | None = None


class CreateVMParams(TaskParams):
    #: the host the admin chose; None lets placement choose
    host_id: int | None = None


class EditVMConfigParams(TaskParams):
    """Only the keys that change are set (upstream: 'Edit -> only changed keys')."""

    ram: int | None = None
    vcpus: int | None = None
    public_ip: bool | None = None
    #: security domain id
    security_domain: int | None = None


class AttachDiskParams(TaskParams):
    disk_size: Annotated[int, Field(ge=C.EXTRA_DISK_GB_RANGE[0], le=C.EXTRA_DISK_GB_RANGE[1])]


class SnapshotVMParams(TaskParams):
    snapshot_type: C.SnapshotType = C.SnapshotType.USER


class SnapshotIdParams(TaskParams):
    """Revert to or delete one snapshot row."""

    snapshot_id: int


class CloneVMParams(TaskParams):
    #: the clone rows made when the task was queued (upstream's key name)
    clone_vm_id: Annotated[tuple[int, ...], Field(min_length=1)]
    full: bool = False


class MigrateVMHostParams(TaskParams):
    #: None lets placement choose
    destination_host: int | None = None
    live_migration: bool = True
    #: where the VM was when queued, so a re-run can tell a migration that already happened
    source_host: int | None = None


class HostPowerParams(TaskParams):
    host_id: int
    action: Literal[C.HOST_POWER_ACTIONS]  # type: ignore[valid-type]


class ScheduledSnapshotsParams(PeriodicParams):
    #: the job names which snapshot kind to take
    periodic_job: str


#: task type -> its model; the types nothing implements yet have none and are refused
PARAMS: dict[str, type[TaskParams]] = {
    C.TaskType.CREATE_VM: CreateVMParams,
    C.TaskType.START_VM: NoParams,
    C.TaskType.STOP_VM: NoParams,
    C.TaskType.SUSPEND_VM: NoParams,
    C.TaskType.RESUME_VM: NoParams,
    C.TaskType.DELETE_VM: NoParams,
    C.TaskType.DESTROY_VM: NoParams,
    C.TaskType.DELETE_SNAPSHOT: SnapshotIdParams,
    C.TaskType.REVERT_TO_SNAPSHOT: SnapshotIdParams,
    C.TaskType.EDIT_VM_CONFIG: EditVMConfigParams,
    C.TaskType.SNAPSHOT_VM: SnapshotVMParams,
    C.TaskType.CLONE_VM: CloneVMParams,
    C.TaskType.ATTACH_DISK: AttachDiskParams,
    C.TaskType.MIGRATE_VM_HOST: MigrateVMHostParams,
    C.TaskType.SAVE_AS_TEMPLATE: NoParams,
    C.TaskType.SCHEDULED_SNAPSHOTS: ScheduledSnapshotsParams,
    C.TaskType.HOST_SANITY: PeriodicParams,
    C.TaskType.VM_SANITY: PeriodicParams,
    C.TaskType.MAINTENANCE_SHUTDOWN_VM: NoParams,
    C.TaskType.MAINTENANCE_BOOTUP_VM: NoParams,
    C.TaskType.NETWORK_SANITY: PeriodicParams,
    C.TaskType.UPDATE_RRD: PeriodicParams,
    C.TaskType.HOST_NETWORK_GRAPH: PeriodicParams,
    C.TaskType.VM_DAILY_CHECKS: PeriodicParams,
    C.TaskType.VM_GARBAGE_COLLECTOR: PeriodicParams,
    C.TaskType.VM_LOADBALANCE: PeriodicParams,
    C.TaskType.SEND_MAIL: PeriodicParams,
    C.TaskType.AUDIT_RETENTION: PeriodicParams,
    C.TaskType.HOST_POWER: HostPowerParams,
}


def register(task_type: str, model: type[TaskParams]) -> None:
    """Declare the model of a task type ``C.TaskType`` does not know; a known type keeps
    its model (two models for one type would make stored rows ambiguous)."""
    known = PARAMS.setdefault(task_type, model)
    if known is not model:
        raise ValueError(f"task type {str(task_type)!r} already takes {known.__name__}")


def model_of(task_type: str) -> type[TaskParams]:
    try:
        return PARAMS[task_type]
    except KeyError:
        raise ValidationError(f"unknown task type {str(task_type)!r}") from None


def _one_line(task_type: str, exc: pydantic.ValidationError) -> str:
    problems = "; ".join(
        f"{'.'.join(map(str, error['loc'])) or 'parameters'}: {error['msg']}"
        for error in exc.errors()
    )
    return f"bad parameters for {str(task_type)!r}: {problems}"


def parse(task_type: str, parameters: TaskParams | Mapping[str, Any] | None) -> TaskParams:
    """The typed parameters of a ``task_type`` task; a mistake is one ValidationError line."""
    model = model_of(task_type)
    if isinstance(parameters, TaskParams):
        if type(parameters) is not model:
            raise ValidationError(
                f"{str(task_type)!r} takes {model.__name__}, not {type(parameters).__name__}"
            )
        return parameters
    try:
        return model.model_validate(dict(parameters or {}))
    except pydantic.ValidationError as exc:
        raise ValidationError(_one_line(task_type, exc)) from None
