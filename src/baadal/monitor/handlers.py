"""Registers the monitoring task handler and its periodic job (imported by every worker)."""

from __future__ import annotations

from baadal import constants as C
from baadal.monitor import rrd
from baadal.tasks.registry import REGISTRY, Handler, TaskContext, TaskResult, periodic_job


def collect_rrds(ctx: TaskContext) -> TaskResult:
    """The periodic 'Update RRD' handler (the seed's vm_util_rrd and rrd_task): fails only
    when there were hosts and none of them could be read."""
    report = rrd.update_all_rrds(ctx.engine, ctx.settings)
    if report.failures and not report.hosts:
        return TaskResult.failed(C.TASK_FAILED_PREFIX + report.summary())
    return TaskResult.success(report.summary())


REGISTRY.add(Handler(C.TaskType.UPDATE_RRD, collect_rrds))
periodic_job("rrd", C.TaskType.UPDATE_RRD)
