"""``baadal cloud shutdown|bootup``: maintenance of the whole cloud, one task per VM, with
a progress bar (:func:`run_queued`, which the ``host`` maintenance commands share)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated

import typer
from sqlalchemy.orm import Session

from baadal import constants as C
from baadal.cli.door import (
    actor,
    checked_engine,
    console,
    current_actor,
    db,
    fail,
    handle_errors,
    print_table,
)
from baadal.config import get_settings
from baadal.services import cloud
from baadal.services.policy import Actor

if TYPE_CHECKING:  # host_commands imports this module: `host list` needs neither (the
    # task engine, the host code)
    from baadal.services.hosts import Queued
    from baadal.services.tasks import TaskState

app = typer.Typer(help="The whole cloud: maintenance shutdown and bootup.", no_args_is_help=True)

InlineOpt = Annotated[
    bool, typer.Option(help="run the tasks in this process instead of waiting for workers")
]
TIMEOUT_S = 3600


def follow_tasks(task_ids: list[int], what: str, *, inline: bool) -> list[TaskState]:
    """A progress bar over many tasks until all ended; returns their final states."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from baadal.services import tasks

    engine = checked_engine()
    who = current_actor()
    if inline and task_ids:  # ends by itself when they all ended
        run = tasks.inline_runner(engine, who, get_settings(), task_ids)
        threading.Thread(target=run, daemon=True).start()
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())  # fmt: skip
    deadline = time.monotonic() + TIMEOUT_S
    with Progress(*columns, console=console, transient=True) as progress:
        bar = progress.add_task(what, total=len(task_ids))
        while True:
            with db() as session:
                states = tasks.task_states(session, who, task_ids)
            ended = [t for t in states if t.ended]
            progress.update(bar, completed=len(ended))
            if len(ended) == len(states):
                break
            if time.monotonic() > deadline:
                raise fail(f"{what}: {len(states) - len(ended)} task(s) still running")
            time.sleep(0.3)
    return states


def _report(title: str, queued: Queued, states: list[TaskState]) -> bool:
    rows = [(str(t.vm_id), t.status.name, t.message or "") for t in states]
    rows += [(name, "SKIPPED", why) for name, why in queued.skipped]
    print_table(title, ["VM", "result", "detail"], rows)
    return all(t.status == C.TaskStatus.SUCCESS for t in states)


def run_queued(
    queue_them: Callable[[Session, Actor], Queued],
    title: str,
    *,
    inline: bool,
    shutdown: bool | None = None,
) -> None:
    """Queue the tasks (one transaction), follow them, report; with ``shutdown`` set,
    record the cloud as down or up afterwards. Exit 1 unless every task succeeded."""
    with db() as session:
        queued = queue_them(session, actor(session))
    states = follow_tasks(queued.task_ids, title, inline=inline)
    ok = _report(title, queued, states)
    if shutdown is not None:
        with db() as session:
            cloud.finish(session, actor(session), shutdown=shutdown)
    if not ok:
        raise typer.Exit(1)


@app.command("shutdown")
@handle_errors
def shutdown_cmd(inline: InlineOpt = False) -> None:
    """Snapshot and power off every VM (bootup brings them back where they were)."""
    run_queued(cloud.shutdown, "cloud shutdown", inline=inline, shutdown=True)


@app.command("bootup")
@handle_errors
def bootup_cmd(inline: InlineOpt = False) -> None:
    """Revert every VM the shutdown snapshotted and resume it."""
    run_queued(cloud.bootup, "cloud bootup", inline=inline, shutdown=False)
