"""Finding rows by what people type (a name or an id), for the other service modules.

No policy here: each caller checks what the actor may do with what it found. Doors never
import this module (tests/unit/test_layering.py); they call the guarded functions.
"""

from __future__ import annotations

from typing import Any, TypeVar

from sqlalchemy import ColumnElement, bindparam, select, true
from sqlalchemy.orm import InstrumentedAttribute, Session

from baadal.db.models import VM, Base, Datastore, Host, SecurityDomain, Snapshot, Template
from baadal.errors import ConflictError, NotFoundError
from baadal.net.validators import parse_row_id
from baadal.services import auditing

M = TypeVar("M", bound=Base)


def by_name_or_id(
    session: Session,
    model: type[M],
    name_column: InstrumentedAttribute[Any],
    value: str | int,
    what: str,
) -> M:
    """Names first: a host may well be called '12', and then the name must win."""
    row = _by_name_or_id(session, model, name_column, value)
    if row is None:
        raise NotFoundError(f"no {what} named {value!r}")
    auditing.found(row)
    return row


def _by_name_or_id(
    session: Session, model: type[M], name_column: InstrumentedAttribute[Any], value: str | int
) -> M | None:
    if isinstance(value, str):
        row = session.scalar(select(model).where(name_column == value))
        if row is not None:
            return row
        row_id = parse_row_id(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        row_id = parse_row_id(str(value))
    else:
        row_id = None
    return session.get(model, row_id) if row_id is not None else None


def host(session: Session, name_or_id: str | int) -> Host:
    return by_name_or_id(session, Host, Host.host_name, name_or_id, "host")


def datastore(session: Session, name_or_id: str | int) -> Datastore:
    return by_name_or_id(session, Datastore, Datastore.ds_name, name_or_id, "datastore")


def template(session: Session, name_or_id: str | int) -> Template:
    return by_name_or_id(session, Template, Template.name, name_or_id, "template")


def security_domain(session: Session, name_or_id: str | int) -> SecurityDomain:
    return by_name_or_id(
        session, SecurityDomain, SecurityDomain.name, name_or_id, "security domain"
    )


def vm(session: Session, name_or_id: str | int, prefer: ColumnElement[bool] | None = None) -> VM:
    """A VM by id, identity or name. Several VMs may share a name (one per owner): then
    the one matching ``prefer`` (the actor's own) wins if it is the only one."""
    text = str(name_or_id)
    row_id = parse_row_id(text)
    row = _vm_by_id(session, row_id) if row_id is not None else None
    if row is None:
        row = session.scalar(select(VM).where(VM.vm_identity == text))
    if row is None:
        matches = session.scalars(select(VM).where(VM.vm_name == text)).all()
        if len(matches) > 1:
            preferred = session.scalars(
                select(VM).where(VM.vm_name == text, prefer if prefer is not None else true())
            ).all()
            if len(preferred) != 1:
                raise ConflictError(f"several VMs are named {text!r}; use the id or identity")
            matches = preferred
        row = matches[0] if matches else None
    if row is None:
        raise NotFoundError(f"no VM {text!r}")
    auditing.found(row)
    return row


_VM_BY_ID = select(VM).where(VM.id == bindparam("vm_id"))


def _vm_by_id(session: Session, vm_id: int) -> VM | None:
    """``session.get(VM, vm_id)`` with a prebuilt statement (every VM operation by id
    loads its VM: get builds its query per call, at twice the cost of loading the row)."""
    row = session.identity_map.get(session.identity_key(VM, vm_id))
    if row is None:
        row = session.execute(_VM_BY_ID, {"vm_id": vm_id}).scalar()
    return row  # type: ignore[no-any-return]


def snapshot(session: Session, vm_row: VM, snapshot_ref: str | int) -> Snapshot:
    text = str(snapshot_ref)
    snap_id = parse_row_id(text)
    snap = session.get(Snapshot, snap_id) if snap_id is not None else None
    snap = snap or session.scalar(
        select(Snapshot).where(Snapshot.vm_id == vm_row.id, Snapshot.snapshot_name == text)
    )
    if snap is None or snap.vm_id != vm_row.id:
        raise NotFoundError(f"VM {vm_row.vm_name} has no snapshot {text!r}")
    return snap
