"""Mail without a server: templates, who is told what, the outbox written in the caller's
transaction (and only while mail is on), task mails from the worker's finish, opt-out,
the settings, and the outbox commands. Sending over SMTP: tests/integration/test_mail_smtp.py.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

import pytest
from sqlalchemy import Engine, delete, func, select
from typer.testing import CliRunner

from baadal import constants as C
from baadal.auth.roles import add_membership_db
from baadal.cli.main import app
from baadal.config import MailConf, Settings, get_settings, load_settings
from baadal.db.models import (
    VM,
    Organisation,
    OutboxMail,
    RequestQueue,
    Task,
    User,
    UserVMMap,
)
from baadal.db.session import session_scope
from baadal.errors import ConfigError, ConflictError
from baadal.mail import compose, notify, outbox, sender
from baadal.services import mails, users
from baadal.services.policy import SYSTEM, actor_for
from baadal.tasks import queue
from baadal.tasks.params import SnapshotVMParams
from baadal.tasks.periodic import sync_periodic_jobs
from baadal.tasks.registry import REGISTRY, Handler, Registry, TaskContext, TaskResult
from baadal.tasks.worker import Worker
from baadal.timeutil import utcnow

pytestmark = pytest.mark.unit

#: every value any template uses
ALL_VALUES = {
    "recipient": "Ada Lovelace",
    "username": "ada",
    "home_address": "http://baadal.example.org",
    "request_id": 7,
    "request_type": "Create VM",
    "vm_name": "web",
    "requester": "stu",
    "owner": "fac",
    "purpose": "thesis",
    "reason": "no budget",
    "next_step": "verify",
    "deadline": "2026-12-31 10:00 UTC",
    "task_id": 3,
    "task_type": "Start VM",
    "message": "VM started",
    "outcome": "it failed",
}


@dataclass(frozen=True)
class People:
    """Organisation A: admin, orgadmin oa, faculty fac, student stu (requests through
    fac), col (no e-mail address); VM 'web' owned by fac, used by stu and col."""

    ids: dict[str, int]
    vm_id: int


@pytest.fixture
def mail_on(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("BAADAL_MAIL__MAIL_ACTIVE", "true")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def make_people(engine: Engine) -> People:
    with session_scope(engine) as s:
        org = Organisation(name="ORG_A", admin_mailid="heads@a.example.org")
        s.add(org)
        s.flush()
        ids = {}
        for name, role, email in [
            ("admin", C.Role.ADMIN, "admin@example.org"),
            ("oa", C.Role.ORGADMIN, "oa@a.example.org"),
            ("fac", C.Role.FACULTY, "fac@a.example.org"),
            ("stu", None, "stu@a.example.org"),
            ("col", None, None),
        ]:
            user = User(username=name, email=email, organisation_id=org.id, first_name=name.title())
            s.add(user)
            s.flush()
            add_membership_db(s, user.id, [r for r in (role, C.Role.USER) if r])
            ids[name] = user.id
        vm = VM(
            vm_name="web",
            vm_identity="ORG_A~fac~web",
            RAM=256,
            vCPU=1,
            owner_id=ids["fac"],
            requester_id=ids["stu"],
            status=C.VMStatus.RUNNING,
        )
        s.add(vm)
        s.flush()
        s.add_all([UserVMMap(user_id=ids[n], vm_id=vm.id) for n in ("stu", "col")])
        return People(ids, vm.id)


@pytest.fixture
def people(sqlite_engine: Engine) -> People:
    return make_people(sqlite_engine)


def make_request(
    engine: Engine, people: People, status: C.RequestStatus, vm_name: str = "web2"
) -> int:
    """A request (one pending request per owner and VM name: others need other names)."""
    with session_scope(engine) as s:
        request = RequestQueue(
            vm_name=vm_name,
            request_type="Create VM",
            requester_id=people.ids["stu"],
            owner_id=people.ids["fac"],
            purpose="thesis",
            status=status,
        )
        s.add(request)
        s.flush()
        return request.id


def outbox_rows(engine: Engine) -> list[tuple[str, str, str]]:
    with session_scope(engine) as s:
        rows = s.scalars(select(OutboxMail).order_by(OutboxMail.id))
        return [(m.kind, m.recipient, m.subject) for m in rows]


def recipients(engine: Engine) -> set[str]:
    return {r for _, r, _ in outbox_rows(engine)}


# --- templates ---------------------------------------------------------------------


def test_every_template_renders_with_a_subject_and_no_placeholder_left() -> None:
    names = compose.template_names()
    assert set(names) >= {
        *(f"request_{e}" for e in notify.REQUEST_EVENTS),
        *notify.IDLE_KINDS.values(),
        "task_done",
        "task_failed",
        "registration_approved",
    }
    for name in names:
        mail = compose.render(name, ALL_VALUES)
        assert mail.subject.startswith("Baadal: ") and "$" not in mail.subject, name
        assert "$" not in mail.body and "Ada Lovelace" in mail.body, name
    with pytest.raises(KeyError):
        compose.render("request_rejected", {"recipient": "x"})


def test_a_value_cannot_add_a_header() -> None:
    values = ALL_VALUES | {"vm_name": "web\r\nBcc: everyone@example.org\x00"}
    mail = compose.render("request_rejected", values)
    assert "\n" not in mail.subject and "\r" not in mail.subject and "\x00" not in mail.subject
    assert "\x00" not in mail.body
    long = compose.render("request_rejected", ALL_VALUES | {"vm_name": "w" * 400})
    assert len(long.subject) == C.MAIL_SUBJECT_MAX


# --- who is told what ----------------------------------------------------------------


def test_nothing_is_written_while_mail_is_off(sqlite_engine: Engine, people: People) -> None:
    request_id = make_request(sqlite_engine, people, C.RequestStatus.REQUESTED)
    with session_scope(sqlite_engine) as s:
        notify.request_event(s, s.get(RequestQueue, request_id), "made")
        notify.registration_approved(s, s.get(User, people.ids["stu"]))
        notify.idle_warning(s, s.get(VM, people.vm_id), "idle", utcnow())
    assert outbox_rows(sqlite_engine) == []


@pytest.mark.parametrize(
    ("status", "event", "told"),
    [
        (C.RequestStatus.REQUESTED, "made", {"fac@a.example.org"}),
        (C.RequestStatus.VERIFIED, "made", {"oa@a.example.org", "heads@a.example.org"}),
        (C.RequestStatus.APPROVED, "made", {"admin@example.org", "root@example.org"}),
        (C.RequestStatus.REQUESTED, "reminded", {"fac@a.example.org"}),
        (C.RequestStatus.VERIFIED, "reminded", {"oa@a.example.org", "heads@a.example.org"}),
        (C.RequestStatus.VERIFIED, "verified", {"oa@a.example.org", "heads@a.example.org"}),
        (C.RequestStatus.APPROVED, "approved", {"admin@example.org", "root@example.org"}),
        (C.RequestStatus.REJECTED, "rejected", {"stu@a.example.org"}),
        (C.RequestStatus.IN_QUEUE, "queued", {"stu@a.example.org"}),
    ],
)
def test_request_events_reach_the_next_approver_or_the_requester(
    sqlite_engine: Engine,
    people: People,
    mail_on: None,
    monkeypatch: pytest.MonkeyPatch,
    status: C.RequestStatus,
    event: str,
    told: set[str],
) -> None:
    monkeypatch.setenv("BAADAL_MAIL__ADMIN_EMAIL", "root@example.org")
    get_settings.cache_clear()
    request_id = make_request(sqlite_engine, people, status)
    with session_scope(sqlite_engine) as s:
        notify.request_event(s, s.get(RequestQueue, request_id), event, reason="no budget")
    assert recipients(sqlite_engine) == told
    kinds = {kind for kind, _, _ in outbox_rows(sqlite_engine)}
    assert kinds == {f"request_{event}"}


def test_a_rejection_carries_the_reason_and_commands_name_the_request(
    sqlite_engine: Engine, people: People, mail_on: None
) -> None:
    rejected = make_request(sqlite_engine, people, C.RequestStatus.REJECTED)
    waiting = make_request(sqlite_engine, people, C.RequestStatus.REQUESTED)
    with session_scope(sqlite_engine) as s:
        notify.request_event(s, s.get(RequestQueue, rejected), "rejected", reason="too big")
        notify.request_event(s, s.get(RequestQueue, waiting), "made")
        bodies = {m.kind: m.body for m in s.scalars(select(OutboxMail))}
    assert "Reason: too big" in bodies["request_rejected"]
    verified = make_request(sqlite_engine, people, C.RequestStatus.VERIFIED, "web3")
    with session_scope(sqlite_engine) as s:
        notify.request_event(s, s.get(RequestQueue, verified), "verified")
        heads = s.scalar(select(OutboxMail.body).where(OutboxMail.recipient.like("heads@%")))
    assert heads.startswith("Dear administrators of ORG_A,")
    assert f"baadal request verify {waiting}" in bodies["request_made"]
    assert "Dear Fac," in bodies["request_made"]
    with session_scope(sqlite_engine) as s, pytest.raises(ValueError):
        notify.request_event(s, s.get(RequestQueue, waiting), "exploded")


def test_a_rolled_back_change_leaves_no_mail(
    sqlite_engine: Engine, people: People, mail_on: None
) -> None:
    request_id = make_request(sqlite_engine, people, C.RequestStatus.REQUESTED)
    with pytest.raises(RuntimeError), session_scope(sqlite_engine) as s:
        request = s.get(RequestQueue, request_id)
        request.status = C.RequestStatus.REJECTED
        notify.request_event(s, request, "rejected", reason="no")
        raise RuntimeError("the change failed after the mail was written")
    assert outbox_rows(sqlite_engine) == []


def test_users_without_an_address_are_skipped_and_logged_or_get_the_domains(
    sqlite_engine: Engine,
    people: People,
    mail_on: None,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="baadal"), session_scope(sqlite_engine) as s:
        notify.idle_warning(s, s.get(VM, people.vm_id), "shutdown", datetime(2026, 12, 31, 10))
    assert recipients(sqlite_engine) == {"fac@a.example.org", "stu@a.example.org"}
    assert "account col has no e-mail address" in caplog.text
    with session_scope(sqlite_engine) as s:
        body = s.scalars(select(OutboxMail.body)).first()
    assert "after 2026-12-31 10:00 UTC" in body and "baadal vm keep web" in body
    monkeypatch.setenv("BAADAL_MAIL__EMAIL_DOMAIN", "a.example.org")
    get_settings.cache_clear()
    with session_scope(sqlite_engine) as s:
        s.execute(delete(OutboxMail))
        notify.idle_warning(s, s.get(VM, people.vm_id), "idle", utcnow())
    assert "col@a.example.org" in recipients(sqlite_engine)


def test_an_approved_registration_is_mailed_to_the_account(
    sqlite_engine: Engine, people: People, mail_on: None
) -> None:
    with session_scope(sqlite_engine) as s:
        s.get(User, people.ids["stu"]).registration_key = C.RegistrationKey.PENDING
    with session_scope(sqlite_engine) as s:
        users.approve(s, actor_for(s, "oa"), "stu")
    assert outbox_rows(sqlite_engine) == [
        ("registration_approved", "stu@a.example.org", "Baadal: your account stu was approved")
    ]


# --- task mails --------------------------------------------------------------------


def _ended_task(engine: Engine, people: People, task_type: str, status: C.TaskStatus, **kw) -> int:
    with session_scope(engine) as s:
        task = queue.enqueue(s, task_type, vm_id=people.vm_id, **kw)
        task.status, task.message = status, "the handler's message"
        return task.id


def _tell(engine: Engine, task_id: int) -> None:
    with session_scope(engine) as s:
        notify.task_finished(s, s.get(Task, task_id))


def test_task_mails_go_to_the_vms_users_who_did_not_opt_out(
    sqlite_engine: Engine, people: People, mail_on: None
) -> None:
    with session_scope(sqlite_engine) as s:
        users.set_task_mails(s, actor_for(s, "stu"), "stu", False)
    done = _ended_task(sqlite_engine, people, C.TaskType.START_VM, C.TaskStatus.SUCCESS)
    _tell(sqlite_engine, done)
    assert outbox_rows(sqlite_engine) == [
        ("task_done", "fac@a.example.org", 'Baadal: Start VM of VM "web" done')
    ]
    with session_scope(sqlite_engine) as s:
        s.execute(delete(OutboxMail))
        users.set_task_mails(s, actor_for(s, "stu"), "stu", True)
    failed = _ended_task(sqlite_engine, people, C.TaskType.STOP_VM, C.TaskStatus.FAILED)
    _tell(sqlite_engine, failed)
    assert recipients(sqlite_engine) == {"fac@a.example.org", "stu@a.example.org"}
    with session_scope(sqlite_engine) as s:
        body = s.scalars(select(OutboxMail.body)).first()
    assert "did not succeed: it failed" in body and "the handler's message" in body


def test_no_task_mail_for_migrations_scheduled_snapshots_or_unfinished_tasks(
    sqlite_engine: Engine, people: People, mail_on: None
) -> None:
    for task_id in [
        _ended_task(sqlite_engine, people, C.TaskType.MIGRATE_VM_HOST, C.TaskStatus.SUCCESS),
        _ended_task(
            sqlite_engine,
            people,
            C.TaskType.SNAPSHOT_VM,
            C.TaskStatus.SUCCESS,
            parameters=SnapshotVMParams(snapshot_type=C.SnapshotType.DAILY),
        ),
        _ended_task(sqlite_engine, people, C.TaskType.START_VM, C.TaskStatus.PROCESSING),
    ]:
        _tell(sqlite_engine, task_id)
    assert outbox_rows(sqlite_engine) == []
    user_snapshot = _ended_task(sqlite_engine, people, C.TaskType.SNAPSHOT_VM, C.TaskStatus.SUCCESS)
    _tell(sqlite_engine, user_snapshot)
    assert len(outbox_rows(sqlite_engine)) == 2


def _registry(run: object) -> Registry:
    registry = Registry()
    registry.add(Handler(C.TaskType.START_VM, run))  # type: ignore[arg-type]
    registry.add(Handler(C.TaskType.DELETE_VM, run))  # type: ignore[arg-type]
    return registry


def test_the_worker_mails_an_ended_task_even_when_it_deleted_the_vm(
    sqlite_engine: Engine, people: People, mail_on: None, settings: Settings
) -> None:
    """The users are read before the handler runs: a deleted VM has none left after."""

    def run(ctx: TaskContext) -> TaskResult:
        if ctx.task_type == C.TaskType.DELETE_VM:
            with session_scope(ctx.engine) as s:
                s.delete(s.get(VM, ctx.vm_id))
        return TaskResult.success(f"{ctx.task_type} done")

    with session_scope(sqlite_engine) as s:
        ids = [queue.enqueue(s, C.TaskType.DELETE_VM, vm_id=people.vm_id).id]
    worker = Worker(sqlite_engine, settings, registry=_registry(run), concurrency=1)
    worker.run_tasks(ids)
    rows = outbox_rows(sqlite_engine)
    assert {r for _, r, _ in rows} == {"fac@a.example.org", "stu@a.example.org"}
    assert {s for _, _, s in rows} == {'Baadal: Delete VM of VM "web" done'}


def test_a_finish_that_lost_its_lease_writes_no_mail(
    sqlite_engine: Engine, people: People, mail_on: None
) -> None:
    with session_scope(sqlite_engine) as s:
        queue.enqueue(s, C.TaskType.START_VM, vm_id=people.vm_id)
    claimed = queue.claim(sqlite_engine, "w1", 60)
    assert claimed is not None
    assert not queue.finish(sqlite_engine, claimed, "someone else", C.TaskStatus.SUCCESS, "ok")
    assert outbox_rows(sqlite_engine) == []
    assert queue.finish(sqlite_engine, claimed, "w1", C.TaskStatus.SUCCESS, "ok")
    assert len(outbox_rows(sqlite_engine)) == 2


# --- the outbox ----------------------------------------------------------------------


def _queue_one(engine: Engine, recipient: str = "x@example.org") -> int:
    with session_scope(engine) as s:
        mail = compose.render("registration_approved", ALL_VALUES)
        return outbox.queue_mail(s, "registration_approved", recipient, mail, None).id


def test_a_claimed_mail_is_leased_and_failures_back_off_then_fail(sqlite_engine: Engine) -> None:
    conf = MailConf(retry_base_s=60, retry_max_s=200, max_attempts=3)
    assert sender.lease_s(conf) == (C.MAIL_BATCH + 1) * 30  # each mail may take the timeout
    assert [outbox.backoff_s(n, conf) for n in (1, 2, 3, 4)] == [60, 120, 200, 200]
    mail_id = _queue_one(sqlite_engine)
    first = outbox.claim_due(sqlite_engine, 600)
    assert [(m.id, m.attempts) for m in first] == [(mail_id, 1)]
    assert outbox.claim_due(sqlite_engine, 600) == []  # leased: no second run takes it
    before = utcnow()
    assert not outbox.mark_failed(sqlite_engine, mail_id, "421 try later", conf)
    with session_scope(sqlite_engine) as s:
        row = s.get(OutboxMail, mail_id)
        assert row.status == C.MailStatus.PENDING and row.last_error == "421 try later"
        assert row.next_attempt_at >= before + timedelta(seconds=59)
        row.next_attempt_at = utcnow()  # the back-off is over
    for attempt in (2, 3):
        assert [m.attempts for m in outbox.claim_due(sqlite_engine, 600)] == [attempt]
        given_up = outbox.mark_failed(sqlite_engine, mail_id, "421 try later", conf)
        with session_scope(sqlite_engine) as s:
            s.get(OutboxMail, mail_id).next_attempt_at = utcnow()
    assert given_up
    assert outbox.claim_due(sqlite_engine, 600) == []
    pending = _queue_one(sqlite_engine)
    with session_scope(sqlite_engine) as s:
        assert s.get(OutboxMail, mail_id).status == C.MailStatus.FAILED
        with pytest.raises(ConflictError):
            outbox.retry(s, pending)  # waiting already: nothing to retry
        mails.retry_mail(s, SYSTEM, mail_id)
    assert [(m.id, m.attempts) for m in outbox.claim_due(sqlite_engine, 600)] == [
        (mail_id, 1),
        (pending, 1),
    ]


def test_sent_mails_are_kept_for_keep_sent_days(sqlite_engine: Engine) -> None:
    old, recent, waiting = (_queue_one(sqlite_engine) for _ in range(3))
    with session_scope(sqlite_engine) as s:
        for mail_id, age in ((old, 31), (recent, 29)):
            row = s.get(OutboxMail, mail_id)
            row.status, row.sent_at = C.MailStatus.SENT, utcnow() - timedelta(days=age)
    assert outbox.purge_sent(sqlite_engine, MailConf(keep_sent_days=30)) == 1
    with session_scope(sqlite_engine) as s:
        assert set(s.scalars(select(OutboxMail.id))) == {recent, waiting}


def test_the_sending_job_is_scheduled_only_while_mail_is_on(
    sqlite_engine: Engine, settings: Settings
) -> None:
    assert settings.job_interval("mail_outbox") == 0
    assert "mail_outbox" not in sync_periodic_jobs(sqlite_engine, REGISTRY.periodic, settings)
    settings.mail.mail_active = True
    assert settings.job_interval("mail_outbox") == 60
    assert "mail_outbox" in sync_periodic_jobs(sqlite_engine, REGISTRY.periodic, settings)


# --- settings --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "error"),
    [
        ({"SERVER": "smtp.example.org:587"}, "the port goes in [mail] port"),
        ({"LOGIN": "mailer:secret"}, "password_file"),
        ({"LOGIN": "mailer", "PASSWORD_FILE": "/p"}, "needs tls = starttls or tls"),
        ({"LOGIN": "mailer", "TLS": "starttls"}, "needs password_file"),
        ({"TLS": "ssl"}, "mail.tls"),
        ({"PORT": "70000"}, "mail.port"),
        ({"SENDER": "baadal@x\nBcc: y@z"}, "mail.sender"),
        ({"MAX_ATTEMPTS": "0"}, "mail.max_attempts"),
    ],
)
def test_bad_mail_settings_are_one_clear_error(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], error: str
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(f"BAADAL_MAIL__{key}", value)
    with pytest.raises(ConfigError, match="mail") as caught:
        load_settings()
    assert error in str(caught.value) and "\n" not in str(caught.value)


def test_upstreams_tls_flag_still_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BAADAL_MAIL__TLS", "true")
    assert load_settings().mail.tls == C.MailTls.STARTTLS
    assert MailConf(tls=False).tls == C.MailTls.NONE
    conf = MailConf(login="mailer", password_file="/p", tls="none", allow_insecure=True)
    assert conf.login == "mailer"


# --- the commands ----------------------------------------------------------------------


def test_outbox_commands(
    sqlite_engine: Engine, people: People, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BAADAL_DATABASE__URL", sqlite_engine.url.render_as_string())
    monkeypatch.setattr("baadal.cli.door._acting_as", None)
    monkeypatch.setenv("COLUMNS", "250")  # keep Rich tables on one line per row
    get_settings.cache_clear()
    sent, failed = _queue_one(sqlite_engine, "ok@example.org"), _queue_one(sqlite_engine)
    with session_scope(sqlite_engine) as s:
        s.get(OutboxMail, sent).status = C.MailStatus.SENT
        row = s.get(OutboxMail, failed)
        row.status, row.last_error, row.attempts = C.MailStatus.FAILED, "550 no such user", 8
    runner = CliRunner()

    def run(*args: str) -> tuple[int, str]:
        result = runner.invoke(app, list(args))
        return result.exit_code, result.output

    code, out = run("mail", "outbox")
    assert code == 0 and "ok@example.org" in out and "550 no such user" in out, out
    code, out = run("mail", "outbox", "--failed")
    assert code == 0 and "ok@example.org" not in out and "x@example.org" in out, out
    code, out = run("--as", "stu", "mail", "outbox")
    assert code == 2 and "stu may not see the mail outbox" in out, out
    assert run("--as", "oa", "mail", "retry", str(failed))[0] == 2
    code, out = run("mail", "retry", str(failed))
    assert code == 0 and f"mail {failed} queued again" in out, out
    code, out = run("mail", "retry", str(failed))
    assert code == 2 and "only failed mails" in out, out
    assert run("mail", "retry", "99999999999")[0] == 2
    code, out = run("mail", "send-now")
    assert code == 2 and "mail is off" in out, out
    code, out = run("--as", "stu", "user", "set-mail", "stu", "--no-task-mails")
    assert code == 0 and "task mails off" in out, out
    assert run("--as", "stu", "user", "set-mail", "fac", "--task-mails")[0] == 2
    code, out = run("user", "list")
    assert code == 0 and "task mails" in out, out
    with session_scope(sqlite_engine) as s:
        subscribed = dict(s.execute(select(User.username, User.mail_subscribed)).all())
        assert s.scalar(select(func.count()).select_from(OutboxMail)) == 2
    assert subscribed["stu"] is False and subscribed["fac"] is True
