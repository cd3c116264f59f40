"""Mail against a real SMTP server the tests start (aiosmtpd on 127.0.0.1): delivery
over STARTTLS with a login and over TLS, the certificate checked, an outage survived
(retries with back-off, then delivered, nothing lost), a mail that keeps failing marked
failed and shown to admins, the periodic job through a worker, no password in any log,
and two sending runs on PostgreSQL never taking the same mail."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import Engine, select, update
from typer.testing import CliRunner

from baadal import constants as C
from baadal.cli.main import app
from baadal.config import Settings, get_settings, load_settings
from baadal.db.models import OutboxMail, PeriodicJob, RequestQueue, User
from baadal.db.session import session_scope
from baadal.logs import setup_logging
from baadal.mail import compose, notify, outbox, sender
from baadal.services import mails, users
from baadal.services.policy import SYSTEM, actor_for
from baadal.tasks import queue
from baadal.tasks.periodic import fire_due_jobs, sync_periodic_jobs
from baadal.tasks.registry import REGISTRY
from baadal.tasks.worker import Worker
from baadal.timeutil import utcnow
from tests.support.smtp import SmtpServer, smtp_server  # noqa: F401 - a fixture
from tests.unit.test_mail import (
    People,
    make_people,
    make_request,
    people,  # noqa: F401 - a fixture
)

pytestmark = pytest.mark.integration

PASSWORD = "s3cret-mail-pw"


def _settings(
    monkeypatch: pytest.MonkeyPatch, server: SmtpServer, password_file: Path | None = None
) -> Settings:
    server.settings_env(monkeypatch, password_file)
    monkeypatch.setenv("BAADAL_MAIL__RETRY_BASE_S", "30")
    get_settings.cache_clear()
    return load_settings()


def _statuses(engine: Engine) -> list[tuple[str, int]]:
    with session_scope(engine) as s:
        return [
            (m.status, m.attempts) for m in s.scalars(select(OutboxMail).order_by(OutboxMail.id))
        ]


def _due_now(engine: Engine) -> None:
    """Skip the back-off (the clock, not the code, would wait)."""
    with session_scope(engine) as s:
        s.execute(update(OutboxMail).values(next_attempt_at=utcnow()))


def _reject(engine: Engine, world: People) -> int:
    request_id = make_request(engine, world, C.RequestStatus.REJECTED)
    with session_scope(engine) as s:
        notify.request_event(s, s.get(RequestQueue, request_id), "rejected", reason="no budget")
    return request_id


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[SmtpServer]:
    server = SmtpServer(tmp_path, mode="starttls", login=("mailer", PASSWORD))
    server.start()
    yield server
    server.stop()


def test_delivered_over_starttls_with_a_login_and_no_password_in_any_log(
    sqlite_engine: Engine,
    people: People,  # noqa: F811 - the imported fixture
    secured: SmtpServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    password_file = tmp_path / "mail-password"
    password_file.write_text(PASSWORD + "\n")
    settings = _settings(monkeypatch, secured, password_file)
    setup_logging()
    request_id = _reject(sqlite_engine, people)
    with caplog.at_level(logging.DEBUG):
        report = sender.send_due(sqlite_engine, settings)
    assert (report.sent, report.retrying, report.failed) == (1, 0, 0), report
    assert secured.inbox.logins == ["mailer"]
    (message,) = secured.inbox.to("stu@a.example.org")
    assert message["Subject"] == f'Baadal: request {request_id} (Create VM "web2") rejected'
    assert message["From"] == "baadal@example.org" and message["Message-ID"]
    assert "Reason: no budget" in message.get_payload(decode=True).decode()
    assert _statuses(sqlite_engine) == [(C.MailStatus.SENT, 1)]
    # a wrong password: refused by the server, retried, and still not written anywhere
    password_file.write_text("wrong-" + PASSWORD)
    _reject(sqlite_engine, people)
    with caplog.at_level(logging.DEBUG):
        report = sender.send_due(sqlite_engine, settings)
    assert report.retrying == 1 and "535" in report.error, report
    logs = caplog.text + "".join(p.read_text() for p in settings.log_dir.glob("*.log*"))
    with session_scope(sqlite_engine) as s:
        errors = " ".join(m.last_error or "" for m in s.scalars(select(OutboxMail)))
    assert PASSWORD not in logs and PASSWORD not in errors and PASSWORD not in str(report)


def test_a_server_without_starttls_is_not_used_in_clear(
    sqlite_engine: Engine,
    people: People,  # noqa: F811 - the imported fixture
    smtp_server: SmtpServer,  # noqa: F811 - the imported fixture
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = _settings(monkeypatch, smtp_server)
    settings.mail.tls = C.MailTls.STARTTLS
    _reject(sqlite_engine, people)
    report = sender.send_due(sqlite_engine, settings)
    assert report.retrying == 1 and "STARTTLS" in report.error, report
    assert smtp_server.inbox.messages == []


def test_delivered_over_tls_and_the_certificate_is_checked(
    sqlite_engine: Engine,
    people: People,  # noqa: F811 - the imported fixture
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = SmtpServer(tmp_path, mode="tls")
    server.start()
    try:
        settings = _settings(monkeypatch, server)
        settings.mail.ca_file = ""  # the system's CAs do not know the test's certificate
        _reject(sqlite_engine, people)
        report = sender.send_due(sqlite_engine, settings)
        assert report.retrying == 1 and "CERTIFICATE_VERIFY_FAILED" in report.error, report
        assert server.inbox.messages == []
        settings.mail.ca_file = str(server.cert)
        _due_now(sqlite_engine)
        assert sender.send_due(sqlite_engine, settings).sent == 1
        assert len(server.inbox.to("stu@a.example.org")) == 1
    finally:
        server.stop()


def test_an_outage_loses_nothing_retries_back_off_and_then_everything_arrives(
    sqlite_engine: Engine,
    people: People,  # noqa: F811 - the imported fixture
    smtp_server: SmtpServer,  # noqa: F811 - the imported fixture
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = _settings(monkeypatch, smtp_server)
    smtp_server.stop()
    for _ in range(3):
        _reject(sqlite_engine, people)
    started = utcnow()
    report = sender.send_due(sqlite_engine, settings)
    assert (report.sent, report.retrying) == (0, 3) and "mail server localhost" in report.error
    with session_scope(sqlite_engine) as s:
        waits = [
            (m.next_attempt_at - started).total_seconds() for m in s.scalars(select(OutboxMail))
        ]
    assert all(29 <= w <= 31 for w in waits), waits  # retry_base_s
    assert sender.send_due(sqlite_engine, settings).retrying == 0  # not due yet: untouched
    _due_now(sqlite_engine)
    sender.send_due(sqlite_engine, settings)
    with session_scope(sqlite_engine) as s:
        waits = [
            (m.next_attempt_at - utcnow()).total_seconds() for m in s.scalars(select(OutboxMail))
        ]
    assert all(58 <= w <= 61 for w in waits), waits  # doubled
    smtp_server.start()
    _due_now(sqlite_engine)
    assert sender.send_due(sqlite_engine, settings).sent == 3
    assert len(smtp_server.inbox.to("stu@a.example.org")) == 3
    assert _statuses(sqlite_engine) == [(C.MailStatus.SENT, 3)] * 3


def test_a_mail_that_keeps_failing_is_marked_failed_and_shown_to_admins(
    sqlite_engine: Engine,
    people: People,  # noqa: F811 - the imported fixture
    smtp_server: SmtpServer,  # noqa: F811 - the imported fixture
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BAADAL_MAIL__MAX_ATTEMPTS", "2")
    settings = _settings(monkeypatch, smtp_server)
    smtp_server.stop()
    _reject(sqlite_engine, people)
    sender.send_due(sqlite_engine, settings)
    _due_now(sqlite_engine)
    report = sender.send_due(sqlite_engine, settings)
    assert report.failed == 1, report
    assert _statuses(sqlite_engine) == [(C.MailStatus.FAILED, 2)]
    monkeypatch.setenv("BAADAL_DATABASE__URL", sqlite_engine.url.render_as_string())
    monkeypatch.setenv("COLUMNS", "250")
    get_settings.cache_clear()
    out = CliRunner().invoke(app, ["mail", "outbox", "--failed"]).output
    assert "stu@a.example.org" in out and "failed" in out and "ConnectionRefused" in out, out
    smtp_server.start()
    with session_scope(sqlite_engine) as s:
        (failed,) = mails.list_outbox(s, SYSTEM, status=C.MailStatus.FAILED)
        mails.retry_mail(s, SYSTEM, failed.id)
    assert mails.send_now(sqlite_engine, SYSTEM, get_settings()).sent == 1
    assert len(smtp_server.inbox.messages) == 1


def test_a_mailbox_refused_for_good_fails_at_once_and_the_rest_arrive(
    sqlite_engine: Engine,
    people: People,  # noqa: F811 - the imported fixture
    smtp_server: SmtpServer,  # noqa: F811 - the imported fixture
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = _settings(monkeypatch, smtp_server)
    smtp_server.inbox.refused.add("oa@a.example.org")
    request_id = make_request(sqlite_engine, people, C.RequestStatus.VERIFIED)
    with session_scope(sqlite_engine) as s:
        notify.request_event(s, s.get(RequestQueue, request_id), "verified")
    report = sender.send_due(sqlite_engine, settings)
    assert (report.sent, report.retrying, report.failed) == (1, 0, 1), report
    assert "550 5.1.1 no such mailbox" in report.error
    assert len(smtp_server.inbox.to("heads@a.example.org")) == 1
    with session_scope(sqlite_engine) as s:
        (failed,) = mails.list_outbox(s, SYSTEM, status=C.MailStatus.FAILED)
    assert (failed.recipient, failed.attempts) == ("oa@a.example.org", 1)


def test_the_periodic_job_sends_through_a_worker(
    sqlite_engine: Engine,
    people: People,  # noqa: F811 - the imported fixture
    smtp_server: SmtpServer,  # noqa: F811 - the imported fixture
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Approving an account writes the mail; the worker's mail_outbox job sends it."""
    settings = _settings(monkeypatch, smtp_server)
    with session_scope(sqlite_engine) as s:
        s.get(User, people.ids["stu"]).registration_key = C.RegistrationKey.PENDING
    with session_scope(sqlite_engine) as s:
        users.approve(s, actor_for(s, "oa"), "stu")
    assert "mail_outbox" in sync_periodic_jobs(sqlite_engine, REGISTRY.periodic, settings)
    with session_scope(sqlite_engine) as s:
        s.execute(update(OutboxMail).values(next_attempt_at=utcnow()))
    with session_scope(sqlite_engine) as s:
        s.get(PeriodicJob, "mail_outbox").next_run_at = utcnow()
    (task_id,) = fire_due_jobs(sqlite_engine)
    Worker(sqlite_engine, settings, concurrency=1).run_tasks([task_id])
    (message,) = smtp_server.inbox.to("stu@a.example.org")
    assert message["Subject"] == "Baadal: your account stu was approved"


@pytest.mark.postgres
def test_a_finished_task_writes_its_mail_in_the_finish_on_postgresql(
    pg_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BAADAL_MAIL__MAIL_ACTIVE", "true")
    get_settings.cache_clear()
    world = make_people(pg_engine)
    with session_scope(pg_engine) as s:
        queue.enqueue(s, C.TaskType.START_VM, vm_id=world.vm_id)
    claimed = queue.claim(pg_engine, "w1", 60)
    assert claimed is not None
    assert not queue.finish(pg_engine, claimed, "w2", C.TaskStatus.SUCCESS, "started")
    assert _statuses(pg_engine) == []
    assert queue.finish(pg_engine, claimed, "w1", C.TaskStatus.SUCCESS, "started")
    with session_scope(pg_engine) as s:
        told = {m.recipient for m in s.scalars(select(OutboxMail))}
    assert told == {"fac@a.example.org", "stu@a.example.org"}


@pytest.mark.postgres
def test_runs_on_postgresql_never_take_the_same_mail(pg_engine: Engine) -> None:
    """A batch is at most MAIL_BATCH mails, and runs at the same time share none."""
    mail = compose.render(
        "registration_approved", {"recipient": "x", "username": "x", "home_address": ""}
    )
    with session_scope(pg_engine) as s:
        ids = {
            outbox.queue_mail(s, "registration_approved", f"u{i}@example.org", mail, None).id
            for i in range(450)
        }
    start = threading.Barrier(6)

    def run() -> list[int]:
        start.wait()
        return [m.id for m in outbox.claim_due(pg_engine, 600)]

    with ThreadPoolExecutor(6) as pool:
        batches = list(pool.map(lambda _: run(), range(6)))
    taken = [i for batch in batches for i in batch]
    assert all(len(batch) <= C.MAIL_BATCH for batch in batches)
    assert len(taken) == len(set(taken)) and set(taken) <= ids
    assert len(taken) + sum(len(outbox.claim_due(pg_engine, 600)) for _ in range(5)) == 450
