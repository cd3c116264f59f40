"""Tasks: the newest the caller may see, one task (what a 202's Location points at) and
its events; admins retry a failed task or ignore one."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from baadal import constants as C
from baadal.api.callers import BeforeQuery, CallerDep, accepted, errors
from baadal.api.schemas import Accepted, TaskEventList, TaskEventOut, TaskList, TaskOut
from baadal.services import tasks
from baadal.services.rows import Task

router = APIRouter(tags=["tasks"])

TaskIdPath = Annotated[int, Path(ge=1, le=C.ROW_ID_MAX, description="the task's id")]
TaskStatusName = StrEnum("TaskStatusName", {s.name.lower(): s.name.lower() for s in C.TaskStatus})


def task_out(task: Task) -> TaskOut:
    return TaskOut(
        id=task.id,
        type=task.task_type,
        status=C.TaskStatus(task.status).name.lower(),
        ended=task.status in C.TASK_FINAL,
        vm_id=task.vm_id,
        message=task.message,
        created_at=task.created_at,
        started_at=task.started_at,
        finished_at=task.finished_at,
        attempts=task.attempts,
        parameters=dict(task.parameters or {}),
    )


@router.get(
    "/tasks", response_model=TaskList, responses=errors(), summary="the tasks, newest first"
)
def list_tasks(
    who: CallerDep,
    status: TaskStatusName | None = None,
    vm_id: Annotated[int | None, Query(ge=1, le=C.ROW_ID_MAX)] = None,
    limit: Annotated[int, Query(ge=1, le=C.TASK_LIST_MAX)] = C.ITEMS_PER_PAGE,
    before: BeforeQuery = None,
) -> TaskList:
    with who.read_transaction() as session:
        page = tasks.list_tasks(
            session,
            who.actor,
            status=C.TaskStatus[status.upper()] if status else None,
            vm_id=vm_id,
            limit=limit,
            before=before,
        )
        return TaskList(items=[task_out(t) for t in page.items], next=page.next)


@router.get("/tasks/{task_id}", response_model=TaskOut, responses=errors(404), summary="one task")
def get_task(who: CallerDep, task_id: TaskIdPath) -> TaskOut:
    with who.read_transaction() as session:
        return task_out(tasks.get_task(session, who.actor, task_id))


@router.get(
    "/tasks/{task_id}/events",
    response_model=TaskEventList,
    responses=errors(404),
    summary="a task's history, one event per attempt",
)
def task_events(who: CallerDep, task_id: TaskIdPath) -> TaskEventList:
    with who.read_transaction() as session:
        events = tasks.task_history(session, who.actor, task_id)
        return TaskEventList(
            items=[
                TaskEventOut(
                    id=e.id,
                    status=C.TaskStatus(e.status).name.lower(),
                    message=e.message,
                    worker=e.worker,
                    start_time=e.start_time,
                    end_time=e.end_time,
                )
                for e in events
            ]
        )


@router.post(
    "/tasks/{task_id}/retry",
    status_code=202,
    response_model=Accepted,
    responses=errors(404, 409),
    summary="run a failed task again from the start (admins)",
)
def retry_task(who: CallerDep, task_id: TaskIdPath, response: Response) -> Accepted:
    with who.transaction() as session:
        tasks.retry(session, who.actor, task_id)
    return accepted(task_id, response)


@router.post(
    "/tasks/{task_id}/ignore",
    response_model=TaskOut,
    responses=errors(404, 409),
    summary="give up on a failed or waiting task (admins)",
)
def ignore_task(who: CallerDep, task_id: TaskIdPath) -> TaskOut:
    with who.transaction() as session:
        return task_out(tasks.ignore(session, who.actor, task_id))
