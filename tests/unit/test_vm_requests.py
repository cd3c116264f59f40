"""The request workflow on SQLite with the fake driver: the chain per role, every
refusal (nothing written), edits, reminders, withdrawals, failed tasks, and the mail
hook at every transition."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from baadal import constants as C
from baadal.config import Settings, get_settings
from baadal.db.models import (
    VM,
    AuditLog,
    OutboxMail,
    PublicIpPool,
    RequestQueue,
    Task,
    User,
    UserVMMap,
)
from baadal.db.session import session_scope
from baadal.drivers import fake
from baadal.errors import (
    ConflictError,
    NotFoundError,
    PermissionDenied,
    ResourceExhausted,
    ValidationError,
)
from baadal.mail import notify
from baadal.services import audit, networks, quotas, tasks, vm_requests, vms
from baadal.services.policy import SYSTEM, actor_for
from baadal.tasks import queue
from tests.support.cloud import Cloud
from tests.support.people import people_cloud, race_approvals

pytestmark = pytest.mark.unit

Q = C.RequestStatus


@pytest.fixture
def cloud(sqlite_engine: Engine, settings: Settings, tmp_path: Path) -> Iterator[Cloud]:
    settings.general.snapshot_requires_ping = False
    yield people_cloud(sqlite_engine, settings, tmp_path)
    fake.reset()


@pytest.fixture
def events(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, str, str | None]]:
    seen: list[tuple[int, str, str | None]] = []

    def record(session: Session, request: RequestQueue, event: str, reason: str | None = None):
        seen.append((request.id, str(event), reason))

    monkeypatch.setattr(notify, "request_event", record)
    return seen


def call(engine: Engine, who: str, func_: Any, *args: Any, **kw: Any) -> Any:
    """One service call as ``who`` in its own transaction (a door's)."""
    with session_scope(engine) as s:
        return func_(s, actor_for(s, who), *args, **kw)


def make(engine: Engine, settings: Settings, who: str, name: str = "vm1", **kw: Any) -> int:
    args: dict[str, Any] = {"template": "tiny", "security_domain": "research"}
    if who in ("stu", "eve", "col"):
        args["approver"] = "fac"
    args.update(kw)
    return call(engine, who, vm_requests.request_create, settings, vm_name=name, **args)


def info(engine: Engine, request_id: int) -> vm_requests.RequestInfo:
    return call(engine, "admin", vm_requests.get_request, request_id)


def run(engine: Engine, settings: Settings, task_id: int) -> None:
    tasks.inline_runner(engine, SYSTEM, settings, [task_id])()


def rows(engine: Engine) -> tuple[int, int, int]:
    with session_scope(engine) as s:
        return (
            s.scalar(select(func.count()).select_from(RequestQueue)),
            s.scalar(select(func.count()).select_from(VM)),
            s.scalar(select(func.count()).select_from(Task)),
        )


def running_vm(engine: Engine, settings: Settings, name: str = "web") -> int:
    """A VM owned by fac, used by stu, installed (through the task engine)."""
    with session_scope(engine) as s:
        queued = vms.request_vm(
            s,
            SYSTEM,
            settings,
            vm_name=name,
            template="tiny",
            ram_mb=256,
            vcpus=1,
            owner="fac",
            security_domain="research",
            requester_id=s.scalar(select(User.id).where(User.username == "stu")),
        )
    run(engine, settings, queued.task_id)
    return queued.vm_id


def vm_users(engine: Engine, vm_id: int) -> set[str]:
    with session_scope(engine) as s:
        return set(
            s.scalars(
                select(User.username)
                .join(UserVMMap, UserVMMap.user_id == User.id)
                .where(UserVMMap.vm_id == vm_id)
            )
        )


# --- the chain ------------------------------------------------------------------------


def test_a_students_request_goes_up_the_chain_and_becomes_a_vm(
    sqlite_engine: Engine, settings: Settings, cloud: Cloud, events: list
) -> None:
    engine = sqlite_engine
    rid = make(engine, settings, "stu", collaborators=["col"], purpose="thesis")
    assert info(engine, rid).status == Q.REQUESTED
    assert info(engine, rid).owner == "fac"
    with pytest.raises(ConflictError, match="faculty approver's verification"):
        call(engine, "oa", vm_requests.approve_request, settings, rid)
    with pytest.raises(PermissionDenied):
        call(engine, "fac2", vm_requests.verify_request, rid)  # not the one named
    assert call(engine, "fac", vm_requests.verify_request, rid).status == Q.VERIFIED
    with pytest.raises(PermissionDenied):
        call(engine, "ob", vm_requests.approve_request, settings, rid)  # other org
    assert call(engine, "oa", vm_requests.approve_request, settings, rid).status == Q.APPROVED
    with pytest.raises(ConflictError, match="an admin's approval"):
        call(engine, "oa", vm_requests.approve_request, settings, rid)
    done = call(engine, "admin", vm_requests.approve_request, settings, rid)
    assert done.status == Q.IN_QUEUE and done.task_id is not None
    run(engine, settings, done.task_id)
    with session_scope(engine) as s:
        vm = s.scalar(select(VM).where(VM.vm_name == "vm1"))
        assert vm.status == C.VMStatus.RUNNING
        assert s.get(User, vm.owner_id).username == "fac"
        assert s.get(User, vm.requester_id).username == "stu"
        assert vm.purpose == "thesis"
        vm_id = vm.id
    assert vm_users(engine, vm_id) == {"fac", "stu", "col"}  # not the approving admin
    assert [e for _, e, _ in events] == ["made", "verified", "approved", "queued"]
    assert info(engine, rid).status == Q.IN_QUEUE
    # the audit log holds each step, and each refused attempt, about the request
    with session_scope(engine) as s:
        steps = s.execute(
            select(AuditLog.actor_name, AuditLog.function, AuditLog.target_id, AuditLog.outcome)
            .where(AuditLog.function.startswith("vm_requests."))
            .order_by(AuditLog.id)
        ).all()
    assert [
        (who, f.partition(".")[2], target, outcome[:7]) for who, f, target, outcome in steps
    ] == [
        ("stu", "request_create", rid, "ok"),
        ("fac2", "verify_request", rid, "refused"),
        ("fac", "verify_request", rid, "ok"),
        ("ob", "approve_request", rid, "refused"),
        ("oa", "approve_request", rid, "ok"),
        ("admin", "approve_request", rid, "ok"),
    ]


def test_a_new_vms_request_is_the_object_of_its_audit_entry(
    sqlite_engine: Engine, settings: Settings, cloud: Cloud
) -> None:
    """Not the template it names (whose id was the first request's too)."""
    make(sqlite_engine, settings, "stu", name="vm1")
    rid = make(sqlite_engine, settings, "stu", name="vm2")
    with session_scope(sqlite_engine) as s:
        entry = s.scalars(select(AuditLog).order_by(AuditLog.id.desc()).limit(1)).one()
        assert (entry.function, entry.target_type, entry.target_id, entry.target_name) == (
            "vm_requests.request_create",
            "request",
            rid,
            "vm2",
        )


def test_a_deleted_vms_audit_keeps_the_approval_that_made_it(
    sqlite_engine: Engine, settings: Settings, cloud: Cloud
) -> None:
    """``audit --vm NAME`` finds the same entries before and after the VM is deleted."""
    engine = sqlite_engine
    rid = make(engine, settings, "stu", name="vm1")
    task_id = call(engine, "admin", vm_requests.approve_request, settings, rid).task_id
    run(engine, settings, task_id)

    def about_vm1() -> list[tuple[str, str]]:
        found = call(engine, "admin", audit.list_entries, vm="vm1").items
        return [(e.actor_name, e.function) for e in found]

    before = about_vm1()
    assert ("admin", "vm_requests.approve_request") in before
    call(engine, "stu", vms.operate, "vm1", "delete")
    run(engine, settings, _last_task(engine))
    with session_scope(engine) as s:
        assert s.scalar(select(VM.id).where(VM.vm_name == "vm1")) is None
    after = about_vm1()
    assert after[0] == ("stu", "vms.operate") and after[1:] == before


@pytest.mark.parametrize(
    ("who", "starts"), [("fac", Q.VERIFIED), ("oa", Q.APPROVED), ("admin", Q.IN_QUEUE)]
)
def test_a_request_starts_where_its_requester_stands(
    sqlite_engine: Engine, settings: Settings, cloud: Cloud, who: str, starts: Q
) -> None:
    rid = make(sqlite_engine, settings, who)
    found = info(sqlite_engine, rid)
    assert found.status == starts and found.owner == who and found.approver is None
    assert (found.task_id is not None) == (starts == Q.IN_QUEUE)


def test_an_admins_request_is_queued_with_its_collaborators(
    sqlite_engine: Engine, settings: Settings, cloud: Cloud
) -> None:
    rid = make(sqlite_engine, settings, "admin", collaborators=["col", "admin"])
    found = info(sqlite_engine, rid)
    assert found.collaborators == ("col",)
    run(sqlite_engine, settings, found.task_id)
    with session_scope(sqlite_engine) as s:
        vm_id = s.scalar(select(VM.id).where(VM.vm_name == "vm1"))
    assert vm_users(sqlite_engine, vm_id) == {"admin", "col"}


@pytest.mark.parametrize(
    ("who", "told"),
    [
        ("fac", {("request_made", "oa@example.org")}),
        ("oa", {("request_made", "admin@example.org")}),
        ("admin", {("request_queued", "admin@example.org")}),  # nothing waits for anyone
    ],
)
def test_a_request_made_tells_only_whom_it_waits_for(
    sqlite_engine: Engine,
    settings: Settings,
    cloud: Cloud,
    monkeypatch: pytest.MonkeyPatch,
    who: str,
    told: set[tuple[str, str]],
) -> None:
    monkeypatch.setenv("BAADAL_MAIL__MAIL_ACTIVE", "true")
    get_settings.cache_clear()
    make(sqlite_engine, settings, who)
    with session_scope(sqlite_engine) as s:
        assert set(s.execute(select(OutboxMail.kind, OutboxMail.recipient))) == told


def test_the_first_account_on_sqlite_has_id_0_and_counts(
    sqlite_engine: Engine, settings: Settings, cloud: Cloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite gives the first account id 0 (the system user is -1): a falsy id must
    still be the requester of the VM, one of its users, and told about its requests."""
    monkeypatch.setenv("BAADAL_MAIL__MAIL_ACTIVE", "true")
    get_settings.cache_clear()
    with session_scope(sqlite_engine) as s:
        first = s.scalar(select(User.id).where(User.username == "admin"))
        assert first == 0
        vm_id = vms.request_vm(
            s, SYSTEM, settings, vm_name="web", template="tiny", ram_mb=256, vcpus=1,
            owner="fac", security_domain="research", requester_id=first,
        ).vm_id  # fmt: skip
        req = RequestQueue(
            vm_name="web2", request_type=C.RequestKind.CREATE, requester_id=first,
            owner_id=first, status=Q.VERIFIED,
        )  # fmt: skip
        s.add(req)
        s.flush()
        notify.request_event(s, req, C.RequestEvent.VERIFIED)  # the requester's orgadmins
        req.status = Q.REQUESTED
        notify.request_event(s, req, C.RequestEvent.MADE)  # the owner
        assert s.get(VM, vm_id).requester_id == first
        told = set(s.execute(select(OutboxMail.kind, OutboxMail.recipient)))
    assert vm_users(sqlite_engine, vm_id) == {"fac", "admin"}
    assert told == {("request_verified", "oa@example.org"), ("request_made", "admin@example.org")}


def test_an_admin_approves_from_any_state(
    sqlite_engine: Engine, settings: Settings, cloud: Cloud
) -> None:
    rid = make(sqlite_engine, settings, "stu")
    found = call(sqlite_engine, "admin", vm_requests.approve_request, settings, rid)
    assert found.status == Q.IN_QUEUE
    with pytest.raises(ConflictError, match="no longer pending"):
        call(sqlite_engine, "admin", vm_requests.approve_request, settings, rid)


# --- refusals when a request is made ---------------------------------------------------


def _hide_research_from_org_a(engine: Engine) -> None:
    with session_scope(engine) as s:
        networks.add_security_domain(
            s, SYSTEM, "closed", vlan_tag=66, cidr="10.66.0.0/24", visible_to_all=False
        )


@pytest.mark.parametrize(
    ("who", "kw", "error", "match"),
    [
        ("stu", {"approver": None}, ValidationError, "name your faculty approver"),
        ("stu", {"approver": "eve"}, ValidationError, "not a faculty member"),
        ("stu", {"approver": "fb"}, ValidationError, "not of your organisation"),
        ("stu", {"approver": "ghost"}, NotFoundError, "no user named"),
        ("fac", {"approver": "fac2"}, ValidationError, "name no approver"),
        ("stu", {"template": "nope"}, NotFoundError, "no template"),
        ("stu", {"ram_mb": 300}, ValidationError, "RAM must be one of"),
        ("stu", {"vcpus": 99}, ValidationError, "vCPUs must be one of"),
        ("stu", {"extra_disk_gb": 100_000}, ValidationError, "extra disk size"),
        ("stu", {"security_domain": "closed"}, PermissionDenied, "security domain"),
        ("stu", {"collaborators": ["ghost"]}, NotFoundError, "no user named"),
        ("stu", {"purpose": "a\nb"}, ValidationError, "purpose"),
    ],
)
def test_a_bad_request_is_refused_and_writes_nothing(
    sqlite_engine: Engine,
    settings: Settings,
    cloud: Cloud,
    who: str,
    kw: dict,
    error: type,
    match: str,
) -> None:
    _hide_research_from_org_a(sqlite_engine)
    before = rows(sqlite_engine)
    with pytest.raises(error, match=match):
        make(sqlite_engine, settings, who, **kw)
    assert rows(sqlite_engine) == before


def test_names_and_addresses_are_checked_when_made(
    sqlite_engine: Engine, settings: Settings, cloud: Cloud
) -> None:
    engine = sqlite_engine
    running_vm(engine, settings, "web")  # fac's
    with pytest.raises(ConflictError, match="already has a VM named 'web'"):
        make(engine, settings, "stu", "web")
    make(engine, settings, "stu", "dup")
    with pytest.raises(ConflictError, match="pending request for a VM named 'dup'"):
        make(engine, settings, "eve", "dup")  # same owner (fac), same name
    make(engine, settings, "fb", "dup")  # another owner may use the name
    with session_scope(engine) as s:
        for pool in s.scalars(select(PublicIpPool)):
            pool.is_active = False
    with pytest.raises(ConflictError, match="no public IP is free"):
        make(engine, settings, "stu", "pub", public_ip=True)
    with session_scope(engine) as s:
        networks.add_security_domain(
            s, SYSTEM, "tight", vlan_tag=67, cidr="10.67.0.0/24", ip_from="10.67.0.10",
            ip_to="10.67.0.10",
        )  # fmt: skip
    web = running_vm(engine, settings, "small")
    with session_scope(engine) as s:
        s.get(VM, web).status = C.VMStatus.SHUTDOWN
    make(engine, settings, "stu", "one", security_domain="tight")  # one address: fine
    with session_scope(engine) as s:
        networks.add_security_domain(s, SYSTEM, "empty", vlan_tag=68, cidr="10.68.0.0/24")
    with pytest.raises(ConflictError, match="'empty' has 0 free private IPs, 1 needed"):
        make(engine, settings, "stu", "none", security_domain="empty")
    with pytest.raises(ConflictError, match=r"'research' has \d+ free private IPs, 90 needed"):
        call(engine, "stu", vm_requests.request_clone, settings, "small", 90, approver="fac")


def test_change_requests_refuse_twins_and_vms_being_deleted(
    sqlite_engine: Engine, settings: Settings, cloud: Cloud
) -> None:
    engine = sqlite_engine
    web = running_vm(engine, settings)
    pending_disk = call(engine, "stu", vm_requests.request_disk, settings, web, 1, approver="fac")
    with pytest.raises(ConflictError, match="pending attach_disk request for this VM"):
        call(engine, "stu", vm_requests.request_disk, settings, web, 2, approver="fac")
    call(engine, "stu", vm_requests.request_edit, settings, web, ram_mb=512, approver="fac")
    with pytest.raises(PermissionDenied):  # not a user of the VM
        call(engine, "eve", vm_requests.request_disk, settings, web, 1, approver="fac")
    with pytest.raises(ValidationError, match="nothing to change"):
        call(engine, "fac", vm_requests.request_edit, settings, web, ram_mb=256)
    call(engine, "stu", vms.operate, web, "delete")
    with pytest.raises(ConflictError, match="'Delete VM' task for this VM is already queued"):
        call(engine, "admin", vm_requests.approve_request, settings, pending_disk)
    before = rows(engine)
    with pytest.raises(ConflictError, match="'Delete VM' task for this VM is already queued"):
        call(engine, "stu", vm_requests.request_clone, settings, web, 1, approver="fac")
    assert rows(engine) == before


# --- disk, clone and edit through the chain --------------------------------------------


def test_disk_clone_and_edit_requests_queue_the_vm_services_tasks(
    sqlite_engine: Engine, settings: Settings, cloud: Cloud
) -> None:
    engine = sqlite_engine
    web = running_vm(engine, settings)
    rid = call(engine, "stu", vm_requests.request_disk, settings, web, 2, approver="fac")
    call(engine, "fac", vm_requests.verify_request, rid)
    call(engine, "oa", vm_requests.approve_request, settings, rid)
    queued = call(engine, "admin", vm_requests.approve_request, settings, rid)
    run(engine, settings, queued.task_id)
    with session_scope(engine) as s:
        assert s.get(VM, web).extra_HDD == 2
        assert s.get(Task, queued.task_id).task_type == C.TaskType.ATTACH_DISK
    call(engine, "admin", vms.operate, web, "stop")
    run(engine, settings, _last_task(engine))
    rid = call(engine, "fac", vm_requests.request_edit, settings, web, ram_mb=512, vcpus=2)
    queued = call(engine, "admin", vm_requests.approve_request, settings, rid)
    run(engine, settings, queued.task_id)
    rid = call(engine, "oa", vm_requests.request_clone, settings, web, 2)
    queued = call(engine, "admin", vm_requests.approve_request, settings, rid)
    run(engine, settings, queued.task_id)
    with session_scope(engine) as s:
        assert (s.get(VM, web).RAM, s.get(VM, web).vCPU) == (512, 2)
        clones = s.scalars(select(VM).where(VM.parent_id == web)).all()
        assert len(clones) == 2 and {c.RAM for c in clones} == {512}
        assert {C.VMStatus(c.status) for c in clones} == {C.VMStatus.SHUTDOWN}


def _last_task(engine: Engine) -> int:
    with session_scope(engine) as s:
        return s.scalar(select(func.max(Task.id)))


# --- reject, edit, remind, withdraw ------------------------------------------------------


def test_reject_keeps_the_reason_and_ends_the_request(
    sqlite_engine: Engine, settings: Settings, cloud: Cloud, events: list
) -> None:
    engine = sqlite_engine
    rid = make(engine, settings, "stu")
    for bad in ("  ", "x" * (C.REJECT_REASON_MAX + 1), "a\x1b[2Jb"):
        with pytest.raises(ValidationError, match="reason"):
            call(engine, "fac", vm_requests.reject_request, rid, bad)
    with pytest.raises(PermissionDenied):
        call(engine, "stu", vm_requests.reject_request, rid, "no")
    call(engine, "fac", vm_requests.verify_request, rid)
    with pytest.raises(ConflictError, match="its orgadmin decides now"):
        call(engine, "fac", vm_requests.reject_request, rid, "changed my mind")
    found = call(engine, "oa", vm_requests.reject_request, rid, "no budget this term")
    assert (found.status, found.reject_reason) == (Q.REJECTED, "no budget this term")
    assert events[-1] == (rid, "rejected", "no budget this term")
    for step in (vm_requests.verify_request,):
        with pytest.raises(ConflictError):
            call(engine, "admin", step, rid)
    with pytest.raises(ConflictError, match="no longer pending"):
        call(engine, "admin", vm_requests.approve_request, settings, rid)


def test_edit_a_pending_request(sqlite_engine: Engine, settings: Settings, cloud: Cloud) -> None:
    engine = sqlite_engine
    rid = make(engine, settings, "stu")
    found = call(engine, "fac", vm_requests.edit_request, settings, rid, ram_mb=512, vcpus=2)
    assert (found.ram_mb, found.vcpus) == (512, 2)
    call(engine, "oa", vm_requests.edit_request, settings, rid, extra_disk_gb=3)
    with pytest.raises(PermissionDenied, match="only the sizes"):
        call(engine, "fac", vm_requests.edit_request, settings, rid, purpose="mine now")
    with pytest.raises(PermissionDenied):
        call(engine, "eve", vm_requests.edit_request, settings, rid, ram_mb=256)
    with pytest.raises(ValidationError, match="RAM must be one of"):
        call(engine, "stu", vm_requests.edit_request, settings, rid, ram_mb=300)
    with pytest.raises(ValidationError, match="has no clone_count"):
        call(engine, "stu", vm_requests.edit_request, settings, rid, clone_count=2)
    found = call(engine, "stu", vm_requests.edit_request, settings, rid, public_ip=True)
    assert found.public_ip is True and info(engine, rid).ram_mb == 512
    assert info(engine, rid).extra_disk_gb == 3


def test_remind_once_a_day_and_say_who(
    sqlite_engine: Engine, settings: Settings, cloud: Cloud, events: list
) -> None:
    engine = sqlite_engine
    rid = make(engine, settings, "stu", collaborators=["col"])
    assert call(engine, "col", vm_requests.remind_request, rid) == "fac"
    assert events[-1][1] == "reminded"
    with pytest.raises(ConflictError, match="once a day"):
        call(engine, "stu", vm_requests.remind_request, rid)
    with pytest.raises(PermissionDenied):
        call(engine, "eve", vm_requests.remind_request, rid)


def test_withdraw_only_ones_own(sqlite_engine: Engine, settings: Settings, cloud: Cloud) -> None:
    engine = sqlite_engine
    rid = make(engine, settings, "stu", collaborators=["col"])
    for who in ("fac", "col", "admin"):
        with pytest.raises(PermissionDenied):
            call(engine, who, vm_requests.withdraw_request, rid)
    call(engine, "stu", vm_requests.withdraw_request, rid)
    with pytest.raises(NotFoundError):
        info(engine, rid)


def test_lists_follow_the_policy(sqlite_engine: Engine, settings: Settings, cloud: Cloud) -> None:
    engine = sqlite_engine
    mine = make(engine, settings, "stu", "a", collaborators=["col"])
    other = make(engine, settings, "fb", "b")
    seen = {
        who: {r.id for r in call(engine, who, vm_requests.list_requests).items}
        for who in ("admin", "oa", "ob", "fac", "fac2", "stu", "col", "eve", "fb")
    }
    assert seen["admin"] == {mine, other}
    assert seen["oa"] == seen["fac"] == seen["stu"] == seen["col"] == {mine}
    assert seen["ob"] == seen["fb"] == {other}
    assert seen["fac2"] == seen["eve"] == set()


# --- a failed task shows -----------------------------------------------------------------


def test_a_failed_task_shows_failed_and_a_retry_brings_it_back(
    sqlite_engine: Engine, settings: Settings, cloud: Cloud
) -> None:
    engine = sqlite_engine
    rid = make(engine, settings, "fac")
    queued = call(engine, "admin", vm_requests.approve_request, settings, rid)
    cloud.template_file.rename(cloud.template_file.with_suffix(".gone"))
    run(engine, settings, queued.task_id)
    failed = info(engine, rid)
    assert failed.status == Q.FAILED and failed.task_message
    cloud.template_file.with_suffix(".gone").rename(cloud.template_file)
    with session_scope(engine) as s:
        queue.retry(s, queued.task_id)
    assert info(engine, rid).status == Q.IN_QUEUE
    run(engine, settings, queued.task_id)
    assert info(engine, rid).status == Q.IN_QUEUE and info(engine, rid).task_message is None


# --- quotas ------------------------------------------------------------------------------


def test_quotas_are_checked_when_made_and_when_queued(
    sqlite_engine: Engine, settings: Settings, cloud: Cloud
) -> None:
    engine = sqlite_engine
    call(engine, "admin", quotas.set_quota, user="fac", limits={C.QuotaItem.VMS: 1})
    first = make(engine, settings, "stu", "q1")
    second = make(engine, settings, "eve", "q2")  # made while nothing is used yet
    call(engine, "admin", vm_requests.approve_request, settings, first)
    before = rows(engine)
    with pytest.raises(ResourceExhausted, match="the user's limit is 1 vms; 1 vms used"):
        call(engine, "admin", vm_requests.approve_request, settings, second)
    assert rows(engine) == before and info(engine, second).status == Q.REQUESTED
    with pytest.raises(ResourceExhausted):
        make(engine, settings, "stu", "q3")
    settings.quota.org_ram_gb = 1
    call(engine, "admin", quotas.set_quota, user="fac2", limits={C.QuotaItem.VMS: 0})
    with pytest.raises(ResourceExhausted, match="organisation's limit is 1 GB RAM"):
        make(engine, settings, "fac2", "big", ram_mb=1024)
    report = call(engine, "fac", quotas.show_quota, settings)
    lines = {line.item: line for line in report.lines}
    assert (lines[C.QuotaItem.VMS].used, lines[C.QuotaItem.VMS].limit) == (1, 1)
    assert lines[C.QuotaItem.RAM_GB].used == 0.25 and lines[C.QuotaItem.VMS].override


def test_queued_edits_count_before_they_run(
    sqlite_engine: Engine, settings: Settings, cloud: Cloud
) -> None:
    engine = sqlite_engine
    web = running_vm(engine, settings)
    call(engine, "admin", quotas.set_quota, user="fac", limits={C.QuotaItem.DISK_GB: 4})
    first = call(engine, "fac", vm_requests.request_disk, settings, web, 2)
    call(engine, "admin", vm_requests.approve_request, settings, first)  # 1 + 2 of 4
    with pytest.raises(ResourceExhausted, match="3 GB disk used, 2 GB disk asked"):
        call(engine, "fac", vm_requests.request_disk, settings, web, 2)


def test_racing_approvals_never_pass_the_quota_on_sqlite(
    sqlite_engine: Engine, settings: Settings, cloud: Cloud
) -> None:
    assert race_approvals(sqlite_engine, settings, requests=6, vm_limit=2) == 2
    with session_scope(sqlite_engine) as s:
        assert s.scalar(select(func.count()).select_from(VM)) == 2


# --- the CLI -----------------------------------------------------------------------------


def test_the_workflow_from_the_cli_with_as(
    sqlite_engine: Engine,
    settings: Settings,
    cloud: Cloud,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from typer.testing import CliRunner

    from baadal.cli.main import app
    from baadal.config import get_settings

    monkeypatch.setenv("BAADAL_DATABASE__URL", str(sqlite_engine.url))
    get_settings.cache_clear()
    runner = CliRunner()

    def cli(*args: str, code: int = 0) -> str:
        result = runner.invoke(app, list(args), terminal_width=200)
        assert result.exit_code == code, result.output
        return result.output

    out = cli("--as", "stu", "request", "create", "lab1", "--template", "tiny", "--approver",
              "fac", "--domain", "research", "--collaborator", "col", "--purpose", "course")  # fmt: skip
    assert out.strip() == "request 1"
    assert "lab1" in cli("--as", "col", "request", "list")
    assert "lab1" not in cli("--as", "eve", "request", "list")
    assert cli("--as", "eve", "request", "show", "1", code=2).startswith("error: eve may not")
    cli("--as", "oa", "request", "verify", "1", code=2)
    assert "REQUESTED" in cli("--as", "stu", "request", "show", "1")
    assert "VERIFIED" in cli("--as", "fac", "request", "verify", "1")
    assert "reminded the orgadmins" in cli("--as", "stu", "request", "remind", "1")
    assert "APPROVED" in cli("--as", "oa", "request", "approve", "1")
    out = cli("request", "approve", "1", "--inline")
    assert "IN_QUEUE" in out and "SUCCESS" in out
    out = cli("--as", "stu", "request", "disk", "lab1", "--size", "2", "--approver", "fac")
    assert out.strip() == "request 2"
    assert "changed" in cli("--as", "fac", "request", "edit", "2", "--size", "3")
    cli("--as", "fac", "request", "edit", "2", "--purpose", "x", code=2)
    assert "REJECTED" in cli("--as", "fac", "request", "reject", "2", "--reason", "too big")
    assert "too big" in cli("--as", "stu", "request", "show", "2")
    out = cli("--as", "stu", "request", "config", "lab1", "--ram", "512", "--approver", "fac")
    assert out.strip() == "request 3"
    assert "withdrawn" in cli("--as", "stu", "request", "withdraw", "3")
    for flag, full in (("--full", True), ("--no-full", False)):
        out = cli("--as", "stu", "request", "clone", "lab1", flag, "--approver", "fac")
        request_id = out.split()[-1]
        with session_scope(sqlite_engine) as s:
            assert s.get(RequestQueue, int(request_id)).clone_full is full
        cli("--as", "stu", "request", "withdraw", request_id)
    cli("--as", "stu", "request", "reject", "1", code=2)  # --reason is required
    # quotas
    cli("--as", "stu", "quota", "set", "--user", "stu", "--vms", "1", code=2)
    cli("quota", "set", "--user", "fac", "--vms", "5", "--ram-gb", "4")
    out = cli("--as", "fac", "quota", "show")
    assert "unlimited" in out and "own" in out
    assert "organisation ORG_A" in cli("--as", "stu", "quota", "show", "--org", "ORG_A")
    cli("--as", "stu", "quota", "show", "--org", "ORG_B", code=2)
    cli("quota", "show", "--user", "fac", "--org", "ORG_A", code=2)
    cli("quota", "set", "--user", "fac", "--vms", "-1", code=2)
    cli("quota", "set", "--user", "fac", code=2)


def test_quota_settings_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    from baadal.config import load_settings
    from baadal.errors import ConfigError

    assert load_settings().quota.user_vms == 0  # unlimited by default
    for value in ("-1", str(C.QUOTA_MAX + 1)):
        monkeypatch.setenv("BAADAL_QUOTA__ORG_VMS", value)
        with pytest.raises(ConfigError, match="quota"):
            load_settings()
