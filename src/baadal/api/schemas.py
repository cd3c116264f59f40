"""The bodies the API takes and gives (its OpenAPI schemas)."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal, Protocol

from fastapi import Query
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from baadal import constants as C
from baadal.services import vms
from baadal.services.measurements import GRAPH_TYPES
from baadal.services.vms import VMSummary

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
    """A VM as lists show it (documents :func:`vm_out`, which builds it)."""

    id: int
    name: str
    #: the status's name in lower case (``running``, ``shutdown``, ...)
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


#: a VM's fields in the API, each one of :class:`~baadal.services.vms.VMSummary`'s
VM_OUT_FIELDS = tuple(VMOut.model_fields)


class VMList(BaseModel):
    items: list[VMOut]
    #: the ``after`` that gives the next page; null on the last one
    next: int | None


def vm_out(vm: VMSummary) -> dict[str, Any]:
    """A VM as :class:`VMOut` says, straight from the service's row: the busiest reads
    skip validating values the database just gave (a page of 100 cost 0.3 ms in
    pydantic); ``test_vm_out_is_what_the_model_says`` holds the two together."""
    return vms.json_values(vm, VM_OUT_FIELDS)


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
    #: standalone copies of the VM's disks instead of overlays on them (linked clones)
    full: bool = False


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
    """Averages over the period from a VM's or host's monitoring history; null: no data."""

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
    #: clone requests: how many, and whether standalone copies (else linked)
    clone_count: int | None
    clone_full: bool
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
    #: the ``after`` that gives the next page; null on the last one
    next: int | None


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


# --- hosts (admins) --------------------------------------------------------------------

#: a name that may become a path or a libvirt name
SafeName = Annotated[str, Field(min_length=1, max_length=30, pattern=C.SAFE_NAME_PATTERN)]
#: free text on one line, at most 255 characters
Line = Annotated[str, Field(max_length=255, pattern=C.NO_CONTROL_PATTERN)]
#: a file on the controller (a key, a password file): an absolute path
ServerFile = Annotated[str, Field(min_length=2, max_length=255, pattern=r"^/[^\x00-\x1f\x7f]*$")]
IPV4_PATTERN = r"^[0-9]{1,3}(\.[0-9]{1,3}){3}$"
#: an IPv4 address
IPv4 = Annotated[str, Field(min_length=7, max_length=15, pattern=IPV4_PATTERN)]


class HostCreate(Body):
    """A host to register; it starts DOWN until the host sanity check sees it answer."""

    name: SafeName
    #: IPv4 address or DNS name
    address: str = Field(min_length=1, max_length=253, pattern=r"^[A-Za-z0-9][A-Za-z0-9.-]*$")
    cpus: int = Field(ge=C.HOST_CPUS_RANGE[0], le=C.HOST_CPUS_RANGE[1])
    ram_gb: int = Field(ge=C.HOST_RAM_GB_RANGE[0], le=C.HOST_RAM_GB_RANGE[1])
    hdd_gb: int = Field(default=0, ge=C.HOST_HDD_GB_RANGE[0], le=C.HOST_HDD_GB_RANGE[1])
    #: default: qemu+ssh to the address as the SSH user
    libvirt_uri: Line | None = None
    ssh_user: str = Field(
        default="root", min_length=1, max_length=32, pattern=r"^[a-z_][a-z0-9_-]*$"
    )
    ssh_port: int = Field(default=22, ge=C.PORT_RANGE[0], le=C.PORT_RANGE[1])
    #: the private key file on the controller
    ssh_key_ref: ServerFile | None = None
    #: for wake-on-LAN
    mac_addr: str | None = Field(default=None, pattern=r"^[0-9A-Fa-f]{2}([:-][0-9A-Fa-f]{2}){5}$")
    type: Literal[tuple(t.value for t in C.HostType)] = C.HostType.PHYSICAL.value  # type: ignore[valid-type]
    category: Line | None = None


class SkippedOut(BaseModel):
    #: the VM's name
    name: str
    reason: str


class QueuedOut(BaseModel):
    """Work was queued, one task per VM: poll each at ``/api/v1/tasks/{id}``."""

    task_ids: list[int]
    #: the VMs left alone, with why
    skipped: list[SkippedOut]


class HostResourcesOut(BaseModel):
    """What the host itself says it has (asked over SSH and libvirt now)."""

    id: int
    name: str
    cpus: int
    ram_gb: int
    disk_gb: int
    mac: str
    type: str


class HostEventOut(BaseModel):
    id: int
    #: what changed: status, libvirtd, ovs ...
    name: str
    old_value: str | None
    new_value: str | None
    message: str | None
    at: Time


class HostEventList(BaseModel):
    items: list[HostEventOut]
    #: always null: a host's events, oldest first
    next: None = None


# --- datastores, templates, security domains, pools ------------------------------------


class DatastoreOut(BaseModel):
    id: int
    name: str
    address: str | None
    path: str
    mount_point: str
    capacity_gb: int
    used_gb: int


class DatastoreList(BaseModel):
    items: list[DatastoreOut]
    #: the ``after`` that gives the next page; null on the last one
    next: int | None


class DatastoreCreate(Body):
    """A mounted datastore to register; its directories are laid out under it."""

    name: SafeName
    #: where it is mounted on the controller (it must exist)
    mount_point: ServerFile
    capacity_gb: int = Field(
        ge=C.DATASTORE_CAPACITY_GB_RANGE[0], le=C.DATASTORE_CAPACITY_GB_RANGE[1]
    )
    #: the export on the storage server; default: the mount point
    path: Line | None = None
    #: the storage server's address
    ds_ip: IPv4 | None = None
    username: Line = ""
    #: a file on the controller holding the password
    password_ref: ServerFile | None = None


class TemplateOut(BaseModel):
    id: int
    name: str
    os: str
    os_name: str
    os_version: str
    os_type: str
    arch: str
    hdd_gb: int
    #: the image, relative to the datastore's templates directory
    image: str
    disk_type: str
    tag: str | None
    datastore_id: int
    active: bool


class TemplateList(BaseModel):
    items: list[TemplateOut]
    #: the ``after`` that gives the next page; null on the last one
    next: int | None


class TemplateCreate(Body):
    """A template image already on a datastore (public: any organisation may use it)."""

    name: SafeName
    #: the datastore's name
    datastore: Name
    #: the image, relative to the datastore's templates directory
    image: str = Field(
        min_length=1, max_length=255, pattern=r"^[^/\x00-\x1f\x7f][^\x00-\x1f\x7f]*$"
    )
    os_version: str = Field(min_length=1, max_length=30, pattern=C.NO_CONTROL_PATTERN)
    hdd_gb: int = Field(ge=C.TEMPLATE_HDD_GB_RANGE[0], le=C.TEMPLATE_HDD_GB_RANGE[1])
    os: str = Field(default="Linux", max_length=30)
    os_name: str = Field(default="Others", max_length=30)
    os_type: str = Field(default="Server", max_length=30)
    arch: str = Field(default="amd64", max_length=30)
    disk_type: str = Field(default="QCOW2", max_length=30)
    tag: Line | None = None


class SecurityDomainOut(BaseModel):
    id: int
    name: str
    vlan: str
    vlan_tag: int
    network: str
    pool_size: int
    pool_used: int
    vms: int
    visible_to_all: bool


class SecurityDomainList(BaseModel):
    items: list[SecurityDomainOut]
    #: the ``after`` that gives the next page; null on the last one
    next: int | None


class SecurityDomainCreate(Body):
    """A domain with its own new VLAN and, with both ends given, a private pool."""

    name: SafeName
    vlan_tag: int = Field(ge=C.VLAN_TAG_RANGE[0], le=C.VLAN_TAG_RANGE[1])
    #: the VLAN's network, e.g. 10.1.2.0/24
    cidr: str = Field(min_length=9, max_length=18, pattern=r"^[0-9.]+/[0-9]{1,2}$")
    ip_from: IPv4 | None = None
    ip_to: IPv4 | None = None
    visible_to_all: bool = True


class VlanCreate(Body):
    name: SafeName
    tag: int = Field(ge=C.VLAN_TAG_RANGE[0], le=C.VLAN_TAG_RANGE[1])
    cidr: str = Field(min_length=9, max_length=18, pattern=r"^[0-9.]+/[0-9]{1,2}$")


class VlanOut(BaseModel):
    id: int
    name: str
    tag: int
    network: str


class AddressRange(Body):
    """Both ends included."""

    ip_from: IPv4
    ip_to: IPv4


class PrivateRange(AddressRange):
    #: the VLAN's name
    vlan: Name


class Counted(BaseModel):
    """How many addresses were added or removed."""

    count: int


class VlanUsageOut(BaseModel):
    id: int
    name: str
    tag: int
    network: str
    total: int
    used: int
    free: int


class VlanList(BaseModel):
    items: list[VlanUsageOut]
    #: the ``after`` that gives the next page; null on the last one
    next: int | None


class PoolUsageOut(BaseModel):
    """The public addresses and VNC ports (each VLAN's private ones: ``GET /vlans``)."""

    public_total: int
    public_used: int
    public_free: int
    vnc_first_port: int
    vnc_last_port: int
    vnc_used: int


# --- users, quotas, organisations --------------------------------------------------------


class AccountOut(BaseModel):
    id: int
    #: the user name
    name: str
    full_name: str
    email: str
    organisation: str
    roles: list[str]
    #: active, awaiting approval, disabled or blocked
    state: str


class AccountList(BaseModel):
    items: list[AccountOut]
    #: the ``after`` that gives the next page; null on the last one
    next: int | None


class Registration(Body):
    """Self-registration into an organisation that takes it; an orgadmin or admin then
    approves the account, which has only the user role."""

    username: str = Field(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    password: str = Field(min_length=1, max_length=1024)
    email: str | None = Field(default=None, max_length=254, pattern=r"^[^@\s]+@[^@\s]+$")
    first_name: str = Field(default="", max_length=64, pattern=C.NO_CONTROL_PATTERN)
    last_name: str = Field(default="", max_length=64, pattern=C.NO_CONTROL_PATTERN)
    #: one that takes self-registrations (or none)
    organisation: Name | None = None


class RolesSet(Body):
    """The account's roles from now on (user is always kept)."""

    roles: list[Literal[tuple(r.value for r in C.Role)]] = Field(max_length=8)  # type: ignore[valid-type]


class QuotaLineOut(BaseModel):
    #: vms, ram_gb, vcpus, disk_gb, public_ips ...
    name: str
    #: RAM in GB (a fraction), the rest as counted
    used: float
    #: 0: unlimited
    limit: int
    #: the limit is the account's own, not the settings' default
    override: bool


class QuotaOut(BaseModel):
    whose: str
    #: one line per limited thing
    lines: list[QuotaLineOut]


class QuotaSet(Body):
    """New limits (0: unlimited) of one user or one organisation; the others stay."""

    user: Name | None = None
    org: Name | None = None
    limits: dict[
        Literal[tuple(i.value for i in C.QuotaItem)],  # type: ignore[valid-type]
        Annotated[int, Field(ge=0, le=C.QUOTA_MAX)],
    ] = Field(min_length=1)


class OrganisationOut(BaseModel):
    id: int
    name: str
    details: str
    allows_registration: bool
    #: security domains given to it (besides those visible to all)
    security_domains: list[str]
    orgadmins: list[str]
    users: int


class OrganisationList(BaseModel):
    items: list[OrganisationOut]
    #: the ``after`` that gives the next page; null on the last one
    next: int | None


class OrganisationCreate(Body):
    name: SafeName
    details: Line = ""
    #: whether people may register themselves into it
    registration: bool = False


class OrganisationChange(Body):
    """What changes (at least one): its name, registration, description, domains."""

    name: SafeName | None = None
    registration: bool | None = None
    details: Line | None = None
    add_security_domains: list[Name] = Field(default_factory=list, max_length=50)
    remove_security_domains: list[Name] = Field(default_factory=list, max_length=50)


# --- the cloud ------------------------------------------------------------------------------


class CloudLine(BaseModel):
    name: str
    state: str


class CloudStatusOut(BaseModel):
    #: up, down, down-progress or up-progress
    status: str
    #: hosts, VMs, datastores, templates, pools and tasks, counted
    lines: list[CloudLine]


class CloudFinish(Body):
    """Record the end of a shutdown (the cloud is down) or of a bootup (it is up), once
    their tasks ended."""

    after: Literal["shutdown", "bootup"]


# --- graphs and utilization (VMs and hosts) ----------------------------------------------

GraphName = StrEnum("GraphName", {name: name for name in GRAPH_TYPES})
Period = StrEnum("Period", {name: name for name in C.GRAPH_PERIODS})
PeriodQuery = Annotated[Period, Query(description="how far back: the last hour, day, ...")]
BINARY = {"schema": {"type": "string", "format": "binary"}}
PNG_TYPE = "image/png"
PNG_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {"content": {PNG_TYPE: BINARY}, "description": "the graph, drawn afresh from the history"}
}


class Averages(Protocol):
    """What the monitoring service's averages offer (the seed's short names)."""

    cpu: float | None
    ram: float | None
    dr: float | None
    dw: float | None
    rx: float | None
    tx: float | None


def utilization_out(period: Period, data: Averages) -> UtilizationOut:
    return UtilizationOut(
        period=period.value,
        cpu_percent=data.cpu,
        ram_bytes=data.ram,
        disk_read_bytes_s=data.dr,
        disk_written_bytes_s=data.dw,
        net_received_bytes_s=data.rx,
        net_sent_bytes_s=data.tx,
    )


#: how many items a list's page holds at most
LimitQuery = Annotated[int, Query(ge=1, le=C.API_PAGE_MAX, description="the page's size")]
