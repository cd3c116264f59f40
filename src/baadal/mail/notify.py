"""Who is told what. Each function is called inside the transaction of the change it
tells about and only writes outbox rows (nothing is sent here): a rolled-back change
sends nothing, and a mail waits in the outbox through an SMTP outage.

With ``[mail] mail_active`` false (the default) nothing is written. Accounts without an
address (and no ``[mail] email_domain`` to make one from the username) are skipped and
logged.

Who gets which mail (upstream's workflow, upstream-facts.md section 3):

- a request made or reminded: the next approver: the faculty member it names while
  REQUESTED, the organisation's orgadmins while VERIFIED, the admins while APPROVED;
- verified: the organisation's orgadmins; approved: the admins (and ``[mail]
  admin_email``); rejected (with the reason) and queued: the requester;
- a VM task done or failed: the VM's users who did not opt out (``mail_subscribed``),
  never for migrations, maintenance or periodic jobs;
- an idle or long-off VM: its users; an approved registration: the account.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Collection, Iterable, Mapping
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from baadal import constants as C
from baadal.config import MailConf, get_settings
from baadal.db.models import (
    VM,
    Organisation,
    RequestQueue,
    Task,
    TaskEvent,
    User,
    UserGroup,
    UserMembership,
    UserVMMap,
)
from baadal.mail import compose, outbox

log = logging.getLogger("baadal")

#: an address a mail may go to: one line, one '@' (no header can be smuggled in)
_ADDRESS = re.compile(r"[^@\s\x00-\x1f\x7f-\x9f<>,;]{1,64}@[A-Za-z0-9.-]{1,253}")

#: who is told: accounts, and shared mailboxes as (address, who the mail greets)
Told = tuple[list[User], list[tuple[str, str]]]

REQUEST_EVENTS = ("made", "verified", "approved", "rejected", "reminded", "queued")
IDLE_KINDS = {"idle": "idle_warning", "shutdown": "shutdown_warning"}


def _conf() -> MailConf | None:
    """The mail settings, or None while mail is off."""
    conf = get_settings().mail
    return conf if conf.mail_active else None


def address_of(user: User, conf: MailConf) -> str | None:
    """The account's address: its e-mail, else <username>@<email_domain>, else None."""
    if user.email:
        address = user.email
    elif conf.email_domain:
        address = f"{user.username}@{conf.email_domain}"
    else:
        return None
    return address if _ADDRESS.fullmatch(address) else None


def _display_name(user: User) -> str:
    return f"{user.first_name or ''} {user.last_name or ''}".strip() or user.username


def _write(
    session: Session,
    conf: MailConf,
    kind: str,
    users: Iterable[User],
    values: Mapping[str, object],
    *,
    extra_addresses: Iterable[tuple[str, str]] = (),
) -> int:
    """One mail per distinct address (accounts, then ``extra_addresses``: (address, who
    it greets) pairs of shared mailboxes); returns how many were written."""
    common = {"home_address": get_settings().general.home_address, **values}
    seen: set[str] = set()
    written = 0

    def add(address: str, user: User | None, greeting: str = "") -> None:
        nonlocal written
        if address.lower() in seen:
            return
        seen.add(address.lower())
        personal = {
            "recipient": _display_name(user) if user is not None else greeting,
            "username": user.username if user is not None else "",
        }
        mail = compose.render(kind, common | personal)
        outbox.queue_mail(session, kind, address, mail, user.id if user is not None else None)
        written += 1

    for user in users:
        if user.id == C.SYSTEM_USER_ID:
            continue
        address = address_of(user, conf)
        if address is None:
            log.info("mail %s: account %s has no e-mail address; not told", kind, user.username)
            continue
        add(address, user)
    for address, greeting in extra_addresses:
        if not address:
            continue
        if _ADDRESS.fullmatch(address):
            add(address, None, greeting)
        else:
            log.info("mail %s: %r is not an e-mail address; not told", kind, address)
    if not written:
        log.info("mail %s: nobody to tell", kind)
    return written


# --- who --------------------------------------------------------------------------------


def _with_role(session: Session, role: C.Role, organisation_id: int | None = None) -> list[User]:
    query = (
        select(User)
        .join(UserMembership, UserMembership.user_id == User.id)
        .join(UserGroup, UserGroup.id == UserMembership.group_id)
        .where(
            UserGroup.role == role.value,
            User.block_user.is_(False),
            User.registration_key == C.RegistrationKey.ACTIVE,
        )
        .order_by(User.id)
    )
    if organisation_id is not None:
        query = query.where(User.organisation_id == organisation_id)
    return list(session.scalars(query))


def vm_user_ids(session: Session, vm_id: int) -> list[int]:
    """The VM's users: its owner and everyone it is mapped to."""
    owner = session.scalar(select(VM.owner_id).where(VM.id == vm_id))
    mapped = session.scalars(select(UserVMMap.user_id).where(UserVMMap.vm_id == vm_id))
    return sorted({*([owner] if owner is not None else []), *mapped})


def _users(session: Session, user_ids: Collection[int]) -> list[User]:
    if not user_ids:
        return []
    return list(session.scalars(select(User).where(User.id.in_(user_ids)).order_by(User.id)))


def _organisation(session: Session, request: RequestQueue) -> Organisation | None:
    requester = session.get(User, request.requester_id) if request.requester_id else None
    return requester.organisation if requester is not None else None


def _orgadmins(session: Session, request: RequestQueue) -> Told:
    """The organisation's orgadmins and its admin mailbox (upstream admin_mailid)."""
    org = _organisation(session, request)
    if org is None:
        return [], []
    mailbox = [(org.admin_mailid or "", f"administrators of {org.name}")]
    return _with_role(session, C.Role.ORGADMIN, org.id), mailbox


def _admins(session: Session, conf: MailConf) -> Told:
    return _with_role(session, C.Role.ADMIN), [(conf.admin_email, "Baadal administrators")]


def _next_approvers(session: Session, request: RequestQueue, conf: MailConf) -> Told:
    if request.status == C.RequestStatus.REQUESTED:
        return _users(session, [request.owner_id] if request.owner_id else []), []
    if request.status == C.RequestStatus.VERIFIED:
        return _orgadmins(session, request)
    if request.status == C.RequestStatus.APPROVED:
        return _admins(session, conf)
    return [], []


def _requester(session: Session, request: RequestQueue) -> Told:
    return _users(session, [request.requester_id] if request.requester_id else []), []


# --- the events -------------------------------------------------------------------------


def _username(session: Session, user_id: int | None) -> str:
    if user_id is None:
        return ""
    return session.scalar(select(User.username).where(User.id == user_id)) or ""


def request_event(
    session: Session, request: RequestQueue, event: str, *, reason: str | None = None
) -> None:
    """Tell the people a request concerns that ``event`` happened to it; call it after
    the request's status changed, in the same transaction."""
    if event not in REQUEST_EVENTS:
        raise ValueError(f"unknown request event {event!r}")
    conf = _conf()
    if conf is None:
        return
    who = {
        "made": _next_approvers,
        "reminded": _next_approvers,
        "verified": lambda s, r, _c: _orgadmins(s, r),
        "approved": lambda s, r, c: _admins(s, c),
        "rejected": lambda s, r, _c: _requester(s, r),
        "queued": lambda s, r, _c: _requester(s, r),
    }[event]
    users, extra = who(session, request, conf)
    values = {
        "request_id": request.id,
        "request_type": request.request_type,
        "vm_name": request.vm_name,
        "requester": _username(session, request.requester_id),
        "owner": _username(session, request.owner_id),
        "purpose": request.purpose or "(none given)",
        "reason": reason or "(none given)",
        "next_step": "verify" if request.status == C.RequestStatus.REQUESTED else "approve",
    }
    _write(session, conf, f"request_{event}", users, values, extra_addresses=extra)


def idle_warning(session: Session, vm: VM, kind: str, deadline: datetime) -> None:
    """Warn the VM's users that it will be destroyed ("idle") or deleted ("shutdown")
    after ``deadline`` unless they answer (``baadal vm keep``)."""
    if kind not in IDLE_KINDS:
        raise ValueError(f"unknown idle warning {kind!r}")
    conf = _conf()
    if conf is None:
        return
    values = {"vm_name": vm.vm_name, "deadline": f"{deadline:%Y-%m-%d %H:%M} UTC"}
    _write(session, conf, IDLE_KINDS[kind], _users(session, vm_user_ids(session, vm.id)), values)


def _is_mailed(task: Task) -> bool:
    if task.task_type not in C.TASK_TYPES_MAILED or task.vm_id is None:
        return False
    if task.task_type == C.TaskType.SNAPSHOT_VM:  # scheduled snapshots are not news
        kind = (task.parameters or {}).get("snapshot_type", C.SnapshotType.USER)
        return kind == C.SnapshotType.USER
    return True


_OUTCOMES = {
    C.TaskStatus.SUCCESS: ("task_done", "done"),
    C.TaskStatus.FAILED: ("task_failed", "it failed"),
    C.TaskStatus.PARTIAL_SUCCESS: ("task_failed", "only part of it was done"),
}


def task_finished(session: Session, task: Task, *, users: Collection[int] | None = None) -> None:
    """Tell the VM's users who did not opt out that its task ended (done or failed).
    ``users``: the VM's users as they were before the task ran (a deleted VM has none
    left); by default they are read now."""
    conf = _conf()
    if conf is None or task.status not in _OUTCOMES or not _is_mailed(task):
        return
    kind, outcome = _OUTCOMES[C.TaskStatus(task.status)]
    assert task.vm_id is not None  # _is_mailed
    ids = vm_user_ids(session, task.vm_id) if users is None else users
    subscribed = [u for u in _users(session, ids) if u.mail_subscribed]
    vm_name = session.scalar(select(VM.vm_name).where(VM.id == task.vm_id)) or session.scalar(
        select(TaskEvent.vm_name).where(TaskEvent.task_id == task.id).limit(1)
    )
    values = {
        "task_id": task.id,
        "task_type": task.task_type,
        "vm_name": vm_name or f"#{task.vm_id}",
        "message": task.message or "",
        "outcome": outcome,
    }
    _write(session, conf, kind, subscribed, values)


def registration_approved(session: Session, user: User) -> None:
    """Tell a newly approved account that it may log in."""
    conf = _conf()
    if conf is not None:
        _write(session, conf, "registration_approved", [user], {})


def mail_on() -> bool:
    """Whether mails are written at all (callers skip work only mails need)."""
    return _conf() is not None
