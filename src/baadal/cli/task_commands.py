"""``baadal task ...`` (the tasks you may see; admins retry and ignore) and ``baadal worker``."""

from __future__ import annotations

import signal
from types import FrameType
from typing import Annotated

import typer

from baadal import constants as C
from baadal.cli.door import (
    BeforeOption,
    actor,
    checked_engine,
    console,
    current_actor,
    db,
    handle_errors,
    print_more,
    print_table,
    read_db,
)
from baadal.config import get_settings
from baadal.errors import BaadalError, ValidationError
from baadal.services import tasks

app = typer.Typer(help="Tasks: list, show, retry and ignore.", no_args_is_help=True)


def _status_name(value: int) -> str:
    return C.TaskStatus(value).name


def _parse_status(value: str | None) -> C.TaskStatus | None:
    if value is None:
        return None
    try:
        return C.TaskStatus[value.upper()]
    except KeyError:
        names = ", ".join(s.name.lower() for s in C.TaskStatus)
        raise ValidationError(f"unknown status {value!r}; use one of {names}") from None


@app.command("list")
@handle_errors
def list_cmd(
    status: Annotated[str | None, typer.Option(help="pending, failed, success, ...")] = None,
    vm: Annotated[int | None, typer.Option(help="only tasks of this VM id")] = None,
    limit: Annotated[int, typer.Option(min=1, max=C.TASK_LIST_MAX)] = C.ITEMS_PER_PAGE,
    before: BeforeOption = None,
) -> None:
    """The newest tasks you may see first (admins: all)."""
    with read_db() as session:
        page = tasks.list_tasks(
            session,
            actor(session),
            status=_parse_status(status),
            vm_id=vm,
            limit=limit,
            before=before,
        )
        rows = [
            (
                t.id,
                t.task_type,
                t.vm_id,
                _status_name(t.status),
                t.attempts,
                t.created_at,
                t.message,
            )
            for t in page.items
        ]
    print_table("Tasks", ["id", "type", "vm", "status", "attempts", "created", "message"], rows)
    print_more(page, "--before")


@app.command("show")
@handle_errors
def show_cmd(task_id: int) -> None:
    """One task with its history (one event per attempt)."""
    with read_db() as session:
        who = actor(session)
        task = tasks.get_task(session, who, task_id)
        console.print(
            f"task {task.id}: {task.task_type}  status={_status_name(task.status)}"
            f"  vm={task.vm_id}  attempts={task.attempts}  priority={task.priority}"
        )
        console.print(f"parameters: {task.parameters}")
        if task.message:
            console.print(f"message: {task.message}")
        rows = [
            (e.id, _status_name(e.status), e.worker, e.start_time, e.end_time, e.message)
            for e in tasks.task_history(session, who, task_id)
        ]
    print_table("History", ["event", "status", "worker", "start", "end", "message"], rows)


@app.command("retry")
@handle_errors
def retry_cmd(task_id: int) -> None:
    """Run a failed task again."""
    with db() as session:
        tasks.retry(session, actor(session), task_id)
    console.print(f"task {task_id} queued again")


@app.command("ignore")
@handle_errors
def ignore_cmd(task_id: int) -> None:
    """Give up on a failed or waiting task."""
    with db() as session:
        tasks.ignore(session, actor(session), task_id)
    console.print(f"task {task_id} ignored")


@handle_errors
def worker_cmd(
    concurrency: Annotated[int | None, typer.Option(min=1, max=C.WORKER_CONCURRENCY_MAX)] = None,
    handlers: Annotated[
        list[str] | None, typer.Option(help="extra module registering handlers")
    ] = None,
    worker_id: Annotated[str | None, typer.Option(help="name shown in task history")] = None,
    until_idle: Annotated[bool, typer.Option(help="exit when no task is left")] = False,
) -> None:
    """Claim and run tasks until stopped (SIGTERM/SIGINT finish running tasks first)."""
    settings = get_settings()
    engine, who = checked_engine(), current_actor()
    worker = tasks.new_worker(
        engine,
        who,
        settings,
        handlers=handlers or [],
        worker_id=worker_id,
        concurrency=concurrency,
    )

    def _stop(_sig: int, _frame: FrameType | None) -> None:
        worker.stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:  # a controller restart: reservations and mappings as the database says
        console.print(tasks.restore_network(engine, who, settings), highlight=False)
    except BaadalError as exc:
        console.print(f"[yellow]network not restored:[/] {exc}", highlight=False)
    done = worker.run(until_idle=until_idle)
    console.print(f"worker {worker.worker_id} ran {done} tasks")
