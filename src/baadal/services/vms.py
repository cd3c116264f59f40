"""VMs: what the front doors call to create, see and operate VMs.

Every function checks the actor with the policy, validates (clear error, nothing
written), then records the change and its task in the caller's transaction. The handlers
in ``baadal.vm`` do the work.
"""

from __future__ import annotations

import functools
import logging
import operator
import secrets
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from pydantic_core import to_json
from sqlalchemy import (
    ColumnElement,
    Engine,
    Integer,
    Select,
    bindparam,
    case,
    delete,
    func,
    literal_column,
    or_,
    select,
)
from sqlalchemy.orm import Session, selectinload

from baadal import address_pools, placement
from baadal import constants as C
from baadal.config import Settings
from baadal.db.direct import DirectQuery, Row
from baadal.db.models import (
    VM,
    AttachedDisk,
    Datastore,
    Host,
    PrivateIpPool,
    PublicIpPool,
    Snapshot,
    Task,
    User,
    UserVMMap,
    VMEventLog,
    VncAccess,
)
from baadal.db.session import session_scope
from baadal.errors import ConflictError, NotFoundError, PermissionDenied, ValidationError
from baadal.gcpause import paused_gc
from baadal.net.validators import check_int, check_safe_name
from baadal.services import auditing, lookup, vm_rules
from baadal.services.policy import (
    Action,
    Actor,
    Scope,
    guarded,
    require,
    scope_of,
    task_filter,
    vm_filter,
)
from baadal.services.rows import Page, one_more_than
from baadal.timeutil import utcnow

# The VM code and the task queue (libvirt XML, RRD files, SSH, the queue's statements:
# 0.06 s a process) are imported by the functions that change VMs: `vm list` and the
# other reads need none of it.

log = logging.getLogger("baadal")

#: operations a VM's users queue directly (no approval needed)
DIRECT_OPERATIONS = {
    "start": C.TaskType.START_VM,
    "stop": C.TaskType.STOP_VM,
    "suspend": C.TaskType.SUSPEND_VM,
    "resume": C.TaskType.RESUME_VM,
    "destroy": C.TaskType.DESTROY_VM,
    "delete": C.TaskType.DELETE_VM,
    "save-template": C.TaskType.SAVE_AS_TEMPLATE,
}


@dataclass(frozen=True)
class Queued:
    vm_id: int
    task_id: int


def _find(session: Session, actor: Actor, name_or_id: str | int, action: Action) -> VM:
    """The VM the actor means (their own first when names clash), if they may ``action``."""
    vm = lookup.vm(session, name_or_id, prefer=vm_filter(actor, Action.VM_READ))
    require(session, actor, action, vm, f"VM {vm.vm_name}")
    return vm


def _owner(session: Session, actor: Actor, username: str | None) -> User:
    """The new VM's owner: the actor, or (for those allowed) the named user."""
    if username is None or username == actor.username:
        user = session.get(User, actor.user_id)
    else:
        require(session, actor, Action.VM_CREATE_FOR_OTHERS)
        user = session.scalar(select(User).where(User.username == username))
    if user is None:
        raise NotFoundError(f"no user named {username or actor.username!r}")
    return user


def _host(session: Session, actor: Actor, name: str | None) -> Host | None:
    """The host a VM was asked to go on (admins only): it must be UP."""
    if name is None:
        return None
    require(session, actor, Action.VM_PLACE)
    host = lookup.host(session, name)
    if host.status != C.HostStatus.UP:
        raise ConflictError(f"host {host.host_name} is {C.HostStatus(host.status).name}")
    return host


@guarded(Action.VM_CREATE)
def request_vm(
    session: Session,
    actor: Actor,
    settings: Settings,
    *,
    vm_name: str,
    template: str | int,
    ram_mb: int,
    vcpus: int,
    owner: str | None = None,
    security_domain: str | None = None,
    public_ip: bool = False,
    extra_disk_gb: int = 0,
    host: str | None = None,
    purpose: str | None = None,
    network: bool = True,
    requester_id: int | None = None,
    users: Collection[int] = (),
) -> Queued:
    """An approved VM request: the VM row (IN_QUEUE), its users, its 'Create VM' task.
    ``owner`` is a username (default: the actor). Without ``security_domain`` the VM goes
    in the settings' default domain; ``network=False`` asks for a VM with no network.
    ``requester_id`` names who asked when the actor only approves (a request: the actor
    does not become a user of the VM then); ``users`` are further users (collaborators)."""
    from baadal.tasks import queue
    from baadal.vm.disk import check_disk_size
    from baadal.vm.edit import check_ram_vcpus

    check_safe_name(vm_name, "VM name", 30)
    check_ram_vcpus(ram_mb, vcpus)
    purpose = vm_rules.check_purpose(purpose)
    if extra_disk_gb:
        check_disk_size(extra_disk_gb)
    owner_row = _owner(session, actor, owner)
    chosen = _host(session, actor, host)
    tmpl = vm_rules.template_for(session, actor, settings, template)
    domain = vm_rules.new_vm_domain(session, actor, settings, security_domain, network)
    if public_ip and domain is None:
        raise ValidationError("a VM without a network cannot have a public IP")
    identity = vm_rules.check_name_free(session, owner_row, vm_name)
    # early, non-binding checks so the user hears now, not from a failed task
    placement.choose_datastore(session, tmpl.hdd + extra_disk_gb)
    others = session.scalars(select(Host.id).where(Host.id != chosen.id)).all() if chosen else ()
    placement.find_new_host(session, ram_mb, vcpus, exclude_host_ids=others)
    # a user id may be 0 (SQLite gives the first account 0: the system user is -1)
    requester_id = actor.user_id if requester_id is None else requester_id
    vm = VM(
        vm_name=vm_name,
        vm_identity=identity,
        RAM=ram_mb,
        vCPU=vcpus,
        HDD=tmpl.hdd,
        extra_HDD=extra_disk_gb,
        template_id=tmpl.id,
        owner_id=owner_row.id,
        requester_id=requester_id,
        security_domain_id=domain.id if domain else None,
        public_ip_wanted=public_ip,
        purpose=purpose,
        status=C.VMStatus.IN_QUEUE,
    )
    session.add(vm)
    session.flush()
    auditing.note(vm)
    for user_id in {owner_row.id, requester_id, *users}:
        session.add(UserVMMap(user_id=user_id, vm_id=vm.id))
    params = {"host_id": chosen.id} if chosen else {}
    task = queue.enqueue(
        session,
        C.TaskType.CREATE_VM,
        vm_id=vm.id,
        parameters=params,
        requester_id=requester_id,
    )
    return Queued(vm.id, task.id)


@guarded(Action.VM_ADOPT)
def launch_existing_vm_image(
    session: Session,
    actor: Actor,
    settings: Settings,
    *,
    vm_name: str,
    template: str | int,
    datastore: str,
    ram_mb: int,
    vcpus: int,
    owner: str | None = None,
    security_domain: str | None = None,
    host: str | None = None,
    network: bool = True,
) -> VM:
    """Admin: make a VM of the image already at <datastore>/<vms>/<identity>/ (no task);
    its security domain is chosen as :func:`request_vm` chooses it."""
    from baadal.vm import install
    from baadal.vm.edit import check_ram_vcpus

    check_safe_name(vm_name, "VM name", 30)
    check_ram_vcpus(ram_mb, vcpus)
    owner_row = _owner(session, actor, owner)
    tmpl = vm_rules.template_for(session, actor, settings, template)
    domain = vm_rules.new_vm_domain(session, actor, settings, security_domain, network)
    chosen = _host(session, actor, host)
    ds = lookup.datastore(session, datastore)
    identity = vm_rules.check_name_free(session, owner_row, vm_name)
    vm = VM(
        vm_name=vm_name,
        vm_identity=identity,
        RAM=ram_mb,
        vCPU=vcpus,
        template_id=tmpl.id,
        owner_id=owner_row.id,
        requester_id=actor.user_id,
        datastore_id=ds.id,
        security_domain_id=domain.id if domain else None,
        status=C.VMStatus.IN_QUEUE,
    )
    session.add(vm)
    session.flush()
    auditing.note(vm)
    session.add(UserVMMap(user_id=owner_row.id, vm_id=vm.id))
    install.launch_existing_vm_image(session, settings, vm, host_id=chosen.id if chosen else None)
    return vm


@guarded(Action.VM_LIST)
def list_vms(session: Session, actor: Actor) -> list[VMSummary]:
    """Every VM the actor may see, as plain rows of one query (the CLI's whole list)."""
    require(session, actor, Action.VM_LIST)
    query = _SUMMARIES.where(vm_filter(actor)).order_by(VM.id)
    with paused_gc():  # every VM at once, no cycles (see baadal.gcpause)
        return [_summary(row) for row in session.execute(query)]


class VMSummary(NamedTuple):
    """A VM as a list shows it, in plain values: read with its owner's name, host and
    addresses as one row of one query (no ORM objects: a page of them costs a tenth; a
    named tuple is made and read faster than a frozen dataclass)."""

    id: int
    name: str
    identity: str
    status: C.VMStatus
    owner: str | None
    ram_mb: int
    vcpus: int
    disk_gb: int
    extra_disk_gb: int
    host: str | None
    host_id: int | None
    private_ip: str | None
    public_ip: str | None
    locked: bool
    #: when the idle sweep will shut the VM down or delete it unless kept (None: no warning)
    shutdown_warning_date: datetime | None
    delete_warning_date: datetime | None


#: each of :class:`VMSummary`'s fields and the column it is read from
_SUMMARY_COLUMNS: dict[str, Any] = {
    "id": VM.id,
    "name": VM.vm_name,
    "identity": VM.vm_identity,
    "status": VM.status,
    "owner": User.username,
    "ram_mb": VM.RAM,
    "vcpus": VM.vCPU,
    "disk_gb": VM.HDD,
    "extra_disk_gb": VM.extra_HDD,
    "host": Host.host_name,
    "host_id": VM.host_id,
    "private_ip": PrivateIpPool.private_ip,
    "public_ip": PublicIpPool.public_ip,
    "locked": VM.locked,
    "shutdown_warning_date": VM.shutdown_warning_date,
    "delete_warning_date": VM.delete_warning_date,
}

#: what a VM list shows, in one query, each column labelled as its field (built once:
#: ``.where`` makes a new statement)
_SUMMARIES: Select[tuple[Any, ...]] = (
    select(*(column.label(name) for name, column in _SUMMARY_COLUMNS.items()))
    .outerjoin(User, User.id == VM.owner_id)
    .outerjoin(Host, Host.id == VM.host_id)
    .outerjoin(PrivateIpPool, PrivateIpPool.id == VM.private_ip_id)
    .outerjoin(PublicIpPool, PublicIpPool.id == VM.public_ip_id)
)


#: each status by its number (a dict lookup costs a fifth of ``C.VMStatus(n)``)
_STATUS_OF = {status.value: status for status in C.VMStatus}


def _summary(row: Row) -> VMSummary:
    """The row in the summary's field order (the select lists them so), with the status
    as its enum, no extra disk as 0 and ``locked`` as a bool."""
    values = list(row)
    values[3], values[8], values[13] = _STATUS_OF[values[3]], values[8] or 0, bool(values[13])
    return VMSummary._make(values)


@guarded(Action.VM_LIST)
def list_vm_page(
    session: Session,
    actor: Actor,
    *,
    after: int | None = None,
    limit: int = C.API_PAGE_DEFAULT,
    status: C.VMStatus | None = None,
    owner: str | None = None,
    host: str | None = None,
    mine: bool = False,
) -> Page[VMSummary]:
    """The VMs the actor may see with an id above ``after``, in one query (keyset
    pagination: a page costs the same on the first and the thousandth page, and no VM
    is skipped or shown twice when others are added meanwhile); ``mine``: only those
    the actor owns or shares (a dashboard), whatever else their role lets them see."""
    require(session, actor, Action.VM_LIST)
    values = _page_values(after, limit, status, owner, host)
    rows = _page_query(actor, frozenset(values), mine, limit).rows(session, values)
    return Page.of([_summary(row) for row in rows], limit, lambda vm: vm.id)


class JSONPage(NamedTuple):
    """A page of VMs whose items are one JSON array, ready to send."""

    items: str
    #: as :attr:`Page.next`
    next: int | None


@guarded(Action.VM_LIST)
def list_vm_page_json(
    session: Session,
    actor: Actor,
    fields: tuple[str, ...],
    *,
    after: int | None = None,
    limit: int = C.API_PAGE_DEFAULT,
    status: C.VMStatus | None = None,
    owner: str | None = None,
    host: str | None = None,
) -> JSONPage:
    """:func:`list_vm_page` with each VM a JSON object of the :class:`VMSummary`
    ``fields`` (see :func:`json_values`): the API's busiest read. SQLite, in this
    process, writes the JSON itself: making a hundred rows into Python values and those
    into JSON cost twice the query (``bench/api.py``)."""
    require(session, actor, Action.VM_LIST)
    values = _page_values(after, limit, status, owner, host)
    filters = frozenset(values)
    if session.get_bind().dialect.name != "sqlite":
        # a database server is shared by the whole cloud, and PostgreSQL writes JSON
        # slower than Python does: the web server's process writes it from plain rows
        rows = _json_rows_query(actor, filters, fields, limit).rows(session, values)
        items = to_json([dict(zip(fields, row[1:], strict=True)) for row in rows[:limit]])
        return JSONPage(items.decode(), rows[limit - 1][0] if len(rows) > limit else None)
    query = _json_page_query(actor, filters, fields, limit)
    items, last, count = query.rows(session, values)[0]
    return JSONPage(items, last if count > limit else None)


#: each status's name in JSON
STATUS_NAMES = {status: status.name.lower() for status in C.VMStatus}


def json_values(vm: VMSummary, fields: tuple[str, ...]) -> dict[str, Any]:
    """The ``fields`` of ``vm`` as JSON values, as :func:`list_vm_page_json` writes them
    (a status by its name in lower case)."""
    values = dict(zip(fields, _getter(fields)(vm), strict=True))
    if "status" in values:
        values["status"] = STATUS_NAMES[values["status"]]
    return values


@functools.lru_cache(maxsize=16)
def _getter(fields: tuple[str, ...]) -> Callable[[VMSummary], tuple[Any, ...]]:
    """The fields' values of a summary as a tuple, in one C call."""
    picked = operator.itemgetter(*(VMSummary._fields.index(name) for name in fields))
    return picked if len(fields) > 1 else lambda vm: (picked(vm),)


def _page_values(
    after: int | None,
    limit: int,
    status: C.VMStatus | None,
    owner: str | None,
    host: str | None,
) -> dict[str, Any]:
    """A page query's bound values, whose keys name the filters it needs (``limit`` is
    only checked: see :func:`_page_query`)."""
    check_int(limit, "page size", 1, C.API_PAGE_MAX)
    values = {"after": 0 if after is None else check_int(after, "after", 0, C.ROW_ID_MAX)}
    if status is not None:
        values["status"] = C.VMStatus(status)
    if owner is not None:
        values["owner"] = owner
    if host is not None:
        values["host"] = host
    return values


@functools.lru_cache(maxsize=256)
def _page_query(actor: Actor, filters: frozenset[str], mine: bool, limit: int) -> DirectQuery:
    """A page of ``limit`` VMs for this actor and set of filters and one more (it says
    more follow), the filters' values bound at execution: built and compiled once, run
    on the driver's cursor (a page read a third faster than a statement built per call,
    and as much again than one run by SQLAlchemy); ``limit`` is checked by
    :func:`_page_values`."""
    query = (
        _SUMMARIES.where(vm_filter(actor), VM.id > bindparam("after"))
        .order_by(VM.id)
        .limit(one_more_than(limit))
    )
    if "status" in filters:
        query = query.where(VM.status == bindparam("status"))
    if "owner" in filters:
        query = query.where(User.username == bindparam("owner"))
    if "host" in filters:
        query = query.where(Host.host_name == bindparam("host"))
    if mine:
        shared = select(UserVMMap.vm_id).where(UserVMMap.user_id == actor.user_id)
        query = query.where(or_(VM.owner_id == actor.user_id, VM.id.in_(shared)))
    return DirectQuery(query)


@functools.lru_cache(maxsize=256)
def _json_rows_query(
    actor: Actor, filters: frozenset[str], fields: tuple[str, ...], limit: int
) -> DirectQuery:
    """PostgreSQL's: the page of :func:`_page_query` as the id and the ``fields``, each
    column already its JSON value (see :func:`_json_column`)."""
    page = _page_query(actor, filters, False, limit).statement
    return DirectQuery(
        page.with_only_columns(
            VM.id, *(_json_column(_SUMMARY_COLUMNS[name], name).label(name) for name in fields)
        )
    )


def _json_column(column: Any, name: str) -> ColumnElement[Any]:
    """A summary's column as JSON shows it: a status by its name (written into the SQL:
    forty bound constants cost SQLAlchemy a fifth of a page)."""
    if name != "status":
        return column  # type: ignore[no-any-return]
    return case(
        *(
            (column == literal_column(str(s.value)), _sql_text(name))
            for s, name in STATUS_NAMES.items()
        )
    )


@functools.lru_cache(maxsize=256)
def _json_page_query(
    actor: Actor, filters: frozenset[str], fields: tuple[str, ...], limit: int
) -> DirectQuery:
    """SQLite's: the page of :func:`_page_query` (only the ``fields``' columns) as one
    row: the JSON array of its first ``limit`` rows in id order, the id of the last of
    them, and how many rows there were (more than ``limit``: another page follows, and
    its row is left out). The keys are written into the SQL, as the status names."""
    page = _page_query(actor, filters, False, limit).statement
    rows = page.with_only_columns(
        *(_SUMMARY_COLUMNS[name].label(name) for name in dict.fromkeys(("id", *fields)))
    ).subquery()
    pairs: list[Any] = []
    for name in fields:
        column = _json_column(rows.c[name], name)
        if name == "locked":  # kept as 0/1: JSON's own literals
            column = case(
                (column, func.json(_sql_text("true"))), else_=func.json(_sql_text("false"))
            )
        pairs += [_sql_text(name), column]
    page_size = literal_column(str(limit), Integer)
    # SQLite aggregates the rows in the subquery's order
    whole = select(
        func.json_group_array(func.json_object(*pairs)).label("array"),
        func.json_extract(func.json_group_array(rows.c.id), _sql_text("$[#-2]")).label("last"),
        func.count().label("count"),
    ).subquery()
    array = case(
        (whole.c.count > page_size, func.json_remove(whole.c.array, _sql_text("$[#-1]"))),
        else_=whole.c.array,
    )
    return DirectQuery(select(array, whole.c.last, whole.c.count))


def _sql_text(constant: str) -> ColumnElement[str]:
    """A string constant of this module's written into the SQL (never a caller's)."""
    return literal_column("'" + constant.replace("'", "''") + "'")


@guarded(Action.VM_READ)
def vm_summary(session: Session, actor: Actor, name_or_id: str | int) -> VMSummary:
    """One VM as a list shows it: by id, one query with the policy's filter in it (as
    the list's); when that finds nothing, the lookup says why (404, or 403 audited)."""
    if isinstance(name_or_id, int):
        require(session, actor, Action.VM_READ)
        rows = _readable_query(actor).rows(session, {"vm_id": name_or_id})
        if rows:
            return _summary(rows[0])
    vm = _find(session, actor, name_or_id, Action.VM_READ)
    return _summary(session.execute(_SUMMARIES.where(VM.id == vm.id)).one())


@functools.lru_cache(maxsize=256)
def _readable_query(actor: Actor) -> DirectQuery:
    """One VM by id if the actor may read it (built once per actor, as a page's)."""
    return DirectQuery(
        _SUMMARIES.where(VM.id == bindparam("vm_id"), vm_filter(actor, Action.VM_READ))
    )


@guarded(Action.VM_READ)
def get_vm(session: Session, actor: Actor, name_or_id: str | int) -> VM:
    return _find(session, actor, name_or_id, Action.VM_READ)


@guarded(Action.VM_READ)
def list_snapshots(session: Session, actor: Actor, name_or_id: str | int) -> Sequence[Snapshot]:
    vm = _find(session, actor, name_or_id, Action.VM_READ)
    return session.scalars(
        select(Snapshot).where(Snapshot.vm_id == vm.id).order_by(Snapshot.id)
    ).all()


@dataclass(frozen=True)
class ExtraDisk:
    """A disk attached to a VM besides its root disk."""

    name: str
    size_gb: int
    datastore: str
    #: False while the 'Attach Disk' task that reserved it is still to record it
    attached: bool


@guarded(Action.VM_READ)
def list_disks(session: Session, actor: Actor, name_or_id: str | int) -> list[ExtraDisk]:
    """The VM's extra disks by name, in one query."""
    vm = _find(session, actor, name_or_id, Action.VM_READ)
    rows = session.execute(
        select(AttachedDisk, Datastore.ds_name)
        .join(Datastore, Datastore.id == AttachedDisk.datastore_id)
        .where(AttachedDisk.vm_id == vm.id)
        .order_by(AttachedDisk.attached_disk_name)
    )
    return [
        ExtraDisk(disk.attached_disk_name, disk.capacity, ds_name, disk.task_id is None)
        for disk, ds_name in rows
    ]


@guarded(Action.VM_OPERATE)
def operate(session: Session, actor: Actor, name_or_id: str | int, operation: str) -> Task:
    """Queue a direct operation (start, stop, suspend, resume, destroy, delete, ...)."""
    from baadal.tasks import queue

    task_type = DIRECT_OPERATIONS.get(operation)
    if task_type is None:
        raise ValidationError(
            f"unknown operation {operation!r}; use one of {', '.join(DIRECT_OPERATIONS)}"
        )
    vm = _find(session, actor, name_or_id, Action.VM_OPERATE)
    auditing.note(detail=operation)
    if task_type != C.TaskType.DELETE_VM:
        vm_rules.require_installed(vm)
    return queue.enqueue(session, task_type, vm_id=vm.id, requester_id=actor.user_id)


@guarded(Action.VM_OPERATE)
def request_snapshot(session: Session, actor: Actor, name_or_id: str | int) -> Task:
    from baadal.tasks import queue
    from baadal.vm.snapshot import check_user_snapshot_limit

    vm = _find(session, actor, name_or_id, Action.VM_OPERATE)
    vm_rules.require_installed(vm)
    check_user_snapshot_limit(session, vm.id)
    return queue.enqueue(
        session,
        C.TaskType.SNAPSHOT_VM,
        vm_id=vm.id,
        parameters={"snapshot_type": int(C.SnapshotType.USER)},
        requester_id=actor.user_id,
    )


def _snapshot_task(
    session: Session,
    actor: Actor,
    name_or_id: str | int,
    snapshot: str | int,
    task_type: C.TaskType,
    *,
    allow_duplicate: bool = False,
) -> Task:
    from baadal.tasks import queue

    vm = _find(session, actor, name_or_id, Action.VM_OPERATE)
    snap = lookup.snapshot(session, vm, snapshot)
    return queue.enqueue(
        session,
        task_type,
        vm_id=vm.id,
        parameters={"snapshot_id": snap.id},
        requester_id=actor.user_id,
        allow_duplicate=allow_duplicate,
    )


@guarded(Action.VM_OPERATE)
def request_revert(
    session: Session, actor: Actor, name_or_id: str | int, snapshot: str | int
) -> Task:
    return _snapshot_task(session, actor, name_or_id, snapshot, C.TaskType.REVERT_TO_SNAPSHOT)


@guarded(Action.VM_OPERATE)
def request_delete_snapshot(
    session: Session, actor: Actor, name_or_id: str | int, snapshot: str | int
) -> Task:
    """Several deletions of one VM's snapshots may wait in the queue at once."""
    return _snapshot_task(
        session, actor, name_or_id, snapshot, C.TaskType.DELETE_SNAPSHOT, allow_duplicate=True
    )


@guarded(Action.VM_CHANGE)
def request_attach_disk(
    session: Session, actor: Actor, name_or_id: str | int, size_gb: int
) -> Task:
    from baadal.tasks import queue
    from baadal.vm.disk import check_disk_size

    vm = _find(session, actor, name_or_id, Action.VM_CHANGE)
    vm_rules.require_installed(vm)
    check_disk_size(size_gb)
    placement.choose_datastore(session, size_gb)  # refuse a disk that fits nowhere
    return queue.enqueue(
        session,
        C.TaskType.ATTACH_DISK,
        vm_id=vm.id,
        parameters={"disk_size": size_gb},
        requester_id=actor.user_id,
    )


@guarded(Action.VM_CHANGE)
def request_edit(
    session: Session,
    actor: Actor,
    name_or_id: str | int,
    *,
    ram_mb: int | None = None,
    vcpus: int | None = None,
    public_ip: bool | None = None,
    security_domain: str | None = None,
) -> Task:
    """Queue only the keys that change (upstream: 'Edit -> only changed keys')."""
    from baadal.tasks import queue
    from baadal.vm.edit import check_ram_vcpus

    vm = _find(session, actor, name_or_id, Action.VM_CHANGE)
    vm_rules.require_installed(vm)
    check_ram_vcpus(ram_mb, vcpus)
    params: dict[str, object] = {}
    if security_domain is not None:
        domain = vm_rules.security_domain_for(session, actor, security_domain)
        assert domain is not None
        vm_rules.check_domain_change(session, vm, domain)
        params["security_domain"] = domain.id
    if ram_mb is not None and ram_mb != vm.RAM:
        params["ram"] = ram_mb
    if vcpus is not None and vcpus != vm.vCPU:
        params["vcpus"] = vcpus
    if public_ip is not None and public_ip != (vm.public_ip_id is not None):
        params["public_ip"] = public_ip
    if not params:
        raise ValidationError("nothing to change: the VM already has this configuration")
    return queue.enqueue(
        session,
        C.TaskType.EDIT_VM_CONFIG,
        vm_id=vm.id,
        parameters=params,
        requester_id=actor.user_id,
    )


@guarded(Action.VM_CHANGE)
def request_clone(
    session: Session, actor: Actor, name_or_id: str | int, count: int, *, full: bool = False
) -> tuple[Task, list[int]]:
    """N clone rows named <name>_clone<k> (parent's config and users) and one task."""
    from baadal.tasks import queue

    vm = _find(session, actor, name_or_id, Action.VM_CHANGE)
    vm_rules.require_installed(vm)
    if vm.status != C.VMStatus.SHUTDOWN:
        raise ConflictError(f"{vm.vm_name} must be shut off to be cloned")
    check_int(count, "clone count", 1, C.CLONE_COUNT_MAX)
    owner_id = vm.owner_id if vm.owner_id is not None else C.SYSTEM_USER_ID
    owner = session.get(User, owner_id)
    users = session.scalars(select(UserVMMap.user_id).where(UserVMMap.vm_id == vm.id)).all()
    clone_ids = []
    k = 1
    while len(clone_ids) < count:
        name = f"{vm.vm_name}_clone{k}"
        k += 1
        identity = vm_rules.vm_identity(owner, name)
        if vm_rules.name_taken(session, owner, name, identity):
            continue
        clone = VM(
            vm_name=name,
            vm_identity=identity,
            RAM=vm.RAM,
            vCPU=vm.vCPU,
            HDD=vm.HDD,
            extra_HDD=vm.extra_HDD,
            template_id=vm.template_id,
            owner_id=vm.owner_id,
            requester_id=actor.user_id,
            security_domain_id=vm.security_domain_id,
            parent_id=vm.id,
            purpose=vm.purpose,
            status=C.VMStatus.IN_QUEUE,
        )
        session.add(clone)
        session.flush()
        for user_id in users:
            session.add(UserVMMap(user_id=user_id, vm_id=clone.id))
        clone_ids.append(clone.id)
    task = queue.enqueue(
        session,
        C.TaskType.CLONE_VM,
        vm_id=vm.id,
        parameters={"clone_vm_id": clone_ids, "full": full},
        requester_id=actor.user_id,
    )
    return task, clone_ids


@guarded(Action.VM_MIGRATE)
def request_migrate(
    session: Session, actor: Actor, name_or_id: str | int, dest_host: str | None, live: bool
) -> Task:
    """Validate now (installed, destination UP, not its own, with room: a clear error
    and nothing queued), then queue. Without ``dest_host`` placement chooses at run
    time."""
    from baadal.vm import migration

    vm = _find(session, actor, name_or_id, Action.VM_MIGRATE)
    migration.check_installed(vm)
    dest_id = None
    if dest_host is not None:
        require(session, actor, Action.VM_PLACE)
        dest_id = lookup.host(session, dest_host).id
    migration.choose_destination(session, vm, dest_id)
    return migration.add_migrate_task_to_queue(session, vm.id, dest_id, live, actor.user_id)


@dataclass(frozen=True)
class VMUser:
    """Someone who sees and operates a VM (its owner is one of them)."""

    username: str
    name: str
    organisation: str
    owner: bool


def _vm_users(session: Session, vm: VM) -> list[VMUser]:
    mapped = select(UserVMMap.user_id).where(UserVMMap.vm_id == vm.id)
    people = session.scalars(
        select(User)
        .where(or_(User.id.in_(mapped), User.id == vm.owner_id))
        .options(selectinload(User.organisation))
        .order_by(User.username)
    )
    return [
        VMUser(
            username=u.username,
            name=f"{u.first_name} {u.last_name}".strip(),
            organisation=u.organisation.name if u.organisation else "",
            owner=u.id == vm.owner_id,
        )
        for u in people
    ]


@guarded(Action.VM_READ)
def list_vm_users(session: Session, actor: Actor, name_or_id: str | int) -> list[VMUser]:
    """The VM's owner and everyone it is shared with (``user_vm_map``), in one query."""
    return _vm_users(session, _find(session, actor, name_or_id, Action.VM_READ))


@dataclass(frozen=True)
class VMDetails:
    """All a VM's page shows, read in one transaction."""

    vm: VM
    owner: str
    users: list[VMUser]
    snapshots: list[Snapshot]
    disks: list[AttachedDisk]
    #: the newest changes of its attributes first
    events: list[VMEventLog]
    #: its newest tasks first
    tasks: list[Task]
    #: the scheduled snapshots it takes (daily, weekly, ...)
    schedule: frozenset[C.SnapshotType]


@guarded(Action.VM_READ)
def vm_details(session: Session, actor: Actor, name_or_id: str | int) -> VMDetails:
    from baadal.tasks import queue

    vm = _find(session, actor, name_or_id, Action.VM_READ)
    owner = session.get(User, vm.owner_id) if vm.owner_id is not None else None
    snapshots = session.scalars(
        select(Snapshot).where(Snapshot.vm_id == vm.id).order_by(Snapshot.id)
    ).all()
    disks = session.scalars(
        select(AttachedDisk)
        .where(AttachedDisk.vm_id == vm.id, AttachedDisk.task_id.is_(None))
        .order_by(AttachedDisk.attached_disk_name)
    ).all()
    events = session.scalars(
        select(VMEventLog)
        .where(VMEventLog.vm_id == vm.id)
        .order_by(VMEventLog.id.desc())
        .limit(C.ITEMS_PER_PAGE)
    ).all()
    tasks = queue.list_tasks(
        session, vm_id=vm.id, limit=C.ITEMS_PER_PAGE, visible=task_filter(actor)
    )
    return VMDetails(
        vm=vm,
        owner=owner.username if owner else "",
        users=_vm_users(session, vm),
        snapshots=list(snapshots),
        disks=list(disks),
        events=list(events),
        tasks=tasks,
        schedule=frozenset(k for k in SCHEDULES if vm.snapshot_flag & k),
    )


#: the snapshots a VM may take on a schedule
SCHEDULES = (
    C.SnapshotType.DAILY,
    C.SnapshotType.WEEKLY,
    C.SnapshotType.MONTHLY,
    C.SnapshotType.YEARLY,
)


@guarded(Action.VM_OPERATE)
def set_snapshot_schedule(
    session: Session, actor: Actor, name_or_id: str | int, kinds: Collection[C.SnapshotType]
) -> VM:
    """Which scheduled snapshots (daily, weekly, monthly, yearly) the VM takes."""
    from baadal.vm.common import log_vm_event

    wanted = set(kinds)
    if not wanted <= set(SCHEDULES):
        raise ValidationError("a schedule is daily, weekly, monthly or yearly snapshots")
    vm = _find(session, actor, name_or_id, Action.VM_OPERATE)
    flag = sum(int(k) for k in wanted)
    if flag != vm.snapshot_flag:
        log_vm_event(session, vm, "snapshot_flag", vm.snapshot_flag, flag, actor.user_id)
        vm.snapshot_flag = flag
    return vm


def _active_person(session: Session, username: str) -> User:
    """Someone who may be given a VM: an account that is neither blocked nor pending."""
    from baadal.auth import accounts

    user = accounts.get_user(session, username)
    if user.block_user or user.registration_key != C.RegistrationKey.ACTIVE:
        raise ConflictError(f"{username} is blocked or not approved: they cannot use a VM")
    return user


def _is_vm_user(session: Session, vm: VM, user: User) -> bool:
    query = select(UserVMMap.vm_id).where(UserVMMap.vm_id == vm.id, UserVMMap.user_id == user.id)
    return session.scalar(query) is not None


@guarded(Action.VM_USERS)
def add_vm_user(session: Session, actor: Actor, name_or_id: str | int, username: str) -> None:
    """Share the VM with ``username``: they see and operate it as its owner does. Only
    admins share a VM across organisations."""
    vm = _find(session, actor, name_or_id, Action.VM_USERS)
    user = _active_person(session, username)
    owner = session.get(User, vm.owner_id) if vm.owner_id is not None else None
    same_org = owner is not None and owner.organisation_id == user.organisation_id
    if not same_org and scope_of(actor, Action.VM_USERS) != Scope.ALL:
        raise PermissionDenied(
            f"{actor.username} may not share VM {vm.vm_name} with {username}, "
            "who is of another organisation"
        )
    if user.id == vm.owner_id or _is_vm_user(session, vm, user):
        raise ConflictError(f"{username} is a user of VM {vm.vm_name} already")
    session.add(UserVMMap(user_id=user.id, vm_id=vm.id))
    auditing.note(detail=f"+{username}")


@guarded(Action.VM_USERS)
def remove_vm_user(session: Session, actor: Actor, name_or_id: str | int, username: str) -> None:
    """Stop sharing the VM with ``username``; its owner stays (give it away first)."""
    from baadal.auth import accounts

    vm = _find(session, actor, name_or_id, Action.VM_USERS)
    user = accounts.get_user(session, username)
    if user.id == vm.owner_id:
        raise ConflictError(
            f"{username} owns VM {vm.vm_name}: give it to another owner first (vm owner)"
        )
    if not _is_vm_user(session, vm, user):
        raise NotFoundError(f"{username} is not a user of VM {vm.vm_name}")
    session.execute(delete(UserVMMap).where(UserVMMap.vm_id == vm.id, UserVMMap.user_id == user.id))
    auditing.note(detail=f"-{username}")


@guarded(Action.VM_OWNER)
def transfer_ownership(session: Session, actor: Actor, name_or_id: str | int, username: str) -> VM:
    """Give the VM to ``username``, who becomes one of its users too; the previous owner
    stays a user (remove them if they should not). The VM keeps its identity: it names
    the libvirt domain and the disk files."""
    vm = _find(session, actor, name_or_id, Action.VM_OWNER)
    user = _active_person(session, username)
    if user.id == vm.owner_id:
        raise ConflictError(f"{username} owns VM {vm.vm_name} already")
    previous = session.get(User, vm.owner_id) if vm.owner_id is not None else None
    for person in (user, previous):
        if person is not None and not _is_vm_user(session, vm, person):
            session.add(UserVMMap(user_id=person.id, vm_id=vm.id))
    vm.owner_id = user.id
    session.flush()
    auditing.note(detail=f"owner {previous.username if previous else '-'} -> {username}")
    return vm


@dataclass(frozen=True)
class VncGrant:
    """What the user needs to open the console; the password never appears in repr."""

    vm_id: int
    token: str
    vnc_ip: str
    port: int
    expiry_time: datetime
    password: str | None = field(repr=False)


@guarded(Action.VM_CONSOLE)
def grant_vnc_access(
    engine: Engine,
    actor: Actor,
    settings: Settings,
    name_or_id: str | int,
    duration_s: int = C.VNC_ACCESS_DURATION_S,
) -> VncGrant:
    """Open a running VM's console for ``duration_s`` (upstream: 30 minutes, at most 10
    grants per VM in 24 hours). Each grant sets a fresh password on the running console
    and hands it out here, once: it is stored nowhere, and an earlier grant's password
    stops working. Each grant is its own row (that is what the limit counts); a refused
    grant changes nothing, and a grant whose password or NAT rule could not be set does
    not count. Without a NAT box the console is reached at its host's address."""
    from baadal.vm import console
    from baadal.vm import nat as vm_nat

    if (
        isinstance(duration_s, bool)
        or not isinstance(duration_s, int)
        or not 1 <= duration_s <= C.VNC_ACCESS_MAX_DURATION_S
    ):
        raise ValidationError(
            f"VNC access duration {duration_s!r} must be 1-{C.VNC_ACCESS_MAX_DURATION_S} s"
        )
    with console.console_lock(settings):
        row_id, grant, public_port = _record_vnc_grant(engine, actor, name_or_id, duration_s)
        try:
            password = console.set_new_password(engine, grant.vm_id)
            vm_nat.create_vnc_mapping_in_nat(engine, settings, grant.vm_id, public_port)
        except BaseException:
            with session_scope(engine) as session:  # the grant did not happen: not counted
                session.execute(delete(VncAccess).where(VncAccess.id == row_id))
            raise
    log.info(
        "VNC access to VM %d granted to %s until %s (grant %d)",
        grant.vm_id,
        actor.username,
        grant.expiry_time,
        row_id,
    )
    if settings.nat.nat_type != C.NatType.NONE:  # users reach the console through NAT
        vnc_ip = settings.nat.vnc_ip or settings.nat.nat_ip or grant.vnc_ip
        grant = replace(grant, vnc_ip=vnc_ip, port=public_port)
    return replace(grant, password=password)


def _record_vnc_grant(
    engine: Engine, actor: Actor, name_or_id: str | int, duration_s: int
) -> tuple[int, VncGrant, int]:
    """Check the VM and the daily limit and add the grant's row: its id, the grant at
    the VM's host address without a password yet, and its port on the NAT box."""
    from baadal.vm import nat as vm_nat

    now = utcnow()
    with session_scope(engine) as session:
        vm = _find(session, actor, name_or_id, Action.VM_CONSOLE)
        session.refresh(vm, with_for_update=True)  # concurrent grants count one by one
        if vm.status != C.VMStatus.RUNNING:
            raise ConflictError(f"VM {vm.vm_name} is not running: start it to open its console")
        if vm.host is None or vm.vnc_port is None:
            raise ConflictError(f"VM {vm.vm_name} is not placed on a host (no VNC console)")
        window_start = now - timedelta(seconds=C.VNC_GRANT_WINDOW_S)
        recent = session.scalar(
            select(func.count())
            .select_from(VncAccess)
            .where(VncAccess.vm_id == vm.id, VncAccess.time_requested > window_start)
        )
        if recent >= C.MAX_VNC_ALLOWED_IN_A_DAY:
            raise ConflictError(
                f"VM {vm.vm_name} already had {recent} VNC grants in the last 24 hours "
                f"(at most {C.MAX_VNC_ALLOWED_IN_A_DAY}); try again later"
            )
        start, end = address_pools.vnc_port_range(session)
        row = VncAccess(
            vm_id=vm.id,
            token=secrets.token_hex(10),
            host_id=vm.host_id,
            vnc_source_port=vm_nat.public_vnc_port(session, vm, start, end),
            vnc_destination_port=vm.vnc_port,
            duration=duration_s,
            status="active",
            time_requested=now,
            expiry_time=now + timedelta(seconds=duration_s),
        )
        session.add(row)
        session.flush()
        return (
            row.id,
            VncGrant(vm.id, row.token, vm.host.address, vm.vnc_port, row.expiry_time, None),
            row.vnc_source_port,
        )
