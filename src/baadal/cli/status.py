"""``baadal status``: the cloud at a glance."""

from __future__ import annotations

from collections.abc import Sequence
from enum import IntEnum

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from baadal import constants as C
from baadal.cli.common import console, db, handle_errors, print_table
from baadal.config import config_file_path, get_settings
from baadal.db.constants_table import get_constant
from baadal.db.migrate import require_schema
from baadal.db.models import VM, Datastore, Host, PrivateIpPool, PublicIpPool, Task, Template
from baadal.db.session import get_engine


def _counts(session: Session, column: object, enum: type[IntEnum]) -> str:
    rows = session.execute(select(column, func.count()).group_by(column)).all()
    if not rows:
        return "none"
    return ", ".join(f"{enum(value).name.lower()} {n}" for value, n in sorted(rows))


def _total(session: Session, model: object) -> int:
    return session.scalar(select(func.count()).select_from(model)) or 0


def cloud_summary(session: Session) -> Sequence[tuple[str, str]]:
    return [
        ("baadal status", get_constant(session, "baadal_status")),
        ("hosts", f"{_total(session, Host)} ({_counts(session, Host.status, C.HostStatus)})"),
        ("VMs", f"{_total(session, VM)} ({_counts(session, VM.status, C.VMStatus)})"),
        ("datastores", str(_total(session, Datastore))),
        ("templates", str(_total(session, Template))),
        ("private IPs", str(_total(session, PrivateIpPool))),
        ("public IPs", str(_total(session, PublicIpPool))),
        ("tasks", f"{_total(session, Task)} ({_counts(session, Task.status, C.TaskStatus)})"),
    ]


def _print_status() -> None:
    settings = get_settings()
    engine = get_engine(settings)
    require_schema(engine)
    console.print(f"database: {engine.url.render_as_string(hide_password=True)}")
    console.print(f"settings: {config_file_path() or 'defaults + environment'}")
    with db() as session:
        rows = cloud_summary(session)
    print_table("Baadal cloud", ["what", "state"], rows)


@handle_errors
def status_cmd() -> None:
    """Show the cloud's state: database, hosts, VMs, pools and tasks."""
    _print_status()
