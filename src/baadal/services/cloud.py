"""The whole cloud for the doors: its state at a glance, and the maintenance shutdown and
bootup of every VM (thin, guarded wrappers over :mod:`baadal.host.maintenance`)."""

from __future__ import annotations

from enum import IntEnum
from typing import TYPE_CHECKING

from sqlalchemy import func, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from baadal import constants as C
from baadal.db.constants_table import get_constant
from baadal.db.models import VM, Base, Datastore, Host, PrivateIpPool, PublicIpPool, Task, Template
from baadal.gcpause import paused_gc
from baadal.services.policy import Action, Actor, guarded

if TYPE_CHECKING:  # the maintenance code (libvirt, SSH) is imported by what uses it:
    # ``baadal status`` reads a few counts and should not pay for it at every start
    from baadal.host.maintenance import Queued


def _counts(session: Session, column: InstrumentedAttribute[int], enum: type[IntEnum]) -> str:
    rows = session.execute(select(column, func.count()).group_by(column)).all()
    if not rows:
        return "none"
    return ", ".join(f"{enum(value).name.lower()} {n}" for value, n in sorted(rows))


def _total(session: Session, model: type[Base]) -> int:
    return session.scalar(select(func.count()).select_from(model)) or 0


@guarded(Action.CLOUD_MANAGE, reads=True)
def summary(session: Session, actor: Actor) -> list[tuple[str, str]]:
    """(what, state) lines: the cloud's status, hosts, VMs, pools and tasks."""
    return [
        ("baadal status", get_constant(session, C.BAADAL_STATUS_KEY)),
        ("hosts", f"{_total(session, Host)} ({_counts(session, Host.status, C.HostStatus)})"),
        ("VMs", f"{_total(session, VM)} ({_counts(session, VM.status, C.VMStatus)})"),
        ("datastores", str(_total(session, Datastore))),
        ("templates", str(_total(session, Template))),
        ("private IPs", str(_total(session, PrivateIpPool))),
        ("public IPs", str(_total(session, PublicIpPool))),
        ("tasks", f"{_total(session, Task)} ({_counts(session, Task.status, C.TaskStatus)})"),
    ]


@guarded(Action.CLOUD_MANAGE)
def shutdown(session: Session, actor: Actor) -> Queued:
    """Queue snapshot-and-power-off of every VM; the cloud is 'down-progress' meanwhile.
    (Cloud-wide rows without a reference cycle: the collector waits, see gcpause.)"""
    from baadal.host import maintenance

    with paused_gc():
        return maintenance.shutdown_baadal(session)


@guarded(Action.CLOUD_MANAGE)
def bootup(session: Session, actor: Actor) -> Queued:
    """Queue revert-and-resume of every VM the shutdown snapshotted."""
    from baadal.host import maintenance

    with paused_gc():
        return maintenance.bootup_baadal(session)


@guarded(Action.CLOUD_MANAGE)
def finish(session: Session, actor: Actor, *, shutdown: bool) -> None:
    """Record the cloud as down (after a shutdown) or up (after a bootup)."""
    from baadal.host import maintenance

    maintenance.finish(session, shutdown)
