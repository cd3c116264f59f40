"""``baadal status``: the cloud at a glance."""

from __future__ import annotations

from baadal.cli.door import actor, checked_engine, console, handle_errors, print_table, read_db
from baadal.config import config_file_path
from baadal.services import cloud


@handle_errors
def status_cmd() -> None:
    """Show the cloud's state: database, hosts, VMs, pools and tasks."""
    engine = checked_engine()
    console.print(f"database: {engine.url.render_as_string(hide_password=True)}")
    console.print(f"settings: {config_file_path() or 'defaults + environment'}")
    with read_db() as session:
        rows = cloud.summary(session, actor(session))
    print_table("Baadal cloud", ["what", "state"], rows)
