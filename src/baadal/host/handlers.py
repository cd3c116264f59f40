"""Registers the host task handlers and periodic jobs (imported by every worker)."""

from __future__ import annotations

from baadal import constants as C
from baadal.host import maintenance, network_graph, status, vms
from baadal.tasks.registry import REGISTRY, Handler, periodic_job

REGISTRY.add(Handler(C.TaskType.HOST_SANITY, status.host_sanity))
REGISTRY.add(Handler(C.TaskType.VM_SANITY, vms.vm_sanity))
periodic_job("host_sanity", C.TaskType.HOST_SANITY)
periodic_job("vm_sanity", C.TaskType.VM_SANITY)
REGISTRY.add(Handler(C.TaskType.MAINTENANCE_SHUTDOWN_VM, maintenance.maintenance_shutdown_vm))
REGISTRY.add(Handler(C.TaskType.MAINTENANCE_BOOTUP_VM, maintenance.maintenance_bootup_vm))
REGISTRY.add(Handler(C.TaskType.HOST_NETWORK_GRAPH, network_graph.network_graph_task))
periodic_job("network_graph", C.TaskType.HOST_NETWORK_GRAPH)
