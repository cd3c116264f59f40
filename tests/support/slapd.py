"""A real OpenLDAP server (slapd) on 127.0.0.1 for tests, started by hand in the
foreground (``-d 0``) from a slapd.conf in the test's directory, with an mdb database
there, and stopped afterwards. ``add_person`` puts an inetOrgPerson below ou=people.

It serves TLS too: ``ldaps://`` on a second port and StartTLS on the plain one, with a
server certificate for 127.0.0.1 signed by a CA made with ``openssl`` at start
(:func:`make_ca`; the test's own ``ca_file``)."""

from __future__ import annotations

import contextlib
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ldap3 import Connection, Server

from tests.support.sshd import HOST, free_port

SLAPD = "/usr/sbin/slapd"
SUFFIX = "dc=baadal,dc=test"
PEOPLE = f"ou=people,{SUFFIX}"
START_TIMEOUT_S = 10.0

_CONFIG = """include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
include /etc/ldap/schema/nis.schema
modulepath /usr/lib/ldap
moduleload back_mdb
pidfile {workdir}/slapd.pid
access to attrs=userPassword by anonymous auth by * none
access to * by * read
database mdb
maxsize 10485760
suffix "{suffix}"
rootdn "cn=admin,{suffix}"
rootpw {root_password}
directory {workdir}/db
TLSCACertificateFile {tls}/ca.pem
TLSCertificateFile {tls}/server.pem
TLSCertificateKeyFile {tls}/server.key
"""


def _openssl(*argv: str) -> None:
    subprocess.run(["openssl", *argv], check=True, capture_output=True)


def make_ca(directory: Path, name: str = "ca") -> Path:
    """A self-signed CA: ``<name>.pem`` (the certificate) and ``<name>.key`` in
    ``directory``; returns the certificate's path."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
             "-subj", f"/CN=Baadal test {name}", "-keyout", str(key), "-out", str(cert))  # fmt: skip
    return cert


def _server_certificate(directory: Path) -> None:
    """server.pem/server.key for 127.0.0.1, signed by the CA in ``directory``."""
    make_ca(directory)
    key, csr, cert = directory / "server.key", directory / "server.csr", directory / "server.pem"
    ext = directory / "server.ext"
    ext.write_text(f"subjectAltName = IP:{HOST}, DNS:localhost\n")
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={HOST}",
             "-keyout", str(key), "-out", str(csr))  # fmt: skip
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(directory / "ca.pem"),
             "-CAkey", str(directory / "ca.key"), "-CAcreateserial", "-days", "2",
             "-extfile", str(ext), "-out", str(cert))  # fmt: skip


@dataclass
class LdapServer:
    #: plain LDAP (StartTLS offered)
    url: str
    root_dn: str
    root_password: str
    proc: subprocess.Popen[bytes]
    #: LDAP over TLS
    ldaps_url: str
    #: the CA that signed the server's certificate
    ca_file: Path

    def connection(self) -> Connection:
        return Connection(
            Server(self.url), user=self.root_dn, password=self.root_password, auto_bind=True
        )

    def add_person(
        self, uid: str, password: str, given: str, surname: str, mail: str, org: str = ""
    ) -> None:
        attributes = {
            "uid": uid, "cn": f"{given} {surname}", "givenName": given, "sn": surname,
            "mail": mail, "userPassword": password,
        }  # fmt: skip
        if org:
            attributes["o"] = org
        with self.connection() as conn:
            assert conn.add(f"uid={uid},{PEOPLE}", ["inetOrgPerson"], attributes), conn.result


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((HOST, port)) == 0


@contextlib.contextmanager
def running_slapd(workdir: Path) -> Iterator[LdapServer]:
    if shutil.which(SLAPD) is None:
        raise RuntimeError("slapd not found: apt-get install slapd")
    (workdir / "db").mkdir(parents=True, exist_ok=True)
    root_password = secrets.token_urlsafe(12)
    tls = workdir / "tls"
    _server_certificate(tls)
    config = workdir / "slapd.conf"
    config.write_text(
        _CONFIG.format(workdir=workdir, suffix=SUFFIX, root_password=root_password, tls=tls)
    )
    port, tls_port = free_port(), free_port()
    while tls_port == port:
        tls_port = free_port()
    url, ldaps_url = f"ldap://{HOST}:{port}", f"ldaps://{HOST}:{tls_port}"
    proc = subprocess.Popen(
        [SLAPD, "-d", "0", "-f", str(config), "-h", f"{url}/ {ldaps_url}/"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not (_listening(port) and _listening(tls_port)):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"slapd did not start on {url} and {ldaps_url}")
            time.sleep(0.05)
        server = LdapServer(
            url, f"cn=admin,{SUFFIX}", root_password, proc, ldaps_url, tls / "ca.pem"
        )
        with server.connection() as conn:
            assert conn.add(SUFFIX, ["dcObject", "organization"], {"dc": "baadal", "o": "Baadal"})
            assert conn.add(PEOPLE, ["organizationalUnit"], {"ou": "people"})
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
