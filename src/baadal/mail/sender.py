"""The sending job: due mails of the outbox over one SMTP connection per run.

Mails are sent outside any transaction (SMTP may be slow; SQLite would hold its write
lock). The server's certificate is always checked (``[mail] ca_file`` or the system's
CAs); the login's password is read from ``[mail] password_file`` when connecting and goes
nowhere else: errors carry the server's reply, never what was sent.
"""

from __future__ import annotations

import logging
import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from sqlalchemy import Engine

from baadal import constants as C
from baadal.config import MailConf, Settings, read_secret_file
from baadal.errors import BaadalError
from baadal.mail import outbox
from baadal.tasks.registry import TaskContext, TaskResult, handler

log = logging.getLogger("baadal")

#: the longest error kept with a mail (one line)
_ERROR_MAX = 500


@dataclass(frozen=True)
class SendReport:
    sent: int = 0
    retrying: int = 0
    failed: int = 0
    #: the first error of the run, for the task's message
    error: str = ""

    def __str__(self) -> str:
        text = f"{self.sent} mail(s) sent, {self.retrying} to retry, {self.failed} given up"
        return f"{text}; {self.error}" if self.error else text


def lease_s(conf: MailConf) -> float:
    """How long a run holds its batch: longer than sending a whole batch can take (each
    mail may wait the full timeout), so no second run sends the same mail meanwhile."""
    return max(C.MAIL_SEND_LEASE_MIN_S, (C.MAIL_BATCH + 1) * conf.timeout_s)


def describe(exc: BaseException) -> str:
    """One line for an SMTP or network error: the server's reply, or what went wrong."""
    if isinstance(exc, smtplib.SMTPResponseException):
        reply = exc.smtp_error
        text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
        what = f"{exc.smtp_code} {text}"
    elif isinstance(exc, smtplib.SMTPRecipientsRefused):
        what = "recipient refused: " + ", ".join(
            f"{code} {reply.decode('utf-8', 'replace')}" for code, reply in exc.recipients.values()
        )
    else:
        what = str(exc) or type(exc).__name__
    return " ".join(f"{type(exc).__name__}: {what}".split())[:_ERROR_MAX]


def _connection_lost(exc: BaseException) -> bool:
    """A network error, not a reply about one mail (SMTP's errors are OSErrors too)."""
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return True
    return isinstance(exc, OSError) and not isinstance(exc, smtplib.SMTPException)


def _refused_for_good(exc: BaseException) -> bool:
    """The server refused every recipient with a permanent (5xx) reply: no address
    turns valid by trying again, so the mail is failed at once."""
    if not isinstance(exc, smtplib.SMTPRecipientsRefused) or not exc.recipients:
        return False
    return all(code >= 500 for code, _reply in exc.recipients.values())


def _tls_context(conf: MailConf) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=conf.ca_file or None)


def connect(conf: MailConf) -> smtplib.SMTP:
    """An SMTP connection as ``[mail]`` says: TLS from the start or after STARTTLS (a
    server that does not offer STARTTLS is refused, never used in clear), then the login."""
    if conf.tls == C.MailTls.TLS:
        smtp: smtplib.SMTP = smtplib.SMTP_SSL(
            conf.server, conf.port, timeout=conf.timeout_s, context=_tls_context(conf)
        )
    else:
        smtp = smtplib.SMTP(conf.server, conf.port, timeout=conf.timeout_s)
    try:
        smtp.ehlo()
        if conf.tls == C.MailTls.STARTTLS:
            smtp.starttls(context=_tls_context(conf))
            smtp.ehlo()
        if conf.login:
            smtp.login(conf.login, read_secret_file(conf.password_file, "[mail] password_file"))
    except BaseException:
        smtp.close()
        raise
    return smtp


def _message(conf: MailConf, mail: outbox.Claimed) -> EmailMessage:
    message = EmailMessage()
    message["From"] = conf.sender
    message["To"] = mail.recipient
    message["Subject"] = mail.subject
    message["Date"] = formatdate(localtime=False, usegmt=True)
    message["Message-ID"] = make_msgid(domain=conf.sender.rpartition("@")[2])
    message.set_content(mail.body)
    return message


def send_due(engine: Engine, settings: Settings) -> SendReport:
    """Send the due mails (one batch); each failure waits its back-off or, after
    ``[mail] max_attempts`` tries, is marked failed."""
    conf = settings.mail
    mails = outbox.claim_due(engine, lease_s(conf))
    if not mails:
        return SendReport()
    sent = retrying = failed = 0
    first_error = ""
    smtp: smtplib.SMTP | None = None
    connect_error = ""
    try:
        try:
            smtp = connect(conf)
        except OSError as exc:  # SMTP's and TLS's errors are OSErrors
            connect_error = f"mail server {conf.server}:{conf.port}: {describe(exc)}"
        except BaadalError as exc:  # the password file cannot be read
            connect_error = str(exc)
        for mail in mails:
            error, permanent = connect_error, False
            if smtp is not None and not error:
                try:
                    smtp.send_message(_message(conf, mail))
                except OSError as exc:  # SMTPException included
                    error, permanent = describe(exc), _refused_for_good(exc)
                    if _connection_lost(exc):
                        connect_error = error  # the rest of the batch waits for the next run
            if not error:
                outbox.mark_sent(engine, mail.id)
                sent += 1
                continue
            first_error = first_error or error
            if outbox.mark_failed(engine, mail.id, error, conf, permanent=permanent):
                failed += 1
                log.warning(
                    "mail %d to %s given up after %d tries: %s",
                    mail.id,
                    mail.recipient,
                    mail.attempts,
                    error,
                )
            else:
                retrying += 1
                log.info(
                    "mail %d to %s not sent (try %d): %s",
                    mail.id,
                    mail.recipient,
                    mail.attempts,
                    error,
                )
    finally:
        if smtp is not None:
            try:
                smtp.quit()
            except OSError:
                smtp.close()
    return SendReport(sent, retrying, failed, first_error)


@handler(C.TaskType.SEND_MAIL, periodic=("mail_outbox",))
def send_outbox(ctx: TaskContext) -> TaskResult:
    """The periodic job (scheduled only while ``[mail] mail_active``): an SMTP outage is
    not the job's failure; the mails wait and the message says why."""
    if not ctx.settings.mail.mail_active:
        return TaskResult.success("mail is off ([mail] mail_active = false)")
    report = send_due(ctx.engine, ctx.settings)
    purged = outbox.purge_sent(ctx.engine, ctx.settings.mail)
    return TaskResult.success(
        f"{report}; {purged} old sent mail(s) deleted" if purged else str(report)
    )
