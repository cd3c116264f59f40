"""Quotas: what a user's or an organisation's VMs use, what they may use, and the check.

A user's usage is the VMs they own; an organisation's, the VMs its members own. Queued
disk and configuration changes count before they run (their tasks have not changed the
VM yet). Limits: the ``quota`` row's value, else the settings' ``[quota]`` default; 0 is
unlimited.

The check is made twice: when a request is made (a clear refusal early) and when it is
queued, after :func:`lock` took the owner's and the organisation's quota rows: on
PostgreSQL with ``SELECT ... FOR UPDATE`` (a concurrent approval for the same owner or
organisation waits, then counts what the first one queued), on SQLite the transaction
already holds the database's write lock (``BEGIN IMMEDIATE``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from sqlalchemy import Select, func, or_, select
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session

from baadal import constants as C
from baadal.config import Settings
from baadal.db.models import VM, Quota, RequestQueue, Task, User
from baadal.errors import ResourceExhausted

Amounts = dict[C.QuotaItem, int]

#: RAM is kept in MB and limited in GB
MB_PER_GB = 1024


@dataclass(frozen=True)
class Account:
    """Whose quota: one user or one organisation."""

    user_id: int | None = None
    organisation_id: int | None = None

    def where(self) -> object:
        if self.user_id is not None:
            return Quota.user_id == self.user_id
        return Quota.organisation_id == self.organisation_id


def zero() -> Amounts:
    return dict.fromkeys(C.QuotaItem, 0)


def request_demand(session: Session, request: RequestQueue) -> Amounts:
    """What the request adds to its owner's usage once it runs (RAM in MB)."""
    need = zero()
    kind = C.RequestKind(request.request_type)
    if kind == C.RequestKind.CREATE:
        need[C.QuotaItem.VMS] = 1
        need[C.QuotaItem.VCPUS] = request.vCPU or 0
        need[C.QuotaItem.RAM_GB] = request.RAM or 0
        need[C.QuotaItem.DISK_GB] = (request.HDD or 0) + (request.extra_HDD or 0)
        need[C.QuotaItem.PUBLIC_IPS] = int(bool(request.public_ip))
        return need
    vm = session.get(VM, request.parent_id) if request.parent_id is not None else None
    if vm is None:
        return need
    if kind == C.RequestKind.CLONE:
        count = request.clone_count or 0
        need[C.QuotaItem.VMS] = count
        need[C.QuotaItem.VCPUS] = count * vm.vCPU
        need[C.QuotaItem.RAM_GB] = count * vm.RAM
        need[C.QuotaItem.DISK_GB] = count * (vm.HDD + vm.extra_HDD)
    elif kind == C.RequestKind.ATTACH_DISK:
        need[C.QuotaItem.DISK_GB] = request.attach_disk or 0
    else:
        need[C.QuotaItem.VCPUS] = max(0, (request.vCPU or vm.vCPU) - vm.vCPU)
        need[C.QuotaItem.RAM_GB] = max(0, (request.RAM or vm.RAM) - vm.RAM)
        has_ip = vm.public_ip_id is not None or vm.public_ip_wanted
        need[C.QuotaItem.PUBLIC_IPS] = int(bool(request.public_ip_change) and not has_ip)
    return need


def _owners(account: Account) -> Select[tuple[int]]:
    if account.user_id is not None:
        return select(User.id).where(User.id == account.user_id)
    return select(User.id).where(User.organisation_id == account.organisation_id)


def usage(session: Session, account: Account) -> Amounts:
    """What the account's VMs use now, with the queued changes that have not run (RAM in
    MB)."""
    owners = _owners(account)
    has_public_ip = or_(VM.public_ip_id.is_not(None), VM.public_ip_wanted.is_(True))
    row = session.execute(
        select(
            func.count(VM.id),
            func.coalesce(func.sum(VM.vCPU), 0),
            func.coalesce(func.sum(VM.RAM), 0),
            func.coalesce(func.sum(VM.HDD + VM.extra_HDD), 0),
            func.count(VM.id).filter(has_public_ip),
        ).where(VM.owner_id.in_(owners))
    ).one()
    used = dict(zip(C.QuotaItem, (int(v) for v in row), strict=True))
    queued = session.scalars(
        select(RequestQueue)
        .join(Task, Task.id == RequestQueue.task_id)
        .where(
            RequestQueue.owner_id.in_(owners),
            RequestQueue.request_type.in_([C.RequestKind.ATTACH_DISK, C.RequestKind.EDIT]),
            RequestQueue.status == C.RequestStatus.IN_QUEUE,
            Task.status.in_(C.TASK_UNFINISHED),
        )
    )
    return add(used, *(request_demand(session, r) for r in queued))


def add(first: Mapping[C.QuotaItem, int], *more: Mapping[C.QuotaItem, int]) -> Amounts:
    total = dict(first)
    for amounts in more:
        for item, value in amounts.items():
            total[item] += value
    return total


def limits(session: Session, settings: Settings, account: Account) -> Amounts:
    """The account's limits (RAM and disk in GB; 0 = unlimited): its row, else defaults."""
    prefix = "user" if account.user_id is not None else "org"
    row = session.scalar(select(Quota).where(account.where()))
    found = {}
    for item in C.QuotaItem:
        override = getattr(row, item.value) if row is not None else None
        default = getattr(settings.quota, f"{prefix}_{item.value}")
        found[item] = default if override is None else override
    return found


def accounts_of(session: Session, owner_id: int) -> list[Account]:
    """The owner's account and their organisation's (checked and locked in this order
    reversed: organisation first, so two lockers never wait on each other)."""
    org = session.scalar(select(User.organisation_id).where(User.id == owner_id))
    found = [Account(user_id=owner_id)]
    if org is not None:
        found.append(Account(organisation_id=org))
    return found


def lock(session: Session, accounts: Iterable[Account]) -> None:
    """Hold the accounts' quota rows until the transaction ends (created empty where
    missing). SQLite needs nothing: the transaction holds the write lock from its start."""
    if session.get_bind().dialect.name != "postgresql":
        return
    for account in sorted(accounts, key=lambda a: a.user_id is not None):
        values = {"user_id": account.user_id, "organisation_id": account.organisation_id}
        column = "user_id" if account.user_id is not None else "organisation_id"
        session.execute(
            postgresql.insert(Quota)
            .values(**values)
            .on_conflict_do_nothing(index_elements=[column])
        )
        session.execute(select(Quota.id).where(account.where()).with_for_update())


def _describe(item: C.QuotaItem, value: int) -> str:
    if item == C.QuotaItem.RAM_GB:
        return f"{value / MB_PER_GB:g} GB RAM"
    if item == C.QuotaItem.DISK_GB:
        return f"{value} GB disk"
    return f"{value} {item.value.replace('_', ' ')}"


def check(
    session: Session, settings: Settings, owner_id: int, need: Mapping[C.QuotaItem, int]
) -> None:
    """Refuse (ResourceExhausted, naming the limit) when ``need`` on top of the usage
    passes a limit of the owner or of their organisation."""
    for account in accounts_of(session, owner_id):
        used = usage(session, account)
        limit = limits(session, settings, account)
        for item in C.QuotaItem:
            if not need[item] or not limit[item]:
                continue
            cap = limit[item] * (MB_PER_GB if item == C.QuotaItem.RAM_GB else 1)
            if used[item] + need[item] > cap:
                whose = "the user's" if account.user_id is not None else "the organisation's"
                raise ResourceExhausted(
                    f"quota: {whose} limit is {_describe(item, cap)}; "
                    f"{_describe(item, used[item])} used, {_describe(item, need[item])} asked"
                )
