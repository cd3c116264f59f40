"""A real PostgreSQL server for tests and benchmarks (Debian's cluster, started by hand).

No systemd here: the cluster is started with pg_ctlcluster. A password role is created
so connections go over TCP on 127.0.0.1 like a real deployment's would.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

ROLE = "baadal_test"
PASSWORD = "baadal_test_pw"  # test-only role on a loopback server
PORT = 5432


def _cluster() -> tuple[str, str]:
    versions = sorted(Path("/etc/postgresql").glob("*/main"))
    if not versions:
        raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql)")
    return versions[-1].parent.name, "main"


def _psql(sql: str) -> None:
    subprocess.run(
        ["runuser", "-u", "postgres", "--", "psql", "-v", "ON_ERROR_STOP=1", "-qc", sql],
        check=True,
        capture_output=True,
    )


def ensure_server() -> None:
    """Start the cluster if needed and make sure the test role exists."""
    if shutil.which("pg_ctlcluster") is None:
        raise RuntimeError("pg_ctlcluster not found: install postgresql")
    version, name = _cluster()
    status = subprocess.run(["pg_ctlcluster", version, name, "status"], capture_output=True)
    if status.returncode != 0:
        subprocess.run(["pg_ctlcluster", version, name, "start"], check=True)
    _psql(
        "DO $$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '"
        + ROLE
        + "') THEN CREATE ROLE "
        + ROLE
        + " LOGIN CREATEDB PASSWORD '"
        + PASSWORD
        + "'; END IF; END$$;"
    )


def create_database() -> str:
    """A new empty database; returns its SQLAlchemy URL."""
    name = "baadal_t_" + uuid.uuid4().hex[:12]
    _psql(f"CREATE DATABASE {name} OWNER {ROLE}")
    return f"postgresql+psycopg://{ROLE}:{PASSWORD}@127.0.0.1:{PORT}/{name}"


def drop_database(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    _psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


class PrivateServer:
    """A PostgreSQL server of a test's own (its own directory, port and socket), for
    tests that restart it: the shared cluster above serves every other test."""

    def __init__(self) -> None:
        version, _ = _cluster()
        self.bin = Path("/usr/lib/postgresql") / version / "bin"
        # its own directory: the postgres user cannot reach into a test's tmp_path
        self.root = Path(tempfile.mkdtemp(prefix="baadal-pg-"))
        shutil.chown(self.root, "postgres")
        self.data = self.root / "data"
        self.port = _free_port()
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"
        self._as_postgres(
            "initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync"
        )
        self._options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"

    def _as_postgres(self, tool: str, *args: str) -> None:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", str(self.bin / tool), *args],
            check=True,
            capture_output=True,
        )

    def _ctl(self, action: str) -> None:
        self._as_postgres(
            "pg_ctl", action, "-D", str(self.data), "-w", "-m", "fast", "-o", self._options,
            "-l", str(self.root / "log"),
        )  # fmt: skip

    def start(self) -> None:
        self._ctl("start")

    def restart(self) -> None:
        """Every connection is cut; the server is back when this returns."""
        self._ctl("restart")

    def stop(self) -> None:
        """Stop it and remove its directory."""
        try:
            self._ctl("stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
