"""Registers the VM task handlers (imported by every worker, see tasks.registry)."""

from __future__ import annotations

from baadal import constants as C
from baadal.tasks.registry import REGISTRY, Handler, periodic_job
from baadal.vm import clone, disk, edit, install, migration, power, snapshot

for handler in (
    Handler(
        C.TaskType.CREATE_VM,
        install.install,
        compensate=install.compensate_install,
        on_retry=install.reset_for_retry,
        on_ignore=install.drop_on_ignore,
    ),
    Handler(C.TaskType.START_VM, power.start),
    Handler(C.TaskType.STOP_VM, power.stop),
    Handler(C.TaskType.SUSPEND_VM, power.suspend),
    Handler(C.TaskType.RESUME_VM, power.resume),
    Handler(C.TaskType.DESTROY_VM, power.destroy),
    Handler(C.TaskType.DELETE_VM, power.delete_vm),
    Handler(C.TaskType.EDIT_VM_CONFIG, edit.edit_vm_config),
    Handler(C.TaskType.SAVE_AS_TEMPLATE, edit.save_as_template),
    Handler(C.TaskType.ATTACH_DISK, disk.attach_extra_disk),
    Handler(C.TaskType.SNAPSHOT_VM, snapshot.snapshot),
    Handler(C.TaskType.REVERT_TO_SNAPSHOT, snapshot.revert),
    Handler(C.TaskType.DELETE_SNAPSHOT, snapshot.delete_snapshot),
    Handler(
        C.TaskType.CLONE_VM,
        clone.clone,
        compensate=clone.compensate_clone,
        on_retry=clone.reset_clones_for_retry,
        on_ignore=clone.drop_clones_on_ignore,
    ),
    Handler(
        C.TaskType.MIGRATE_VM_HOST, migration.migrate, compensate=migration.compensate_migration
    ),
    Handler(C.TaskType.SCHEDULED_SNAPSHOTS, snapshot.schedule_snapshots),
):
    REGISTRY.add(handler)

for job in snapshot.SCHEDULED_KINDS:
    periodic_job(job, C.TaskType.SCHEDULED_SNAPSHOTS)
