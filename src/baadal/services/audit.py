"""Reading the audit log (``baadal audit``): admins see every entry, an orgadmin those of
the people of their organisation, everyone else their own. Writing it is
:mod:`baadal.services.auditing`'s job, for every guarded call.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import ColumnElement, and_, or_, select
from sqlalchemy.orm import Session

from baadal import constants as C
from baadal.db.models import VM, AuditLog
from baadal.errors import ValidationError
from baadal.net.validators import check_int, check_no_control, parse_row_id
from baadal.services import policy
from baadal.services.auditing import REFUSED
from baadal.services.policy import Action, Actor, Scope, guarded
from baadal.services.rows import Page, one_more_than

#: the longest name a filter may hold (the longest username or VM identity)
_FILTER_MAX = 128


@dataclass(frozen=True)
class AuditEntry:
    """One entry as people see it."""

    id: int
    at: datetime
    actor_name: str
    function: str
    action: str
    target_type: str | None
    target_id: int | None
    target_name: str | None
    detail: str | None
    outcome: str


def _entry(row: AuditLog, everything: bool) -> AuditEntry:
    """Below admins, a refused entry does not say which object it was: the refusal did
    not let its actor see it, and an orgadmin may not either."""
    hidden = not everything and row.outcome.startswith(REFUSED)
    return AuditEntry(
        id=row.id,
        at=row.at,
        actor_name=row.actor_name,
        function=row.function,
        action=row.action,
        target_type=row.target_type,
        target_id=None if hidden else row.target_id,
        target_name=None if hidden else row.target_name,
        detail=row.detail,
        outcome=row.outcome,
    )


def parse_since(text: str) -> datetime:
    """An ISO date or date and time (UTC unless it says otherwise), as stored: naive UTC."""
    try:
        when = datetime.fromisoformat(text)
    except (TypeError, ValueError):
        raise ValidationError(
            f"{text!r} is not an ISO date or time, e.g. 2026-12-07 or 2026-12-07T15:00"
        ) from None
    return when.astimezone(UTC).replace(tzinfo=None) if when.tzinfo else when


def _check_filter(value: str, what: str) -> str:
    if not value or len(value) > _FILTER_MAX:
        raise ValidationError(f"{what} must be 1-{_FILTER_MAX} characters")
    return check_no_control(value, what)


def _vm_clause(vm: str) -> ColumnElement[bool]:
    """Entries about the VM by id, name or identity, also once the VM is deleted (the
    entry kept its name)."""
    row_id = parse_row_id(vm)
    if row_id is not None:
        return AuditLog.vm_id == row_id
    now_named = select(VM.id).where(or_(VM.vm_name == vm, VM.vm_identity == vm))
    # a deleted VM's id, from the entries that named it: those that only carry its id
    # (the approval that created it) stay found
    was_named = select(AuditLog.vm_id).where(
        AuditLog.target_type == "vm", AuditLog.target_name == vm
    )
    return or_(
        AuditLog.vm_id.in_(now_named),
        AuditLog.vm_id.in_(was_named),
        and_(AuditLog.target_type == "vm", AuditLog.target_name == vm),
    )


@guarded(Action.AUDIT_READ)
def list_entries(
    session: Session,
    actor: Actor,
    *,
    user: str | None = None,
    vm: str | None = None,
    since: str | None = None,
    limit: int = C.AUDIT_LIST_DEFAULT,
    before: int | None = None,
) -> Page[AuditEntry]:
    """The newest ``limit`` entries the actor may see below id ``before``, of ``user``
    (who acted), about ``vm``, from ``since`` on: one indexed query."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= C.AUDIT_LIST_MAX:
        raise ValidationError(f"limit must be 1-{C.AUDIT_LIST_MAX}")
    clauses = [policy.audit_filter(actor)]
    if before is not None:
        clauses.append(AuditLog.id < check_int(before, "before", 1, C.ROW_ID_MAX))
    if user is not None:
        clauses.append(AuditLog.actor_name == _check_filter(user, "a username"))
    if vm is not None:
        clauses.append(_vm_clause(_check_filter(vm, "a VM")))
    if since is not None:
        clauses.append(AuditLog.at >= parse_since(since))
    policy.require(session, actor, Action.AUDIT_READ)
    query = (
        select(AuditLog).where(*clauses).order_by(AuditLog.id.desc()).limit(one_more_than(limit))
    )
    everything = policy.scope_of(actor, Action.AUDIT_READ) == Scope.ALL
    entries = [_entry(row, everything) for row in session.scalars(query)]
    return Page.of(entries, limit, lambda entry: entry.id)
