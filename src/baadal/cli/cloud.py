"""``baadal cloud shutdown|bootup`` and ``baadal host shutdown|bootup``: maintenance of
the whole cloud or of some hosts, one task per VM, with a progress bar."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy import select
from sqlalchemy.orm import Session

from baadal import constants as C
from baadal.cli.common import (
    checked_engine,
    console,
    db,
    fail,
    handle_errors,
    load_host,
    print_table,
)
from baadal.cli.inventory import host_app
from baadal.config import get_settings
from baadal.db.models import Task
from baadal.db.session import session_scope
from baadal.host import maintenance
from baadal.host import vms as host_vms
from baadal.services import inventory
from baadal.tasks.registry import load_handler_modules
from baadal.tasks.worker import Worker

app = typer.Typer(help="The whole cloud: maintenance shutdown and bootup.", no_args_is_help=True)

InlineOpt = Annotated[
    bool, typer.Option(help="run the tasks in this process instead of waiting for workers")
]
TIMEOUT_S = 3600


def follow_tasks(task_ids: list[int], what: str, *, inline: bool) -> list[Task]:
    """A progress bar over many tasks until all ended; returns them (ended)."""
    engine = checked_engine()
    worker = None
    if inline and task_ids:
        worker = Worker(engine, get_settings(), registry=load_handler_modules())
        threading.Thread(target=worker.run, kwargs={"until_idle": True}, daemon=True).start()
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())  # fmt: skip
    deadline = time.monotonic() + TIMEOUT_S
    with Progress(*columns, console=console, transient=True) as progress:
        bar = progress.add_task(what, total=len(task_ids))
        while True:
            with session_scope(engine) as session:
                tasks = session.scalars(select(Task).where(Task.id.in_(task_ids))).all()
                session.expunge_all()
            ended = [t for t in tasks if t.status in C.TASK_FINAL]
            progress.update(bar, completed=len(ended))
            if len(ended) == len(task_ids):
                break
            if time.monotonic() > deadline:
                raise fail(f"{what}: {len(task_ids) - len(ended)} task(s) still running")
            time.sleep(0.3)
    if worker is not None:
        worker.stop()
    return sorted(tasks, key=lambda t: t.id)


def _report(title: str, queued: maintenance.Queued, tasks: list[Task]) -> bool:
    rows = [(str(t.vm_id), C.TaskStatus(t.status).name, t.message or "") for t in tasks]
    rows += [(name, "SKIPPED", why) for name, why in queued.skipped]
    print_table(title, ["VM", "result", "detail"], rows)
    return all(t.status == C.TaskStatus.SUCCESS for t in tasks)


def run_queued(
    queue_them: Callable[[Session], maintenance.Queued],
    title: str,
    *,
    inline: bool,
    shutdown: bool | None,
) -> None:
    with db() as session:
        queued = queue_them(session)
    tasks = follow_tasks(queued.task_ids, title, inline=inline)
    ok = _report(title, queued, tasks)
    if shutdown is not None:
        with db() as session:
            maintenance.finish(session, shutdown)
    if not ok:
        raise typer.Exit(1)


@app.command("shutdown")
@handle_errors
def shutdown_cmd(inline: InlineOpt = False) -> None:
    """Snapshot and power off every VM (bootup brings them back where they were)."""
    run_queued(maintenance.shutdown_baadal, "cloud shutdown", inline=inline, shutdown=True)


@app.command("bootup")
@handle_errors
def bootup_cmd(inline: InlineOpt = False) -> None:
    """Revert every VM the shutdown snapshotted and resume it."""
    run_queued(maintenance.bootup_baadal, "cloud bootup", inline=inline, shutdown=False)


def _for_hosts(
    queue_them: Callable[[Session, list[int]], maintenance.Queued],
    hosts: list[str],
    title: str,
    inline: bool,
) -> None:
    ids = [load_host(h).id for h in hosts]
    run_queued(lambda s: queue_them(s, ids), title, inline=inline, shutdown=None)


@host_app.command("shutdown")
@handle_errors
def host_shutdown_cmd(hosts: list[str], inline: InlineOpt = False) -> None:
    """Snapshot and power off the VMs of these hosts."""
    _for_hosts(maintenance.shutdown_host, hosts, "host shutdown", inline)


@host_app.command("bootup")
@handle_errors
def host_bootup_cmd(hosts: list[str], inline: InlineOpt = False) -> None:
    """Bring back the VMs a host shutdown snapshotted."""
    _for_hosts(maintenance.bootup_host, hosts, "host bootup", inline)


@host_app.command("evacuate")
@handle_errors
def evacuate_cmd(host: str, inline: InlineOpt = False) -> None:
    """Migrate every VM off the host (live when running), one task each."""
    host_id = load_host(host).id
    run_queued(lambda s: host_vms.migrate_all_vms_from_host(s, host_id), f"evacuate {host}",
         inline=inline, shutdown=None)  # fmt: skip


@host_app.command("maintenance")
@handle_errors
def maintenance_cmd(host: str, inline: InlineOpt = False) -> None:
    """Put the host in MAINTENANCE (no new VMs) and migrate its VMs away."""
    host_id = load_host(host).id

    def queue_them(session: Session) -> maintenance.Queued:
        inventory.set_host_status(session, host_id, C.HostStatus.MAINTENANCE)
        return host_vms.migrate_all_vms_from_host(session, host_id)

    run_queued(queue_them, f"maintenance of {host}", inline=inline, shutdown=None)
