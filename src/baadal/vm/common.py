"""What every VM handler needs: the VM row, its host's hypervisor, the event log, a
graceful stop."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any, NamedTuple

from sqlalchemy import (
    ColumnElement,
    Connection,
    Executable,
    Insert,
    Row,
    Select,
    bindparam,
    case,
    insert,
    select,
    update,
)
from sqlalchemy.orm import Session
from sqlalchemy.orm.interfaces import ORMOption

from baadal import constants as C
from baadal.config import Settings
from baadal.db.models import VM, Host, VMEventLog
from baadal.db.session import session_scope
from baadal.drivers import hypervisor_for
from baadal.drivers.base import Hypervisor
from baadal.errors import ConflictError, NotFoundError
from baadal.filelock import flocked
from baadal.home import secure_home
from baadal.tasks.registry import TaskContext
from baadal.timeutil import utcnow

STOP_POLL_S = 0.5


@contextlib.contextmanager
def network_lock(settings: Settings) -> Iterator[None]:
    """Held by a change of a VM's addresses from its database change to its last write on
    the DHCP server and the NAT box, and by a restore from its database read to its last
    write: so a restore never writes back a picture a concurrent change made stale (a
    deleted VM's NAT rule). Across processes (the workers run on the controller); not
    re-entrant."""
    secure_home(settings)
    with flocked(settings.home / "network.lock"):
        yield


def load_vm(session: Session, vm_id: int | None, *options: ORMOption) -> VM:
    """The VM (loaded with ``options``, e.g. its host joined), or NotFoundError."""
    vm = session.get(VM, vm_id, options=options) if vm_id is not None else None
    if vm is None:
        raise NotFoundError(f"no VM with id {vm_id}")
    return vm


class PlacedVM(NamedTuple):
    """What a handler needs to act on a VM's domain: its names and its host's."""

    vm_name: str
    vm_identity: str
    host_name: str | None
    host_status: int | None
    libvirt_uri: str | None
    vnc_port: int | None


PLACED_VM_COLUMNS = (
    VM.vm_name, VM.vm_identity, Host.host_name, Host.status, Host.libvirt_uri, VM.vnc_port
)  # fmt: skip


def placed_vm_query(*more: ColumnElement[Any]) -> Select[Any]:
    """The VM ``:vm_id`` with its host's names (and ``more`` columns after them): a
    statement to build once (no ORM rows: a handler that acts on a domain needs no
    more)."""
    return (
        select(*PLACED_VM_COLUMNS, *more)
        .outerjoin(Host, Host.id == VM.host_id)
        .where(VM.id == bindparam("vm_id"))
    )


#: a handler's ``reads`` for :func:`claimed_vm`
PLACED_VM = placed_vm_query()


def find_placed_vm(session: Session, vm_id: int | None) -> PlacedVM | None:
    row = session.connection().execute(PLACED_VM, {"vm_id": vm_id}).first()
    return None if row is None else PlacedVM(*row)


def claimed_row(ctx: TaskContext[Any], query: Executable, **values: object) -> Row[Any]:
    """The row of the handler's ``reads`` (``query``): the one the claim read, or (not
    claimed by a worker, or no row then) read now; NotFoundError when the VM is gone."""
    row = ctx.read
    if row is None:
        with session_scope(ctx.engine, read=True) as session:
            bound = {"vm_id": ctx.vm_id, **values}
            row = session.connection().execute(query, bound).first()
    if row is None:
        raise NotFoundError(f"no VM with id {ctx.vm_id}")
    return row


def claimed_vm(ctx: TaskContext[Any]) -> PlacedVM:
    """The task's VM and its host's names, for a handler that ``reads=PLACED_VM``."""
    return PlacedVM(*claimed_row(ctx, PLACED_VM))


def _hypervisor(
    vm_name: str, host_name: str | None, status: int | None, uri: str | None
) -> Hypervisor:
    """The hypervisor of an UP host (or one in maintenance: its VMs are still being
    stopped or moved away); a clear error when there is none."""
    if host_name is None or uri is None:
        raise ConflictError(f"VM {vm_name} is not placed on any host")
    if status not in (C.HostStatus.UP, C.HostStatus.MAINTENANCE):
        raise ConflictError(f"host {host_name} is {C.HostStatus(status).name}")
    return hypervisor_for(uri)


def vm_hypervisor(vm: VM) -> Hypervisor:
    host = vm.host
    if host is None:
        return _hypervisor(vm.vm_name, None, None, None)
    return _hypervisor(vm.vm_name, host.host_name, host.status, host.libvirt_uri)


def placed_hypervisor(vm: PlacedVM) -> Hypervisor:
    return _hypervisor(vm.vm_name, vm.host_name, vm.host_status, vm.libvirt_uri)


def log_vm_event(
    session: Session,
    vm: VM,
    attribute: str,
    old: object,
    new: object,
    requester_id: int | None = None,
) -> None:
    session.add(
        VMEventLog(
            vm_id=vm.id,
            vm_identity=vm.vm_identity,
            attribute=attribute,
            old_value=None if old is None else str(old)[:255],
            new_value=None if new is None else str(new)[:255],
            requester_id=requester_id,
        )
    )


def set_status(session: Session, vm: VM, status: C.VMStatus, requester_id: int | None) -> None:
    if vm.status != status:
        log_vm_event(session, vm, "status", C.VMStatus(vm.status).name, status.name, requester_id)
        vm.status = status


def _event_insert(old_value: ColumnElement[Any], *when: ColumnElement[bool]) -> Insert:
    """INSERT INTO vm_event_log ... SELECT from the VM's row (its identity, and
    ``old_value``: an SQL expression or a bound value) ``when`` it matches, built once."""
    table = VMEventLog.__table__
    return insert(table).from_select(
        ("vm_id", "vm_identity", "attribute", "old_value", "new_value", "requester_id",
         "timestamp"),
        select(
            VM.id, VM.vm_identity, bindparam("attribute", type_=table.c.attribute.type),
            old_value, bindparam("new", type_=table.c.new_value.type),
            bindparam("requester_id", type_=table.c.requester_id.type),
            bindparam("now", type_=table.c.timestamp.type),
        ).where(VM.id == bindparam("vm_id"), *when),
    )  # fmt: skip


_STATUS_NAME = case({int(s): s.name for s in C.VMStatus}, value=VM.status)
#: the status change's event row, written only when the status changes
_LOG_STATUS = _event_insert(_STATUS_NAME, VM.status != bindparam("status"))
#: RETURNING: an INSERT ... SELECT's row count is not reported on PostgreSQL (psycopg)
_LOG_EVENT = _event_insert(bindparam("old", type_=VMEventLog.__table__.c.old_value.type)).returning(
    VMEventLog.__table__.c.id
)
_SET_STATUS = update(VM).where(VM.id == bindparam("vm_id")).values(status=bindparam("status"))


def record_status(
    conn: Connection, vm_id: int | None, status: C.VMStatus, requester_id: int | None
) -> None:
    """:func:`set_status` without loading the VM: two prebuilt statements, for the end
    of a task (its event row first, while the row still has the old status)."""
    values = {"vm_id": vm_id, "status": int(status)}
    logged = {**values, "attribute": "status", "new": status.name,
              "requester_id": requester_id, "now": utcnow()}  # fmt: skip
    conn.execute(_LOG_STATUS, logged)
    # only its own names: an UPDATE sets every column named in its values
    if conn.execute(_SET_STATUS, values).rowcount != 1:
        raise NotFoundError(f"no VM with id {vm_id}")


def record_event(
    conn: Connection, vm_id: int | None, attribute: str, new: str, requester_id: int | None
) -> None:
    """:func:`log_vm_event` (no old value) without loading the VM: one prebuilt
    statement."""
    values = {"vm_id": vm_id, "attribute": attribute, "old": None, "new": new[:255],
              "requester_id": requester_id, "now": utcnow()}  # fmt: skip
    if conn.execute(_LOG_EVENT, values).first() is None:
        raise NotFoundError(f"no VM with id {vm_id}")


def graceful_stop(hv: Hypervisor, name: str, settings: Settings) -> None:
    """Ask the guest to shut down; force it off if it has not within stop_timeout_s.

    Upstream's 'Stop VM' was a hard power off; a user expects their OS to shut down.
    """
    if hv.domain_info(name).status == C.VMStatus.SUSPENDED:
        hv.destroy(name)
        return
    hv.shutdown(name)
    deadline = time.monotonic() + settings.vm.stop_timeout_s
    while time.monotonic() < deadline:
        if hv.domain_info(name).status == C.VMStatus.SHUTDOWN:
            return
        time.sleep(STOP_POLL_S)
    hv.destroy(name)
