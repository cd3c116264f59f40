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
    ram_mb: Literal[C.ALLOWED_RAM_MB] = 256  # type: ignore[valid-type]
    vcpus: Literal[C.ALLOWED_VCPUS] = 1  # type: ignore[valid-type]
    security_domain: Name | None = None
    public_ip: bool = False
    #: 0: none; else the size of an extra disk
    extra_disk_gb: int = Field(default=0, ge=0, le=C.EXTRA_DISK_GB_RANGE[1])
    #: the faculty member who vouches for a student's request
    approver: Name | None = None
    collaborators: list[Name] = Field(default_factory=list, max_length=50)
    purpose: Text | None = None


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
    #: always null: the list is the newest requests, bounded
    next: None = None


class Reject(Body):
    reason: Text = Field(
        min_length=1,
        pattern=r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$",
    )


class TaskOut(BaseModel):
    id: int
    type: str
    status: str
    vm_id: int | None
    message: str | None
    created_at: Time
    started_at: Time | None
    finished_at: Time | None
    attempts: int
    parameters: dict[str, Any]


class TaskList(BaseModel):
    items: list[TaskOut]
    #: always null: the list is the newest tasks, bounded by ``limit``
    next: None = None


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
    #: always null: the newest entries, bounded by ``limit``
    next: None = None


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
    next: None = None


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


class UtilizationOut(BaseModel):
    """Averages over the period from the recorded history; null: no data."""

    id: int
    name: str
    period: str
    #: percent
    cpu: float | None
    #: bytes
    ram: float | None
    #: bytes/s
    disk_read: float | None
    disk_write: float | None
    net_received: float | None
    net_sent: float | None


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
    next: None = None


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
    next: None = None


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
    next: None = None


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
    name: str
    tag: int
    network: str
    total: int
    used: int
    free: int


class PoolUsageOut(BaseModel):
    vlans: list[VlanUsageOut]
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
    #: always null: every account the caller may see
    next: None = None


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
    next: None = None


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
