"""A real SMTP server for tests (aiosmtpd in a thread on 127.0.0.1), with STARTTLS or
TLS from the start, an optional login, and a certificate the tests make themselves.

aiosmtpd's Controller cannot pick a port itself (port 0 does not work), so a free one is
found first; the same port is used again when a test restarts the server (an outage).
"""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for localhost and 127.0.0.1: (certificate, key)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "smtp-cert.pem", folder / "smtp-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@dataclass
class Inbox:
    """What the server received: each message with its envelope recipients."""

    messages: list[tuple[list[str], Message]] = field(default_factory=list)
    logins: list[str] = field(default_factory=list)
    #: recipients refused for good (550), as a server refuses an unknown mailbox
    refused: set[str] = field(default_factory=set)

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if address in self.refused:
            return "550 5.1.1 no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append((list(envelope.rcpt_tos), message_from_bytes(envelope.content)))
        return "250 OK"

    def to(self, address: str) -> list[Message]:
        return [m for rcpts, m in self.messages if address in rcpts]

    @property
    def subjects(self) -> list[str]:
        return [str(m["Subject"]) for _, m in self.messages]


@dataclass
class SmtpServer:
    """One test SMTP server; ``start``/``stop`` may be called again (same port)."""

    folder: Path
    mode: str = "none"  # none | starttls | tls
    login: tuple[str, str] | None = None
    port: int = field(default_factory=free_port)
    inbox: Inbox = field(default_factory=Inbox)
    controller: Controller | None = None

    def __post_init__(self) -> None:
        self.cert, self.key = make_certificate(self.folder)

    def _server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert, self.key)
        return context

    def _authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any
    ) -> AuthResult:
        ok = (
            isinstance(data, LoginPassword)
            and self.login is not None
            and (data.login.decode(), data.password.decode()) == self.login
        )
        if ok:
            self.inbox.logins.append(data.login.decode())
        # not handled: the server answers 535 itself
        return AuthResult(success=ok, handled=ok)

    def start(self) -> None:
        kwargs: dict[str, Any] = {}
        if self.mode == "starttls":
            kwargs.update(tls_context=self._server_context(), require_starttls=True)
        elif self.mode == "tls":
            kwargs.update(ssl_context=self._server_context())
        if self.login is not None:
            kwargs.update(authenticator=self._authenticate, auth_require_tls=True)
        self.controller = Controller(
            self.inbox, hostname="127.0.0.1", port=self.port, server_hostname="localhost", **kwargs
        )
        self.controller.start()

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    def settings_env(self, monkeypatch: pytest.MonkeyPatch, password_file: Path | None) -> None:
        """Point Baadal's ``[mail]`` at this server (environment overrides)."""
        env = {
            "MAIL_ACTIVE": "true",
            "SERVER": "localhost",
            "PORT": str(self.port),
            "TLS": self.mode,
            "CA_FILE": str(self.cert),
            "SENDER": "baadal@example.org",
        }
        if self.login is not None and password_file is not None:
            env |= {"LOGIN": self.login[0], "PASSWORD_FILE": str(password_file)}
        for key, value in env.items():
            monkeypatch.setenv(f"BAADAL_MAIL__{key}", value)


@pytest.fixture
def smtp_server(tmp_path: Path) -> Iterator[SmtpServer]:
    """A plain SMTP server (no TLS, no login), running."""
    server = SmtpServer(tmp_path)
    server.start()
    yield server
    server.stop()
