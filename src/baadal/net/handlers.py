"""Registers the network task handlers and periodic jobs (imported by every worker)."""

from __future__ import annotations

from baadal import constants as C
from baadal.net import nat
from baadal.tasks.registry import REGISTRY, Handler, periodic_job

REGISTRY.add(Handler(C.TaskType.VNC_EXPIRY, nat.vnc_expiry))
periodic_job("vnc_expiry", C.TaskType.VNC_EXPIRY)
