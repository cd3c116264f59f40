"""Requests: how people who may not change VMs at once ask for it, and the approvals.

The chain (upstream's, with its checks)::

    user ──make──> REQUESTED ──faculty approver verifies──> VERIFIED
         ──orgadmin of the organisation approves──> APPROVED ──admin approves──> IN_QUEUE

A faculty member's own request starts VERIFIED, an orgadmin's APPROVED, an admin's is
queued at once; an admin may approve from any pending state. Queueing calls the VM
services (:mod:`baadal.services.vms`) in the same transaction as the status change, after
the quota check under the quota rows' lock (:mod:`baadal.quota`). A queued request shows
the state of its task: FAILED with the task's message while the task is failed (or
ignored), IN_QUEUE again once an admin retried it (derived, never stored).

The owner of a student's new VM is their faculty approver (quota counts there); the
student and the collaborators become the VM's users.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from baadal import address_pools, quota
from baadal import constants as C
from baadal.auth.roles import user_roles
from baadal.config import Settings
from baadal.db.models import (
    VM,
    RequestCollaborator,
    RequestQueue,
    SecurityDomain,
    Task,
    Template,
    User,
)
from baadal.errors import ConflictError, NotFoundError, PermissionDenied, ValidationError
from baadal.mail import notify
from baadal.net.validators import check_int, check_no_control, check_row_id, check_safe_name
from baadal.services import auditing, lookup, vm_rules, vms
from baadal.services.policy import (
    Action,
    Actor,
    actor_of,
    guarded,
    request_filter,
    require,
    vm_filter,
)
from baadal.services.rows import Page, one_more_than
from baadal.tasks import queue
from baadal.timeutil import utcnow
from baadal.vm.disk import check_disk_size
from baadal.vm.edit import check_ram_vcpus

#: the sizes an approver who did not ask may change
SIZE_FIELDS = frozenset({"ram_mb", "vcpus", "extra_disk_gb", "disk_gb", "clone_count"})


@dataclass(frozen=True)
class RequestInfo:
    """One request as people read it (plain values)."""

    id: int
    kind: C.RequestKind
    #: the status shown: FAILED while its task is failed, whatever is stored
    status: C.RequestStatus
    vm_name: str
    requester: str
    owner: str
    approver: str | None
    collaborators: tuple[str, ...]
    ram_mb: int | None
    vcpus: int | None
    extra_disk_gb: int
    disk_gb: int | None
    clone_count: int | None
    #: a clone request's copies are standalone (not overlays on the parent's disks)
    clone_full: bool
    public_ip: bool | None
    security_domain: str | None
    template: str | None
    purpose: str | None
    reject_reason: str | None
    task_id: int | None
    task_message: str | None
    request_time: datetime


# --- reading --------------------------------------------------------------------------


def _username(session: Session, user_id: int | None) -> str:
    if user_id is None:
        return ""
    user = session.get(User, user_id)  # the identity map first: a listed page preloads them
    return user.username if user is not None else f"#{user_id}"


def _domain(session: Session, domain_id: int | None) -> SecurityDomain | None:
    return session.get(SecurityDomain, domain_id) if domain_id is not None else None


def _info(session: Session, req: RequestQueue) -> RequestInfo:
    status, message = C.RequestStatus(req.status), None
    if req.task_id is not None:
        task = session.get(Task, req.task_id)
        if task is not None and task.status in (C.TaskStatus.FAILED, C.TaskStatus.IGNORE):
            status, message = C.RequestStatus.FAILED, task.message
    kind = C.RequestKind(req.request_type)
    public_ip = req.public_ip_change if kind == C.RequestKind.EDIT else req.public_ip
    domain = _domain(session, req.security_domain_id)
    template = session.get(Template, req.template_id) if req.template_id is not None else None
    return RequestInfo(
        id=req.id,
        kind=kind,
        status=status,
        vm_name=req.vm_name,
        requester=_username(session, req.requester_id),
        owner=_username(session, req.owner_id),
        approver=_username(session, req.approver_id) or None,
        collaborators=tuple(sorted(u.username for u in req.collaborators)),
        ram_mb=req.RAM,
        vcpus=req.vCPU,
        extra_disk_gb=req.extra_HDD or 0,
        disk_gb=req.attach_disk,
        clone_count=req.clone_count,
        clone_full=bool(req.clone_full),
        public_ip=public_ip,
        security_domain=domain.name if domain else None,
        template=template.name if template else None,
        purpose=req.purpose,
        reject_reason=req.reject_reason,
        task_id=req.task_id,
        task_message=message,
        request_time=req.request_time,
    )


def _find(
    session: Session, actor: Actor, request_id: int, action: Action, *, lock: bool = True
) -> RequestQueue:
    """The request, locked for this transaction unless only read (two approvers never
    both move it)."""
    check_row_id(request_id, "request")
    req = session.get(RequestQueue, request_id, with_for_update=lock, populate_existing=lock)
    if req is None:
        raise NotFoundError(f"no request {request_id}")
    require(session, actor, action, req, f"request {request_id}")
    return req


def _pending(req: RequestQueue) -> None:
    if req.status not in C.REQUEST_PENDING:
        raise ConflictError(
            f"request {req.id} is {C.RequestStatus(req.status).name}: no longer pending"
        )


def _preload(session: Session, requests: Sequence[RequestQueue]) -> list[object]:
    """The people, tasks, security domains and templates the requests name, one query
    each, into the session's identity map (where :func:`_info`'s ``session.get`` finds
    them): a page costs the same few queries whatever its length. The caller keeps the
    returned rows referenced while it reads (the identity map holds them weakly)."""
    wanted = [
        (User, User.id, {u for r in requests for u in (r.requester_id, r.owner_id, r.approver_id)}),
        (Task, Task.id, {r.task_id for r in requests}),
        (SecurityDomain, SecurityDomain.id, {r.security_domain_id for r in requests}),
        (Template, Template.id, {r.template_id for r in requests}),
    ]
    rows: list[object] = []
    for model, key, ids in wanted:
        ids.discard(None)
        if ids:
            rows += session.scalars(select(model).where(key.in_(ids))).all()
    return rows


@guarded(Action.REQUEST_READ)
def list_requests(
    session: Session,
    actor: Actor,
    *,
    pending_only: bool = False,
    mine: bool = False,
    limit: int = C.TASK_LIST_MAX,
    before: int | None = None,
) -> Page[RequestInfo]:
    """The requests the actor may see (own, naming them, their org's, all), newest
    first, below id ``before``; ``mine``: only those they asked for, will own or share
    (filtered in SQL, so the others they may see never crowd theirs off the page)."""
    require(session, actor, Action.REQUEST_READ)
    check_int(limit, "request list length", 1, C.TASK_LIST_MAX)
    query = (
        select(RequestQueue)
        .where(request_filter(actor))
        .options(selectinload(RequestQueue.collaborators))
        .order_by(RequestQueue.id.desc())
        .limit(one_more_than(limit))
    )
    if pending_only:
        query = query.where(RequestQueue.status.in_(C.REQUEST_PENDING))
    if mine:
        me = actor.user_id
        sharing = select(RequestCollaborator.request_id).where(RequestCollaborator.user_id == me)
        query = query.where(
            or_(
                RequestQueue.requester_id == me,
                RequestQueue.owner_id == me,
                RequestQueue.id.in_(sharing),
            )
        )
    if before is not None:
        query = query.where(RequestQueue.id < check_int(before, "before", 1, C.ROW_ID_MAX))
    found = session.scalars(query).all()
    _named = _preload(session, found)
    return Page.of([_info(session, r) for r in found], limit, lambda info: info.id)


@guarded(Action.REQUEST_READ)
def get_request(session: Session, actor: Actor, request_id: int) -> RequestInfo:
    return _info(session, _find(session, actor, request_id, Action.REQUEST_READ, lock=False))


# --- validation -----------------------------------------------------------------------


def _user(session: Session, username: str, what: str) -> User:
    user = session.scalar(select(User).where(User.username == username))
    if user is None:
        raise NotFoundError(f"no user named {username!r}")
    if actor_of(session, user).blocked:
        raise ValidationError(f"{what} {username} is blocked or not approved")
    return user


def _approver(session: Session, actor: Actor, username: str | None) -> User | None:
    """A plain user names a faculty member of their organisation; faculty, orgadmins and
    admins are their own approvers."""
    needs_one = not ({C.Role.FACULTY, C.Role.ORGADMIN, C.Role.ADMIN} & actor.roles)
    if not needs_one:
        if username not in (None, actor.username):
            raise ValidationError("faculty, orgadmins and admins name no approver")
        return None
    if username is None:
        raise ValidationError("name your faculty approver (--approver)")
    user = _user(session, username, "approver")
    if C.Role.FACULTY not in user_roles(session, user.id):
        raise ValidationError(f"{username} is not a faculty member")
    if actor.organisation_id is None or user.organisation_id != actor.organisation_id:
        raise ValidationError(f"{username} is not of your organisation")
    return user


@guarded(Action.REQUEST_CREATE, reads=True)
def check_approver(session: Session, actor: Actor, username: str) -> str:
    """Whether ``username`` may approve the actor's requests (a form checks as one
    types): their name in words, or the reason they may not."""
    user = _approver(session, actor, username.strip() or None)
    if user is None:
        return "you need no approver: your requests skip verification"
    name = f"{user.first_name} {user.last_name}".strip() or user.username
    return f"{name} ({user.username}), faculty of your organisation"


def _collaborators(session: Session, names: Sequence[str], skip: set[int]) -> list[User]:
    found: dict[int, User] = {}
    for name in names:
        user = _user(session, name, "collaborator")
        if user.id not in skip:
            found[user.id] = user
    return list(found.values())


def _check_reason(reason: str) -> str:
    reason = reason.strip() if isinstance(reason, str) else ""
    if not reason:
        raise ValidationError("give the reason of the rejection")
    if len(reason) > C.REJECT_REASON_MAX:
        raise ValidationError(f"reason must be at most {C.REJECT_REASON_MAX} characters")
    return check_no_control(reason, "reason")


def _free_ips(session: Session, domain: SecurityDomain | None, count: int) -> None:
    if domain is None or count <= 0:
        return
    free = address_pools.free_private_count(session, domain.vlan_id)
    if free < count:
        raise ConflictError(
            f"security domain {domain.name!r} has {free} free private IPs, {count} needed"
        )


def _free_public_ip(session: Session) -> None:
    if not address_pools.free_public_count(session):
        raise ConflictError("no public IP is free")


def _target_vm(session: Session, actor: Actor, name_or_id: str | int) -> VM:
    """The VM a change request is for: the actor's to ask about, not being deleted."""
    vm = lookup.vm(session, name_or_id, prefer=vm_filter(actor, Action.VM_READ))
    require(session, actor, Action.REQUEST_CHANGE, vm, f"VM {vm.vm_name}")
    queue.check_not_queued(session, vm.id, C.TaskType.DELETE_VM)
    return vm


def _no_twin(session: Session, req: RequestQueue) -> None:
    """One pending request of a kind per VM (and one per new VM name of an owner)."""
    query = select(RequestQueue.id).where(
        RequestQueue.status.in_(C.REQUEST_PENDING),
        RequestQueue.request_type == req.request_type,
        RequestQueue.id != (req.id or 0),
    )
    if req.parent_id is not None:
        query = query.where(RequestQueue.parent_id == req.parent_id)
        what = f"a pending {req.request_type} request for this VM"
    else:
        query = query.where(
            RequestQueue.owner_id == req.owner_id, RequestQueue.vm_name == req.vm_name
        )
        what = f"a pending request for a VM named {req.vm_name!r}"
    twin = session.scalar(query.limit(1))
    if twin is not None:
        raise ConflictError(f"there is already {what} (request {twin})")


def _validate(session: Session, actor: Actor, settings: Settings, req: RequestQueue) -> None:
    """Everything that can be checked before anyone approves: sizes, names, the security
    domain, free addresses, the quota. ``actor`` is the requester (their organisation's
    domains)."""
    kind = C.RequestKind(req.request_type)
    domain = _domain(session, req.security_domain_id)
    if domain is not None:
        require(session, actor, Action.NETWORK_LIST, domain, f"security domain {domain.name}")
    if kind == C.RequestKind.CREATE:
        check_ram_vcpus(req.RAM, req.vCPU)
        if req.extra_HDD:
            check_disk_size(req.extra_HDD)
        _free_ips(session, domain, 1)
        if req.public_ip:
            _free_public_ip(session)
    else:
        vm = session.get(VM, req.parent_id)
        if vm is None:
            raise NotFoundError(f"the VM of request {req.id} is gone")
        vm_rules.require_installed(vm)
        if kind == C.RequestKind.CLONE:
            check_int(req.clone_count, "clone count", 1, C.CLONE_COUNT_MAX)
            _free_ips(session, _domain(session, vm.security_domain_id), req.clone_count)
        elif kind == C.RequestKind.ATTACH_DISK:
            check_disk_size(req.attach_disk)
        else:
            check_ram_vcpus(req.RAM, req.vCPU)
            if domain is not None:
                vm_rules.check_domain_change(session, vm, domain)
            has_ip = vm.public_ip_id is not None
            if req.public_ip_change and not has_ip:
                _free_public_ip(session)
            changes = (
                (req.RAM is not None and req.RAM != vm.RAM)
                or (req.vCPU is not None and req.vCPU != vm.vCPU)
                or (req.public_ip_change is not None and req.public_ip_change != has_ip)
                or domain is not None
            )
            if not changes:
                raise ValidationError("nothing to change: the VM already has this configuration")
    _no_twin(session, req)
    quota.check(session, settings, req.owner_id, quota.request_demand(session, req))


# --- making ---------------------------------------------------------------------------


def _submit(
    session: Session,
    actor: Actor,
    settings: Settings,
    req: RequestQueue,
    approver: User | None,
    collaborators: Sequence[User] = (),
) -> int:
    """Validate, record and (by the requester's role) advance or queue the request."""
    req.requester_id = actor.user_id
    req.approver_id = approver.id if approver else None
    req.purpose = vm_rules.check_purpose(req.purpose)
    _validate(session, actor, settings, req)
    if actor.is_admin or C.Role.ORGADMIN in actor.roles:
        req.status = C.RequestStatus.APPROVED
    elif C.Role.FACULTY in actor.roles:
        req.status = C.RequestStatus.VERIFIED
    else:
        req.status = C.RequestStatus.REQUESTED
    try:
        with session.begin_nested():
            session.add(req)
    except IntegrityError:
        # a twin submitted at the same moment passed the check too and committed first:
        # the unique index refused this one; the check, run again, now sees the twin
        _no_twin(session, req)
        raise
    for user in collaborators:
        session.add(RequestCollaborator(request_id=req.id, user_id=user.id))
    if actor.is_admin:  # queued at once: nothing waits for anyone, the queued mail tells
        _queue(session, actor, settings, req)
    else:
        notify.request_event(session, req, C.RequestEvent.MADE)
    return req.id


def _domain_id(session: Session, name: str | None) -> int | None:
    return lookup.security_domain(session, name).id if name is not None else None


@guarded(Action.REQUEST_CREATE)
def request_create(
    session: Session,
    actor: Actor,
    settings: Settings,
    *,
    vm_name: str,
    template: str | int,
    approver: str | None = None,
    ram_mb: int = 256,
    vcpus: int = 1,
    security_domain: str | None = None,
    public_ip: bool = False,
    extra_disk_gb: int = 0,
    collaborators: Sequence[str] = (),
    purpose: str | None = None,
) -> int:
    """Ask for a new VM; returns the request's id. Its owner is the faculty approver for
    a student, else the requester; the security domain defaults as for ``vm create``."""
    check_safe_name(vm_name, "VM name", 30)
    approver_row = _approver(session, actor, approver)
    owner = approver_row or session.get(User, actor.user_id)
    tmpl = vm_rules.template_for(session, actor, settings, template)
    domain = vm_rules.new_vm_domain(session, actor, settings, security_domain, True)
    vm_rules.check_name_free(session, owner, vm_name)
    skip = {owner.id, actor.user_id}
    req = RequestQueue(
        request_type=C.RequestKind.CREATE,
        vm_name=vm_name,
        template_id=tmpl.id,
        RAM=ram_mb,
        vCPU=vcpus,
        HDD=tmpl.hdd,
        extra_HDD=extra_disk_gb,
        public_ip=public_ip,
        security_domain_id=domain.id if domain else None,
        owner_id=owner.id,
        purpose=purpose,
    )
    request_id = _submit(
        session,
        actor,
        settings,
        req,
        approver_row,
        _collaborators(session, collaborators, skip),
    )
    auditing.note(req)  # the entry is about the new request, not the template it names
    return request_id


def _change_request(
    session: Session,
    actor: Actor,
    settings: Settings,
    vm_ref: str | int,
    approver: str | None,
    purpose: str | None,
    **fields: object,
) -> int:
    vm = _target_vm(session, actor, vm_ref)
    req = RequestQueue(
        vm_name=vm.vm_name,
        parent_id=vm.id,
        owner_id=vm.owner_id if vm.owner_id is not None else C.SYSTEM_USER_ID,
        purpose=purpose,
        **fields,
    )
    return _submit(session, actor, settings, req, _approver(session, actor, approver))


@guarded(Action.REQUEST_CHANGE)
def request_clone(
    session: Session,
    actor: Actor,
    settings: Settings,
    vm: str | int,
    count: int,
    *,
    full: bool = False,
    approver: str | None = None,
    purpose: str | None = None,
) -> int:
    """Ask for ``count`` clones of a VM (it must be shut off when the clone runs);
    ``full``: standalone copies of its disks instead of overlays on them."""
    check_int(count, "clone count", 1, C.CLONE_COUNT_MAX)
    return _change_request(
        session,
        actor,
        settings,
        vm,
        approver,
        purpose,
        request_type=C.RequestKind.CLONE,
        clone_count=count,
        clone_full=full,
    )


@guarded(Action.REQUEST_CHANGE)
def request_disk(
    session: Session,
    actor: Actor,
    settings: Settings,
    vm: str | int,
    size_gb: int,
    *,
    approver: str | None = None,
    purpose: str | None = None,
) -> int:
    """Ask for an extra disk of ``size_gb`` on a VM."""
    check_disk_size(size_gb)
    return _change_request(
        session,
        actor,
        settings,
        vm,
        approver,
        purpose,
        request_type=C.RequestKind.ATTACH_DISK,
        attach_disk=size_gb,
    )


@guarded(Action.REQUEST_CHANGE)
def request_edit(
    session: Session,
    actor: Actor,
    settings: Settings,
    vm: str | int,
    *,
    ram_mb: int | None = None,
    vcpus: int | None = None,
    public_ip: bool | None = None,
    security_domain: str | None = None,
    approver: str | None = None,
    purpose: str | None = None,
) -> int:
    """Ask to change a VM's RAM, vCPUs, public IP (True attach, False detach) or security
    domain; None leaves a setting as it is."""
    return _change_request(
        session,
        actor,
        settings,
        vm,
        approver,
        purpose,
        request_type=C.RequestKind.EDIT,
        RAM=ram_mb,
        vCPU=vcpus,
        public_ip_change=public_ip,
        security_domain_id=_domain_id(session, security_domain),
    )


# --- the chain ------------------------------------------------------------------------


def _decided(req: RequestQueue, actor: Actor, status: C.RequestStatus) -> None:
    req.status = status
    req.decided_by_id = actor.user_id
    req.decided_at = utcnow()


def _queue(session: Session, actor: Actor, settings: Settings, req: RequestQueue) -> None:
    """Admin approval: the quota check under lock, the VM services' rows and task, and
    IN_QUEUE, all in this transaction."""
    owner_id = req.owner_id
    quota.lock(session, quota.accounts_of(session, owner_id))
    quota.check(session, settings, owner_id, quota.request_demand(session, req))
    kind = C.RequestKind(req.request_type)
    domain = _domain(session, req.security_domain_id)
    if kind == C.RequestKind.CREATE:
        queued = vms.request_vm(
            session,
            actor,
            settings,
            vm_name=req.vm_name,
            template=req.template_id,
            ram_mb=req.RAM,
            vcpus=req.vCPU,
            owner=_username(session, owner_id),
            security_domain=domain.name if domain else None,
            public_ip=req.public_ip,
            extra_disk_gb=req.extra_HDD,
            purpose=req.purpose,
            requester_id=req.requester_id,
            users=[u.id for u in req.collaborators],
        )
        req.vm_id, task_id = queued.vm_id, queued.task_id
    elif kind == C.RequestKind.CLONE:
        task_id = vms.request_clone(
            session, actor, req.parent_id, req.clone_count, full=bool(req.clone_full)
        )[0].id
    elif kind == C.RequestKind.ATTACH_DISK:
        task_id = vms.request_attach_disk(session, actor, req.parent_id, req.attach_disk).id
    else:
        task_id = vms.request_edit(
            session,
            actor,
            req.parent_id,
            ram_mb=req.RAM,
            vcpus=req.vCPU,
            public_ip=req.public_ip_change,
            security_domain=domain.name if domain else None,
        ).id
    req.task_id = task_id
    _decided(req, actor, C.RequestStatus.IN_QUEUE)
    notify.request_event(session, req, C.RequestEvent.QUEUED)


@guarded(Action.REQUEST_VERIFY)
def verify_request(session: Session, actor: Actor, request_id: int) -> RequestInfo:
    """The faculty approver vouches for the request: REQUESTED -> VERIFIED."""
    req = _find(session, actor, request_id, Action.REQUEST_VERIFY)
    if req.status != C.RequestStatus.REQUESTED:
        raise ConflictError(
            f"request {req.id} is {C.RequestStatus(req.status).name}: only a REQUESTED one"
            " is verified"
        )
    _decided(req, actor, C.RequestStatus.VERIFIED)
    notify.request_event(session, req, C.RequestEvent.VERIFIED)
    return _info(session, req)


@guarded(Action.REQUEST_APPROVE)
def approve_request(
    session: Session, actor: Actor, settings: Settings, request_id: int
) -> RequestInfo:
    """Orgadmin: VERIFIED -> APPROVED. Admin: any pending request -> IN_QUEUE (queued)."""
    req = _find(session, actor, request_id, Action.REQUEST_APPROVE)
    _pending(req)
    if actor.is_admin:
        _queue(session, actor, settings, req)
        return _info(session, req)
    if req.status != C.RequestStatus.VERIFIED:
        waits = "its faculty approver's verification"
        if req.status == C.RequestStatus.APPROVED:
            waits = "an admin's approval"
        raise ConflictError(f"request {req.id} waits for {waits}")
    _decided(req, actor, C.RequestStatus.APPROVED)
    notify.request_event(session, req, C.RequestEvent.APPROVED)
    return _info(session, req)


@guarded(Action.REQUEST_REJECT)
def reject_request(session: Session, actor: Actor, request_id: int, reason: str) -> RequestInfo:
    """Refuse a pending request, saying why (kept and told). The faculty approver rejects
    only what waits for them; orgadmins and admins any pending request."""
    req = _find(session, actor, request_id, Action.REQUEST_REJECT)
    reason = _check_reason(reason)
    _pending(req)
    only_approver = not actor.is_admin and C.Role.ORGADMIN not in actor.roles
    if only_approver and req.status != C.RequestStatus.REQUESTED:
        raise ConflictError(f"request {req.id} was verified already: its orgadmin decides now")
    req.reject_reason = reason
    _decided(req, actor, C.RequestStatus.REJECTED)
    notify.request_event(session, req, C.RequestEvent.REJECTED, reason=reason)
    return _info(session, req)


@guarded(Action.REQUEST_EDIT)
def edit_request(
    session: Session,
    actor: Actor,
    settings: Settings,
    request_id: int,
    *,
    ram_mb: int | None = None,
    vcpus: int | None = None,
    extra_disk_gb: int | None = None,
    disk_gb: int | None = None,
    clone_count: int | None = None,
    public_ip: bool | None = None,
    security_domain: str | None = None,
    purpose: str | None = None,
) -> RequestInfo:
    """Change a pending request and check it again as when it was made. Its requester
    changes anything; an approver only the sizes."""
    req = _find(session, actor, request_id, Action.REQUEST_EDIT)
    _pending(req)
    given = {
        name
        for name, value in {
            "ram_mb": ram_mb,
            "vcpus": vcpus,
            "extra_disk_gb": extra_disk_gb,
            "disk_gb": disk_gb,
            "clone_count": clone_count,
            "public_ip": public_ip,
            "security_domain": security_domain,
            "purpose": purpose,
        }.items()
        if value is not None
    }
    if not given:
        raise ValidationError("nothing to change")
    if actor.user_id != req.requester_id and given - SIZE_FIELDS:
        raise PermissionDenied(
            f"{actor.username} may change only the sizes of request {req.id}"
            " (RAM, vCPUs, disk sizes, clone count)"
        )
    kind = C.RequestKind(req.request_type)
    fits = {
        "extra_disk_gb": kind == C.RequestKind.CREATE,
        "disk_gb": kind == C.RequestKind.ATTACH_DISK,
        "clone_count": kind == C.RequestKind.CLONE,
        "ram_mb": kind in (C.RequestKind.CREATE, C.RequestKind.EDIT),
        "vcpus": kind in (C.RequestKind.CREATE, C.RequestKind.EDIT),
        "public_ip": kind in (C.RequestKind.CREATE, C.RequestKind.EDIT),
        "security_domain": kind in (C.RequestKind.CREATE, C.RequestKind.EDIT),
        "purpose": True,
    }
    wrong = sorted(name for name in given if not fits[name])
    if wrong:
        raise ValidationError(f"a {kind} request has no {', '.join(wrong)}")
    if ram_mb is not None:
        req.RAM = ram_mb
    if vcpus is not None:
        req.vCPU = vcpus
    if extra_disk_gb is not None:
        req.extra_HDD = extra_disk_gb
    if disk_gb is not None:
        req.attach_disk = disk_gb
    if clone_count is not None:
        req.clone_count = clone_count
    if public_ip is not None:
        if kind == C.RequestKind.EDIT:
            req.public_ip_change = public_ip
        else:
            req.public_ip = public_ip
    if security_domain is not None:
        req.security_domain_id = _domain_id(session, security_domain)
    if purpose is not None:
        req.purpose = vm_rules.check_purpose(purpose)
    requester = session.get(User, req.requester_id)
    with session.no_autoflush:
        _validate(session, actor_of(session, requester), settings, req)
    return _info(session, req)


def _next_approvers(session: Session, req: RequestQueue) -> str:
    """Who the request waits for, in words (the mail finds their addresses)."""
    if req.status == C.RequestStatus.REQUESTED:
        return _username(session, req.approver_id)
    if req.status == C.RequestStatus.VERIFIED:
        return "the orgadmins of the organisation"
    return "the admins"


@guarded(Action.REQUEST_REMIND)
def remind_request(session: Session, actor: Actor, request_id: int) -> str:
    """Remind whoever the pending request waits for (at most once a day); returns who."""
    req = _find(session, actor, request_id, Action.REQUEST_REMIND)
    _pending(req)
    now = utcnow()
    interval = timedelta(seconds=C.REQUEST_REMIND_INTERVAL_S)
    if req.last_reminded_at is not None and now - req.last_reminded_at < interval:
        raise ConflictError(
            f"request {req.id} was reminded at {req.last_reminded_at:%Y-%m-%d %H:%M} UTC;"
            " once a day is enough"
        )
    req.last_reminded_at = now
    notify.request_event(session, req, C.RequestEvent.REMINDED)
    return _next_approvers(session, req)


@guarded(Action.REQUEST_WITHDRAW)
def withdraw_request(session: Session, actor: Actor, request_id: int) -> None:
    """The requester takes back a pending request (it is deleted)."""
    req = _find(session, actor, request_id, Action.REQUEST_WITHDRAW)
    _pending(req)
    session.execute(delete(RequestQueue).where(RequestQueue.id == req.id))
    session.expunge(req)
