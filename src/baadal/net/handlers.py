"""Registers the network task handlers and periodic jobs (imported by every worker)."""

from __future__ import annotations

from baadal import constants as C
from baadal.tasks.registry import REGISTRY, Handler, periodic_job
from baadal.vm import network

REGISTRY.add(Handler(C.TaskType.NETWORK_SANITY, network.network_sanity))
periodic_job("vnc_expiry", C.TaskType.NETWORK_SANITY)
