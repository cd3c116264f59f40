"""The bodies the API takes and gives (its OpenAPI schemas)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from baadal import constants as C

#: a moment in UTC with its offset (the database keeps naive UTC; RFC 3339 wants the zone)
Time = Annotated[datetime, AfterValidator(lambda t: t if t.tzinfo else t.replace(tzinfo=UTC))]
#: free text of at most 512 characters (no control characters)
Text = Annotated[str, Field(max_length=C.VM_PURPOSE_MAX, pattern=C.NO_CONTROL_PATTERN)]
#: a user's, template's or security domain's name (a lookup: unknown ones are 404)
Name = Annotated[str, Field(min_length=1, max_length=128)]
#: a RAM size a VM may have, in MB
RamMB = Literal[C.ALLOWED_RAM_MB]  # type: ignore[valid-type]
#: a vCPU count a VM may have
Vcpus = Literal[C.ALLOWED_VCPUS]  # type: ignore[valid-type]
#: the size of an extra disk, in GB
DiskGB = Annotated[int, Field(ge=C.EXTRA_DISK_GB_RANGE[0], le=C.EXTRA_DISK_GB_RANGE[1])]


class Body(BaseModel):
    """Request bodies: an unknown field is a mistake, not something to ignore; so is a
    value of another type (``true`` is not the number 1, nor ``"5"`` the number 5)."""

    model_config = ConfigDict(extra="forbid", strict=True)


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

    name: str = Field(min_length=1, max_length=30, pattern=C.SAFE_NAME_PATTERN)
    template: Name
    ram_mb: RamMB = 256
    vcpus: Vcpus = 1
    security_domain: Name | None = None
    public_ip: bool = False
    #: 0: none; else the size of an extra disk
    extra_disk_gb: int = Field(default=0, ge=0, le=C.EXTRA_DISK_GB_RANGE[1])
    #: the faculty member who vouches for a student's request
    approver: Name | None = None
    collaborators: list[Name] = Field(default_factory=list, max_length=50)
    purpose: Text | None = None


class ChangeNote(Body):
    """What a change to a VM says to its approvers: it is a request (queued at once for
    admins), as ``baadal request clone|disk|edit``."""

    #: the faculty member who vouches for a student's request
    approver: Name | None = None
    purpose: Text | None = None


class VMEdit(ChangeNote):
    """Only what is given changes (RAM and vCPUs once the VM is shut off)."""

    ram_mb: RamMB | None = None
    vcpus: Vcpus | None = None
    #: true attaches a public IP, false gives it back
    public_ip: bool | None = None
    #: move the VM to this security domain (a running VM reboots)
    security_domain: Name | None = None


class DiskAttach(ChangeNote):
    size_gb: DiskGB


class CloneCreate(ChangeNote):
    """Clones of a shut-off VM, named ``<name>_clone<k>``."""

    count: int = Field(default=1, ge=1, le=C.CLONE_COUNT_MAX)


class Migrate(Body):
    #: the destination host; default: placement chooses
    host: str | None = Field(default=None, min_length=1, max_length=C.HOST_NAME_MAX)
    #: false: pause a running guest while it moves (a shut-off VM always moves offline)
    live: bool = True


class DiskOut(BaseModel):
    name: str
    size_gb: int
    datastore: str
    #: false while the task that attaches it is still running
    attached: bool


class DiskList(BaseModel):
    items: list[DiskOut]
    #: always null: a VM has few disks
    next: None = None


class UtilizationOut(BaseModel):
    """Averages over the period from the VM's monitoring history; null: no data."""

    period: str
    cpu_percent: float | None
    ram_bytes: float | None
    disk_read_bytes_s: float | None
    disk_written_bytes_s: float | None
    net_received_bytes_s: float | None
    net_sent_bytes_s: float | None


class SnapshotOut(BaseModel):
    id: int
    name: str
    #: user, daily, weekly, monthly, yearly or maintenance
    type: str
    taken_at: Time


class SnapshotList(BaseModel):
    items: list[SnapshotOut]
    #: always null: a VM has few snapshots
    next: None = None


class VncCreate(Body):
    #: how long the console stays open
    duration_s: int = Field(default=C.VNC_ACCESS_DURATION_S, ge=1, le=C.VNC_ACCESS_MAX_DURATION_S)


class VncOut(BaseModel):
    """Where to open the console; the password is shown this once and stored nowhere."""

    vm_id: int
    vnc_ip: str
    port: int
    token: str
    password: str | None
    expires: Time


class VMUserOut(BaseModel):
    username: str
    name: str
    organisation: str
    owner: bool


class VMUserList(BaseModel):
    items: list[VMUserOut]
    #: always null: the owner and those the VM is shared with
    next: None = None


class VMUserAdd(Body):
    username: Name


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
    request_time: Time


class RequestList(BaseModel):
    items: list[RequestOut]
    #: the ``before`` that gives the next (older) page; null on the last one
    next: int | None


class RequestEdit(Body):
    """Only what is given changes; an approver who did not ask changes only the sizes."""

    ram_mb: RamMB | None = None
    vcpus: Vcpus | None = None
    extra_disk_gb: DiskGB | None = None
    #: the size of the disk an attach-disk request asks for
    disk_gb: DiskGB | None = None
    clone_count: int | None = Field(default=None, ge=1, le=C.CLONE_COUNT_MAX)
    public_ip: bool | None = None
    security_domain: Name | None = None
    purpose: Text | None = None


class Reminded(BaseModel):
    request_id: int
    #: whom the request waits for (they were mailed)
    reminded: str


class Reject(Body):
    reason: Text = Field(
        min_length=1,
        pattern=r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$",
    )


class TaskOut(BaseModel):
    """Poll it until ``ended``: ``status`` and ``message`` say how it went (a task keeps
    no finer progress than its status, attempts and events)."""

    id: int
    type: str
    status: str
    #: the task will not run again by itself (success, failed, ignore, partial_success)
    ended: bool
    vm_id: int | None
    message: str | None
    created_at: Time
    started_at: Time | None
    finished_at: Time | None
    attempts: int
    parameters: dict[str, Any]


class TaskList(BaseModel):
    items: list[TaskOut]
    #: the ``before`` that gives the next (older) page; null on the last one
    next: int | None


class TaskEventOut(BaseModel):
    """One attempt of a task (or its retry or ignore)."""

    id: int
    status: str
    message: str | None
    worker: str | None
    start_time: Time
    end_time: Time | None


class TaskEventList(BaseModel):
    items: list[TaskEventOut]
    #: always null: a task has few events
    next: None = None


class Accepted(BaseModel):
    """Work was queued: poll ``Location`` (the task) until it ends."""

    task_id: int


class HostOut(BaseModel):
    id: int
    name: str
    address: str
    #: down, up or maintenance
    status: str
    type: str
    category: str | None
    cpus: int
    ram_gb: int
    disk_gb: int
    #: what the VMs placed on the host reserve
    ram_used_mb: int
    vcpus_used: int


class HostList(BaseModel):
    items: list[HostOut]
    #: always null: every host, by name
    next: None = None


class AuditEntryOut(BaseModel):
    id: int
    at: Time
    #: who acted
    actor: str
    function: str
    action: str
    target_type: str | None
    #: null in a refusal the caller may not see the object of
    target_id: int | None
    target_name: str | None
    detail: str | None
    outcome: str


class AuditList(BaseModel):
    items: list[AuditEntryOut]
    #: the ``before`` that gives the next (older) page; null on the last one
    next: int | None


class TokenCreate(Body):
    name: str = Field(default="api", pattern=f"^{C.API_TOKEN_NAME_RE}$")
    expires_days: int | None = Field(default=None, ge=1, le=C.API_TOKEN_DAYS_MAX)
    #: whose token (admins); default: the caller's own
    username: Name | None = None


class TokenOut(BaseModel):
    id: int
    username: str
    name: str
    prefix: str
    created: Time
    expires: Time | None
    last_used: Time | None
    revoked: Time | None
    active: bool


class NewTokenOut(TokenOut):
    #: the token itself, shown this once
    token: str


class TokenList(BaseModel):
    items: list[TokenOut]
    #: the ``after`` that gives the next page; null on the last one
    next: int | None
