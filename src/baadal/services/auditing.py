"""Writing the audit log: who changed what, on which object, when, and how it went.

:func:`baadal.services.policy.guarded` opens a :class:`Call` around every guarded service
call (the outermost one: a service calling another is one entry) and hands it back here
when the call ends:

* a change that succeeded is one row in the caller's session, so it is committed with
  the change and a rolled-back change leaves no entry;
* a refusal (PermissionDenied) is written in its own short transaction once the caller's
  transaction has ended (on SQLite the caller holds the write lock until then), so it is
  kept although the door rolls back;
* a function given an engine (or only the settings) commits its own work: its outcome,
  success or failure, is written in its own transaction at once.

The object is the one the function checked its action on (:func:`checked`, called by
``policy.require``), or the one it names with :func:`note`, or the row it returns.
Nothing here checks permissions: doors never import this module.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, event, insert
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.orm import Session, SessionTransaction

from baadal.config import Settings
from baadal.db.models import (
    VM,
    AuditLog,
    Base,
    Datastore,
    Host,
    Organisation,
    RequestQueue,
    SecurityDomain,
    Snapshot,
    Task,
    Template,
    User,
    Vlan,
)
from baadal.db.session import get_engine, writer_of
from baadal.timeutil import utcnow

if TYPE_CHECKING:
    from baadal.services.policy import Actor

log = logging.getLogger("baadal")

OK = "ok"
REFUSED = "refused: "
#: longest message kept in an outcome (a refusal's or failure's one line)
OUTCOME_MAX = 1000
_NAME_MAX = 255
_PENDING = "baadal_audit_refusals"
_INSERT = insert(AuditLog.__table__)

#: the name column of each kind of object an entry may point at
_NAMES: dict[type[Base], tuple[str, str]] = {
    VM: ("vm", "vm_name"),
    Task: ("task", "task_type"),
    User: ("user", "username"),
    Organisation: ("organisation", "name"),
    Host: ("host", "host_name"),
    Datastore: ("datastore", "ds_name"),
    Template: ("template", "name"),
    SecurityDomain: ("security domain", "name"),
    Vlan: ("vlan", "name"),
    Snapshot: ("snapshot", "snapshot_name"),
    RequestQueue: ("request", "vm_name"),
}


@dataclass
class Call:
    """One guarded service call being made."""

    function: str
    actions: tuple[str, ...]
    #: it changes something (read-only calls leave an entry only when refused)
    changes: bool
    target: object = None
    detail: str | None = None
    #: which of ``actions`` was checked last (a function of several checks the one that
    #: applies); the first until one is
    action: str | None = None
    #: guarded calls it is making now: what they find or name is not what it is about
    inner_calls: int = 0


_current: contextvars.ContextVar[Call | None] = contextvars.ContextVar(
    "baadal_audit_call", default=None
)


def begin(function: str, actions: tuple[str, ...], changes: bool) -> contextvars.Token | None:
    """Start recording a call; None inside another guarded call (that one is the entry)."""
    if _current.get() is not None:
        return None
    return _current.set(Call(function, actions, changes))


def _outer() -> Call | None:
    """The call being recorded, unless a call it makes is running."""
    call = _current.get()
    return call if call is not None and not call.inner_calls else None


@contextmanager
def inner_call() -> Iterator[None]:
    """A guarded call made by the recorded one: part of its entry, not about its object."""
    call = current()
    call.inner_calls += 1
    try:
        yield
    finally:
        call.inner_calls -= 1


def current() -> Call:
    call = _current.get()
    if call is None:
        raise RuntimeError("no guarded call is being made")
    return call


def end(token: contextvars.Token) -> None:
    _current.reset(token)


def checking(action: str, target: object = None) -> None:
    """``policy.require`` is about to check ``action`` (on ``target``): if it is one of
    the call's own, it is the action the entry names, and the first object it is checked
    on is what the call is about (passed or refused)."""
    call = _outer()
    if call is None or action not in call.actions:
        return
    call.action = action
    if call.target is None and target is not None:
        call.target = target


def found(row: object) -> None:
    """A lookup found ``row`` by what the person typed: the call is about it unless it
    already named (or checked) another object."""
    call = _outer()
    if call is not None and call.target is None:
        call.target = row


def note(target: object = None, *, detail: str | None = None) -> None:
    """Name the object of the current call (one it made, or one its check did not name)
    and say what else matters (an operation, a new name); never a secret."""
    call = _outer()
    if call is None:
        return
    if target is not None:
        call.target = target
    if detail is not None:
        call.detail = detail


def _loaded(obj: object) -> dict[str, Any]:
    """The row's loaded attributes, without touching the database (it may be detached)."""
    return dict(sa_inspect(obj).dict)


def _describe(target: object) -> dict[str, Any]:
    if not isinstance(target, Base):
        return {}
    kind, name_attr = _NAMES.get(type(target), (type(target).__tablename__, ""))
    values = _loaded(target)
    name = values.get(name_attr) if name_attr else None
    vm_id = values.get("id") if isinstance(target, VM) else values.get("vm_id")
    return {
        "target_type": kind,
        "target_id": values.get("id"),
        "target_name": str(name)[:_NAME_MAX] if name is not None else None,
        "vm_id": vm_id,
    }


def _values(actor: Actor, call: Call, outcome: str, result: object = None) -> dict[str, Any]:
    target = call.target if call.target is not None else result
    return {
        "at": utcnow(),
        "actor_id": actor.user_id,
        "actor_name": actor.username,
        "function": call.function,
        "action": call.action or call.actions[0],
        "detail": call.detail[:_NAME_MAX] if call.detail else None,
        "outcome": outcome[:OUTCOME_MAX],
        **_describe(target),
    }


def _write_apart(engine: Engine, rows: list[dict[str, Any]]) -> None:
    """Entries in a transaction of their own; a failure is logged, never raised (the
    caller's outcome, not the log's, is what the person must hear)."""
    try:
        with engine.begin() as conn:
            conn.execute(_INSERT, rows)
    except Exception as exc:  # the audit log must not hide what happened
        log.error("could not write %d audit entries: %s", len(rows), exc)


def _engine_of(where: Session | Engine | Settings) -> Engine:
    if isinstance(where, Engine):
        return where
    if isinstance(where, Session):
        # a refusal met in a read session is still written
        bind = where.get_bind()
        return writer_of(bind if isinstance(bind, Engine) else bind.engine)
    return get_engine(where)


def succeeded(where: object, actor: Actor, call: Call, result: object) -> None:
    if not call.changes:
        return
    row = _values(actor, call, OK, result)
    if isinstance(where, Session):  # a plain INSERT: an ORM row would cost a flush
        where.connection().execute(_INSERT, row)
    elif isinstance(where, Engine | Settings):
        _write_apart(_engine_of(where), [row])


def failed(where: object, actor: Actor, call: Call, exc: BaseException) -> None:
    """A function that commits its own work failed: some of it may be done."""
    if call.changes and isinstance(where, Engine | Settings):
        message = str(exc) or type(exc).__name__
        _write_apart(_engine_of(where), [_values(actor, call, f"failed: {message}")])


def refused(where: object, actor: Actor, call: Call, exc: BaseException) -> None:
    row = _values(actor, call, f"{REFUSED}{exc}")
    if not isinstance(where, Session | Engine | Settings):
        log.warning("refused call %s by %s not audited: no database", call.function, actor)
        return
    if isinstance(where, Session) and where.in_transaction():
        where.info.setdefault(_PENDING, []).append((_engine_of(where), row))
        return
    _write_apart(_engine_of(where), [row])


@event.listens_for(Session, "after_transaction_end")
def _write_refusals(session: Session, transaction: SessionTransaction) -> None:
    """The caller's transaction is over (committed or rolled back): its refusals stay."""
    if transaction.parent is not None or not session.info.get(_PENDING):
        return
    pending = session.info.pop(_PENDING)
    for engine in {engine for engine, _ in pending}:
        _write_apart(engine, [row for e, row in pending if e is engine])
