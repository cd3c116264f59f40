"""A real PostgreSQL server for tests and benchmarks (Debian's cluster, started by hand).

No systemd here: the cluster is started with pg_ctlcluster. A password role is created
so connections go over TCP on 127.0.0.1 like a real deployment's would.
"""

from __future__ import annotations

import shutil
import subprocess
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
