"""The request workflow on the lab, driven through the CLI the way its people use it
(``--as``), with a real worker and a real SMTP server (STARTTLS and a login):

- a student asks for a VM naming a faculty member of their organisation; the faculty
  member verifies, the orgadmin approves, the admin approves and the worker creates the
  VM on a lab host; it answers ping; each step's mail (made -> the faculty member,
  verified -> the orgadmins, approved -> the admins, queued -> the student, the task's
  done -> the VM's users) reaches the SMTP server through the periodic ``mail_outbox``
  job; the audit log holds each step (a refused one too), also once the student has
  deleted the VM again;
- a request rejected with a reason: the reason is kept (``request show``) and mailed to
  the student, nothing is queued, and the audit log holds the steps.

The admin adds the organisation (``org add --registration``) and everyone registers with
``user register --password-stdin``; the student registers first: on SQLite the first
account has id 0 (the system user is -1), which the request chain must not take for none.

The quota race (two approvals for the last unit, on PostgreSQL) is
tests/integration/test_request_quota_race.py.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import Message

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from baadal.cli.main import app
from baadal.config import get_settings
from baadal.db.models import Task
from baadal.db.session import dispose_engines, session_scope
from baadal.lab import layout
from baadal.net import dhcp
from baadal.services import audit
from baadal.services.policy import actor_for
from baadal.timeutil import utcnow
from tests.e2e.conftest import Lab, wait_ping
from tests.support.smtp import SmtpServer
from tests.support.workers import start_worker

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ORG = "LABU"
DOMAIN = "lab.example.org"
PASSWORD = "correct horse battery staple"
SMTP_LOGIN = ("baadal-mailer", "mail-s3cret")
#: username -> roles besides user (all of organisation ORG), in the order they register:
#: on SQLite the first account has id 0 (the system user is -1), a falsy id
PEOPLE = {
    "sam": "",
    "fred": "faculty",
    "olga": "orgadmin",
    "ada": "admin",
    "cole": "",
}
MAIL_TIMEOUT_S = 30
TASK_TIMEOUT_S = 300
PING_TIMEOUT_S = 120


def address(username: str) -> str:
    return f"{username}@{DOMAIN}"


@dataclass
class Cloud:
    """The lab with ORG's people, a worker sending mail every second, and the inbox."""

    lab: Lab
    smtp: SmtpServer
    runner: CliRunner
    #: the environment of the lab's people: its home, [mail] at the SMTP server
    env: dict[str, str]

    def apply(self, monkeypatch: pytest.MonkeyPatch) -> None:
        for key, value in self.env.items():
            monkeypatch.setenv(key, value)
        get_settings.cache_clear()

    def cli(self, *args: str, user: str | None = None, code: int = 0, stdin: str = "") -> str:
        argv = (["--as", user] if user else []) + list(args)
        result = self.runner.invoke(app, argv, input=stdin, terminal_width=200)
        assert result.exit_code == code, f"baadal {' '.join(argv)}:\n{result.output}"
        return result.output

    def mail(self, to: str, subject: str, timeout: float = MAIL_TIMEOUT_S) -> Message:
        """The first mail to ``to`` whose subject holds ``subject``, once it arrived."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for message in self.smtp.inbox.to(to):
                if subject in str(message["Subject"]):
                    return message
            time.sleep(0.2)
        raise AssertionError(f"no mail {subject!r} to {to}; got {self.smtp.inbox.subjects}")

    def mails_about(self, subject: str) -> list[tuple[list[str], Message]]:
        return [(to, m) for to, m in self.smtp.inbox.messages if subject in str(m["Subject"])]

    def audit(self, since: str, vm: str | None = None) -> list[tuple[str, str, str, str]]:
        """(who, function, object, outcome) of the requests' and VMs' audit entries
        from ``since`` on, as the admin reads them, oldest first."""
        with session_scope(self.lab.engine) as s:
            found = audit.list_entries(s, actor_for(s, "ada"), since=since, vm=vm).items
        return [
            (e.actor_name, e.function, f"{e.target_type} {e.target_name}", e.outcome.split(":")[0])
            for e in reversed(found)
            if e.function.startswith(("vm_requests.", "vms."))
        ]

    def tasks(self) -> int:
        with session_scope(self.lab.engine) as s:
            return s.scalar(select(func.count()).select_from(Task).where(Task.vm_id.is_not(None)))


def _add_people(cloud: Cloud) -> None:
    """The admin adds the organisation (open to registration); each person registers
    (password on stdin), the admin approves and gives roles."""
    out = cloud.cli("org", "add", ORG, "--details", "the lab's university", "--registration")
    assert f"organisation {ORG} added" in out
    for name, roles in PEOPLE.items():
        out = cloud.cli(
            "user", "register", name, "--email", address(name), "--first", name.capitalize(),
            "--org", ORG, "--password-stdin", stdin=f"{PASSWORD}\n",
        )  # fmt: skip
        assert f"registered {name}" in out
        cloud.cli("user", "approve", name)
        if roles:
            assert roles in cloud.cli("user", "roles", name, "--set", roles)
        assert "logged in" in cloud.cli(
            "user", "login", name, "--password-stdin", stdin=f"{PASSWORD}\n"
        )
        # the approval's own mail, sent by the worker's periodic job
        cloud.mail(address(name), f"your account {name} was approved")


@pytest.fixture(scope="module")
def _cloud(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    folder = tmp_path_factory.mktemp("smtp")
    smtp = SmtpServer(folder, mode="starttls", login=SMTP_LOGIN)
    password_file = folder / "smtp-password"
    password_file.write_text(SMTP_LOGIN[1] + "\n")
    smtp.start()
    worker: subprocess.Popen[bytes] | None = None
    with pytest.MonkeyPatch.context() as mp:
        smtp.settings_env(mp, password_file)
        env = {k: v for k, v in os.environ.items() if k.startswith("BAADAL_MAIL__")} | {
            "BAADAL_HOME": str(lab.home),  # the CLI finds the lab's settings file
            "BAADAL_MAIL__ADMIN_EMAIL": f"cloud-admins@{DOMAIN}",
            "BAADAL_SCHEDULER__MAIL_OUTBOX": "1",  # the worker sends mail every second
        }
        cloud = Cloud(lab, smtp, CliRunner(), env)
        cloud.apply(mp)
        try:
            worker = start_worker(
                f"sqlite:///{lab.home / 'baadal.db'}", lab.home, "e2e-requests", until_idle=False
            )
            _add_people(cloud)
            yield cloud
        finally:
            if worker is not None:
                worker.send_signal(signal.SIGTERM)
                out, _ = worker.communicate(timeout=120)
                print(out.decode(errors="replace")[-2000:])
            smtp.stop()
            get_settings.cache_clear()
            dispose_engines()


@pytest.fixture
def cloud(_cloud: Cloud, monkeypatch: pytest.MonkeyPatch) -> Cloud:
    """Each test has its own home (tests/conftest.py): point it at the lab's again."""
    _cloud.apply(monkeypatch)
    return _cloud


def body(message: Message) -> str:
    payload = message.get_payload(decode=True)
    assert isinstance(payload, bytes)
    return payload.decode()


def told(message: Message, verb: str, request_id: str) -> list[str]:
    """The command a mail tells its reader to run: ``baadal request VERB ID``."""
    wanted = f"baadal request {verb} {request_id}"
    lines = [line.strip() for line in body(message).splitlines()]
    assert wanted in lines, body(message)
    return wanted.split()[1:]


def _request_id(output: str) -> str:
    match = re.fullmatch(r"request (\d+)", output.strip())
    assert match is not None, output
    return match[1]


def _field(output: str, name: str) -> str:
    """A value of a ``show`` table (``name │ value``)."""
    match = re.search(rf"{re.escape(name)}\s*│\s*(.*?)\s*│", output)
    assert match is not None, output
    return match[1]


def test_a_students_vm_through_the_approval_chain(cloud: Cloud) -> None:
    t0 = time.monotonic()
    started = utcnow().isoformat()
    cli, mail = cloud.cli, cloud.mail
    rid = _request_id(
        cli("request", "create", "labvm", "--template", layout.TEMPLATE_NAME,
            "--approver", "fred", "--collaborator", "cole", "--purpose", "operating systems lab",
            user="sam")
    )  # fmt: skip
    about = f'Baadal: request {rid} (create "labvm")'
    made = mail(address("fred"), f"{about} waits for you")
    assert "sam asks for" in body(made) and "Purpose: operating systems lab" in body(made)
    # the chain is kept in order: nobody skips the faculty member
    cli("request", "approve", rid, user="olga", code=2)
    cli("request", "verify", rid, user="cole", code=2)
    assert rid in cli("request", "list", "--pending", user="fred")
    # each approver runs the command their mail gives
    assert f"request {rid}: VERIFIED" in cli(*told(made, "verify", rid), user="fred")
    verified = mail(address("olga"), f"{about} verified, waits for you")
    # the student reminds whoever the request waits for (once a day)
    assert "reminded the orgadmins" in cli("request", "remind", rid, user="sam")
    mail(address("olga"), f'Baadal: reminder: request {rid} (create "labvm") waits for you')
    cli("request", "remind", rid, user="sam", code=2)
    assert f"request {rid}: APPROVED" in cli(*told(verified, "approve", rid), user="olga")
    approved = mail(address("ada"), f"{about} approved, waits for you")
    mail(f"cloud-admins@{DOMAIN}", f"{about} approved, waits for you")
    shown = cli("request", "show", rid, user="sam")
    assert _field(shown, "status") == "APPROVED"
    assert _field(shown, "requester / owner / approver") == "sam / fred / fred"

    # the admin's approval queues the VM's creation; the worker runs it on a lab host
    out = cli(*told(approved, "approve", rid), "--wait", user="ada")
    assert f"request {rid}: IN_QUEUE" in out and "SUCCESS" in out, out
    mail(address("sam"), f"{about} approved and queued")
    for user in ("fred", "sam", "cole"):  # the owner and the VM's users
        mail(address(user), 'Create VM of VM "labvm" done')
    created = time.monotonic() - t0

    # the student and the collaborator see it; it answers ping on its DHCP address
    shown = cli("vm", "show", "labvm", user="sam")
    assert _field(shown, "status") == "RUNNING"
    ip = _field(shown, "private IP")
    assert ip.startswith("10.99.10."), shown
    assert _field(cli("vm", "show", "labvm", user="cole"), "private IP") == ip
    cli("vm", "show", "labvm", user="olga")  # the orgadmin of the owner's organisation
    assert wait_ping(ip, PING_TIMEOUT_S)
    pinged = time.monotonic() - t0

    # every step told exactly who it concerns, once
    recipients = {
        f"{about} waits for you": {address("fred")},
        f"{about} verified, waits for you": {address("olga")},
        f"{about} approved, waits for you": {address("ada"), f"cloud-admins@{DOMAIN}"},
        f"{about} approved and queued": {address("sam")},
        'Create VM of VM "labvm" done': {address(u) for u in ("fred", "sam", "cole")},
    }
    for subject, expected in recipients.items():
        got = sorted(a for to, _ in cloud.mails_about(subject) for a in to)
        assert got == sorted(expected), (subject, got)

    # the student deletes it again (a VM's user operates it); the lab is as before
    out = cli("vm", "delete", "labvm", user="sam")
    assert "SUCCESS" in out, out
    mail(address("cole"), 'Delete VM of VM "labvm" done')
    assert "labvm" not in cli("vm", "list", user="sam")
    assert dhcp.read_dhcp_entries(cloud.lab.settings) == []
    # the worker logged in over STARTTLS; nothing is left failed in the outbox
    assert cloud.smtp.inbox.logins and set(cloud.smtp.inbox.logins) == {SMTP_LOGIN[0]}
    assert "@" not in cli("mail", "outbox", "--failed", user="ada")
    # the audit log holds each step (a refused one too), and keeps them once the VM is gone
    assert cloud.audit(started) == [
        ("sam", "vm_requests.request_create", "request labvm", "ok"),
        ("cole", "vm_requests.verify_request", "request labvm", "refused"),
        ("fred", "vm_requests.verify_request", "request labvm", "ok"),
        ("sam", "vm_requests.remind_request", "request labvm", "ok"),
        ("olga", "vm_requests.approve_request", "request labvm", "ok"),
        ("ada", "vm_requests.approve_request", "request labvm", "ok"),
        ("sam", "vms.operate", "vm labvm", "ok"),
    ]
    assert [step[:2] for step in cloud.audit(started, vm="labvm")] == [
        ("ada", "vm_requests.approve_request"),
        ("sam", "vms.operate"),
    ]
    mine = cli("audit", "--since", started, user="sam")  # everyone reads their own
    assert "vms.operate" in mine and "fred" not in mine and "ada" not in mine
    print(f"\nrequest -> VM created {created:.1f} s, -> answers ping {pinged:.1f} s")


def test_a_rejection_keeps_its_reason_and_tells_the_student(cloud: Cloud) -> None:
    cli = cloud.cli
    started = utcnow().isoformat()
    tasks_before = cloud.tasks()
    rid = _request_id(
        cli("request", "create", "bigvm", "--template", layout.TEMPLATE_NAME,
            "--approver", "fred", "--ram", "1024", user="sam")
    )  # fmt: skip
    cli("request", "verify", rid, user="fred")
    cli("request", "reject", rid, "--reason", "  ", user="olga", code=2)  # a reason is needed
    reason = "no RAM left this term; ask again with 256 MB"
    assert f"request {rid}: REJECTED" in cli(
        "request", "reject", rid, "--reason", reason, user="olga"
    )
    shown = cli("request", "show", rid, user="sam")
    assert _field(shown, "status") == "REJECTED"
    assert _field(shown, "rejected because") == reason
    about = f'Baadal: request {rid} (create "bigvm")'
    assert reason in body(cloud.mail(address("sam"), f"{about} rejected"))
    # a rejected request stays rejected: no admin approval queues it
    cli("request", "approve", rid, user="ada", code=2)
    assert cloud.tasks() == tasks_before
    assert not cloud.mails_about(f"{about} approved")
    assert cloud.audit(started) == [
        ("sam", "vm_requests.request_create", "request bigvm", "ok"),
        ("fred", "vm_requests.verify_request", "request bigvm", "ok"),
        ("olga", "vm_requests.reject_request", "request bigvm", "ok"),
    ]
