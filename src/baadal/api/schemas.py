"""The bodies the API takes and gives (its OpenAPI schemas)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from baadal import constants as C

RowId = Annotated[int, Field(ge=1, le=C.ROW_ID_MAX)]


class Body(BaseModel):
    """Request bodies: an unknown field is a mistake, not something to ignore."""

    model_config = ConfigDict(extra="forbid")


class Problem(BaseModel):
    """An error (RFC 9457, ``application/problem+json``); ``detail`` is one line."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str


class Me(BaseModel):
    id: int
    username: str
    roles: list[str]
    organisation_id: int | None


class VMOut(BaseModel):
    id: int
    name: str
    status: str
    owner: str | None
    ram_mb: int
    vcpus: int
    disk_gb: int
    extra_disk_gb: int
    host: str | None
    private_ip: str | None
    public_ip: str | None
    locked: bool


class VMList(BaseModel):
    items: list[VMOut]
    #: the ``after`` that gives the next page; null on the last one
    next: int | None


class VMCreate(Body):
    """A new VM: a request (admins: queued at once; see ``status`` and ``task_id``)."""

    name: str = Field(min_length=1, max_length=30)
    template: str = Field(min_length=1, max_length=100)
    ram_mb: int = Field(default=256, ge=1, le=C.ROW_ID_MAX)
    vcpus: int = Field(default=1, ge=1, le=1024)
    security_domain: str | None = Field(default=None, min_length=1, max_length=100)
    public_ip: bool = False
    extra_disk_gb: int = Field(default=0, ge=0, le=C.ROW_ID_MAX)
    approver: str | None = Field(default=None, min_length=1, max_length=128)
    collaborators: list[Annotated[str, Field(min_length=1, max_length=128)]] = Field(
        default_factory=list, max_length=50
    )
    purpose: str | None = Field(default=None, max_length=512)


class RequestOut(BaseModel):
    id: int
    kind: str
    status: str
    vm_name: str
    requester: str
    owner: str
    approver: str | None
    collaborators: list[str]
    ram_mb: int | None
    vcpus: int | None
    extra_disk_gb: int
    public_ip: bool | None
    security_domain: str | None
    template: str | None
    purpose: str | None
    reject_reason: str | None
    task_id: int | None
    task_message: str | None
    request_time: datetime


class RequestList(BaseModel):
    items: list[RequestOut]
    #: always null: the list is the newest requests, bounded
    next: None = None


class Reject(Body):
    reason: str = Field(min_length=1, max_length=512)


class TaskOut(BaseModel):
    id: int
    type: str
    status: str
    vm_id: int | None
    message: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    attempts: int
    parameters: dict[str, Any]


class TaskList(BaseModel):
    items: list[TaskOut]
    #: always null: the list is the newest tasks, bounded by ``limit``
    next: None = None


class Accepted(BaseModel):
    """Work was queued: poll ``Location`` (the task) until it ends."""

    task_id: int


class TokenCreate(Body):
    name: str = Field(default="api", min_length=1, max_length=C.API_TOKEN_NAME_MAX)
    expires_days: int | None = Field(default=None, ge=1, le=C.API_TOKEN_DAYS_MAX)
    #: whose token (admins); default: the caller's own
    username: str | None = Field(default=None, min_length=1, max_length=128)


class TokenOut(BaseModel):
    id: int
    username: str
    name: str
    prefix: str
    created: datetime
    expires: datetime | None
    last_used: datetime | None
    revoked: datetime | None
    active: bool


class NewTokenOut(TokenOut):
    #: the token itself, shown this once
    token: str


class TokenList(BaseModel):
    items: list[TokenOut]
    next: None = None
