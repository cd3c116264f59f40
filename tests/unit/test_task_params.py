"""Typed task parameters: checked at enqueue (nothing written on a mistake), one model and
one handler per task type, handlers typed through ``ctx.params``."""

from __future__ import annotations

import subprocess
import sys

import pytest
from sqlalchemy import Engine, func, select

from baadal import constants as C
from baadal.db.models import Task, TaskEvent
from baadal.db.session import session_scope
from baadal.errors import ValidationError
from baadal.tasks import params as task_params
from baadal.tasks import queue
from baadal.tasks.params import AttachDiskParams, MigrateVMHostParams, PeriodicParams
from baadal.tasks.registry import load_handler_modules

pytestmark = pytest.mark.unit

#: upstream task type names nothing queues or runs yet: refused at enqueue
NOT_IMPLEMENTED = {
    C.TaskType.MIGRATE_VM_DATASTORE,
    C.TaskType.DELETE_TEMPLATE,
    C.TaskType.WARN_SHUTDOWN,
    C.TaskType.WARN_DELETE,
}


def _rows(engine: Engine) -> tuple[int, int]:
    with session_scope(engine) as s:
        return (
            s.scalar(select(func.count()).select_from(Task)),
            s.scalar(select(func.count()).select_from(TaskEvent)),
        )


@pytest.mark.parametrize(
    ("task_type", "parameters", "message"),
    [
        (C.TaskType.ATTACH_DISK, {}, "'Attach Disk': disk_size: Field required"),
        (C.TaskType.ATTACH_DISK, {"disk_size": "big"}, "disk_size: Input should be a valid"),
        (C.TaskType.ATTACH_DISK, {"disk_size": 0}, "disk_size: Input should be greater than"),
        (
            C.TaskType.ATTACH_DISK,
            {"disk_size": 5, "size": 5},
            "'Attach Disk': size: Extra inputs are not permitted",
        ),
        (C.TaskType.START_VM, {"host_id": 1}, "host_id: Extra inputs are not permitted"),
        (C.TaskType.CLONE_VM, {"clone_vm_id": []}, "clone_vm_id: Tuple should have at least 1"),
        (C.TaskType.SNAPSHOT_VM, {"snapshot_type": 99}, "snapshot_type: Input should be"),
        (C.TaskType.SCHEDULED_SNAPSHOTS, {}, "periodic_job: Field required"),
        (C.TaskType.ATTACH_DISK, MigrateVMHostParams(), "takes AttachDiskParams, not Migrate"),
        (C.TaskType.ATTACH_DISK, {"disk_size": 5, "vm_id": 8}, "name VM 8, the task VM 7"),
        ("No Such Task", {}, "unknown task type 'No Such Task'"),
        (C.TaskType.WARN_DELETE, {}, "unknown task type 'Warn Delete'"),
    ],
)
def test_a_bad_parameter_is_refused_with_one_line_and_nothing_written(
    sqlite_engine: Engine, task_type: str, parameters: object, message: str
) -> None:
    with session_scope(sqlite_engine) as s, pytest.raises(ValidationError) as refused:
        queue.enqueue(s, task_type, vm_id=7, parameters=parameters)
    assert message in str(refused.value)
    assert "\n" not in str(refused.value)
    assert _rows(sqlite_engine) == (0, 0)


def test_dicts_and_models_store_the_same_json(sqlite_engine: Engine) -> None:
    with session_scope(sqlite_engine) as s:
        as_dict = queue.enqueue(
            s, C.TaskType.ATTACH_DISK, vm_id=3, parameters={"disk_size": 2}, allow_duplicate=True
        )
        as_model = queue.enqueue(
            s,
            C.TaskType.ATTACH_DISK,
            vm_id=3,
            parameters=AttachDiskParams(disk_size=2),
            allow_duplicate=True,
        )
        assert as_dict.parameters == as_model.parameters == {"disk_size": 2, "vm_id": 3}
        stored = task_params.parse(C.TaskType.ATTACH_DISK, as_dict.parameters)
    assert stored == AttachDiskParams(disk_size=2, vm_id=3)


def test_every_task_type_has_a_model_and_a_handler() -> None:
    registry = load_handler_modules()
    implemented = set(C.TaskType) - NOT_IMPLEMENTED
    assert implemented <= set(task_params.PARAMS)
    assert not NOT_IMPLEMENTED & set(task_params.PARAMS)
    assert {t for t in registry.handlers if t in set(C.TaskType)} == implemented
    # the scheduler's parameters fit every task type a periodic job queues
    for task_type in registry.periodic.values():
        assert issubclass(task_params.PARAMS[task_type], PeriodicParams)


def test_the_queue_checks_parameters_without_the_handler_modules() -> None:
    """A process that only queues tasks (CLI, web) never imports the handlers."""
    code = (
        "import sys\n"
        "from baadal.tasks import queue, params\n"
        "assert not [m for m in sys.modules if m.startswith(('baadal.vm', 'baadal.host'))]\n"
        "try:\n"
        "    params.parse('Attach Disk', {})\n"
        "except Exception as exc:\n"
        "    print(type(exc).__name__, exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == (
        "ValidationError bad parameters for 'Attach Disk': disk_size: Field required"
    )
