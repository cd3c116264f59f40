"""Registers the monitoring task handler and its periodic job (imported by every worker)."""

from __future__ import annotations

from baadal import constants as C
from baadal.monitor import rrd
from baadal.tasks.registry import REGISTRY, Handler, TaskContext, TaskResult, periodic_job


def collect_rrds(ctx: TaskContext) -> TaskResult:
    """The periodic 'Update RRD' handler (the seed's vm_util_rrd and rrd_task): a partial
    success when some machines could not be read, failed when none could."""
    report = rrd.update_all_rrds(ctx.engine, ctx.settings)
    if not report.failures:
        return TaskResult.success(report.summary())
    if report.hosts or report.machines:
        return TaskResult(C.TaskStatus.PARTIAL_SUCCESS, report.summary())
    return TaskResult.failed(C.TASK_FAILED_PREFIX + report.summary())


REGISTRY.add(Handler(C.TaskType.UPDATE_RRD, collect_rrds))
periodic_job("rrd", C.TaskType.UPDATE_RRD)
