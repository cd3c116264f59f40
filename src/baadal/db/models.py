"""The state: every table of the original Baadal (upstream-facts.md section 1), typed.

Differences from upstream, and why:
- Address claims are protected by unique constraints (vm_data.private_ip_id, public_ip_id,
  (host_id, vnc_port); host.host_ip_id, public_ip_id), so two allocators can never hand
  out the same address; upstream picked at random and recorded after install. VNC ports
  are unique per host, not cloud-wide: the console listens at its host's address.
- ``list:reference`` columns became association tables (security_domain_org,
  template_owner, request_collaborator).
- task_queue keeps its rows after success (the history users see) and carries the lease
  columns the worker engine needs; vm_id is a column so per-VM ordering is a query.
- the user table is ``users`` ("user" is reserved in PostgreSQL).
- hosts carry how to reach them (libvirt URI, SSH user/port/key, MAC for wake-on-LAN).
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    event,
    false,
    text,
    update,
)
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    Session,
    attributes,
    mapped_column,
    relationship,
)

from baadal import constants as C
from baadal.timeutil import utcnow

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {dict[str, Any]: JSON, datetime: DateTime()}


class Constant(Base):
    """Key/value settings kept in the database (the seed's get_constant/update_constant)."""

    __tablename__ = "constants"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    value: Mapped[str] = mapped_column(String(255))


class Organisation(Base):
    __tablename__ = "organisation"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    details: Mapped[str | None] = mapped_column(String(255))
    public_ip: Mapped[str | None] = mapped_column(String(15))
    admin_mailid: Mapped[str | None] = mapped_column(String(50))
    #: people may register themselves into it (an orgadmin then approves them)
    allows_registration: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=false()
    )


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    first_name: Mapped[str] = mapped_column(String(128), default="")
    last_name: Mapped[str] = mapped_column(String(128), default="")
    email: Mapped[str | None] = mapped_column(String(128), unique=True)
    username: Mapped[str] = mapped_column(String(128), unique=True)
    #: argon2 hash; empty for accounts that log in through LDAP only
    password: Mapped[str] = mapped_column(String(512), default="")
    organisation_id: Mapped[int | None] = mapped_column(ForeignKey("organisation.id"))
    block_user: Mapped[bool] = mapped_column(Boolean, default=False)
    #: mails when a task of one of their VMs ends (``user set-mail``); request mails,
    #: idle-VM warnings and account mails are sent whatever this says
    mail_subscribed: Mapped[bool] = mapped_column(Boolean, default=True)
    #: '' active, 'pending' awaiting approval, 'disable'
    registration_key: Mapped[str] = mapped_column(String(512), default="")
    reset_password_key: Mapped[str] = mapped_column(String(512), default="")
    registration_id: Mapped[str] = mapped_column(String(512), default="")

    organisation: Mapped[Organisation | None] = relationship()
    groups: Mapped[list[UserGroup]] = relationship(secondary="user_membership")


class UserGroup(Base):
    __tablename__ = "user_group"
    id: Mapped[int] = mapped_column(primary_key=True)
    role: Mapped[str] = mapped_column(String(100), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")


class UserMembership(Base):
    __tablename__ = "user_membership"
    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    group_id: Mapped[int] = mapped_column(
        ForeignKey("user_group.id", ondelete="CASCADE"), primary_key=True
    )


class Vlan(Base):
    __tablename__ = "vlan"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(30), unique=True)
    vlan_tag: Mapped[int] = mapped_column(Integer, unique=True)
    #: network of the VLAN in CIDR form, e.g. 10.0.1.0/24
    vlan_addr: Mapped[str] = mapped_column(String(18))


class SecurityDomain(Base):
    __tablename__ = "security_domain"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(30), unique=True)
    vlan_id: Mapped[int] = mapped_column(ForeignKey("vlan.id"), unique=True)
    visible_to_all: Mapped[bool] = mapped_column(Boolean, default=True)

    vlan: Mapped[Vlan] = relationship()
    organisations: Mapped[list[Organisation]] = relationship(secondary="security_domain_org")


class SecurityDomainOrg(Base):
    __tablename__ = "security_domain_org"
    security_domain_id: Mapped[int] = mapped_column(
        ForeignKey("security_domain.id", ondelete="CASCADE"), primary_key=True
    )
    organisation_id: Mapped[int] = mapped_column(
        ForeignKey("organisation.id", ondelete="CASCADE"), primary_key=True
    )


class PublicIpPool(Base):
    __tablename__ = "public_ip_pool"
    id: Mapped[int] = mapped_column(primary_key=True)
    public_ip: Mapped[str] = mapped_column(String(15), unique=True)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)


class PrivateIpPool(Base):
    __tablename__ = "private_ip_pool"
    id: Mapped[int] = mapped_column(primary_key=True)
    private_ip: Mapped[str] = mapped_column(String(15), unique=True)
    mac_addr: Mapped[str | None] = mapped_column(String(20), unique=True)
    vlan_id: Mapped[int] = mapped_column(ForeignKey("vlan.id"), index=True)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)

    vlan: Mapped[Vlan] = relationship()


class Host(Base):
    __tablename__ = "host"
    id: Mapped[int] = mapped_column(primary_key=True)
    host_name: Mapped[str] = mapped_column(String(30), unique=True)
    #: the address the controller uses to reach the host (ping, SSH, libvirt)
    address: Mapped[str] = mapped_column(String(255))
    host_ip_id: Mapped[int | None] = mapped_column(ForeignKey("private_ip_pool.id"), unique=True)
    public_ip_id: Mapped[int | None] = mapped_column(ForeignKey("public_ip_pool.id"), unique=True)
    HDD: Mapped[int] = mapped_column(Integer, default=0)
    CPUs: Mapped[int] = mapped_column(Integer)
    RAM: Mapped[int] = mapped_column(Integer, default=0)  # GB
    category: Mapped[str | None] = mapped_column(String(50))
    status: Mapped[int] = mapped_column(Integer, default=C.HostStatus.DOWN)
    slot_number: Mapped[int | None] = mapped_column(Integer)
    rack_number: Mapped[int | None] = mapped_column(Integer)
    extra: Mapped[str | None] = mapped_column(String(50))
    host_type: Mapped[str] = mapped_column(String(20), default=C.HostType.PHYSICAL)
    libvirt_uri: Mapped[str] = mapped_column(String(255))
    ssh_user: Mapped[str] = mapped_column(String(64), default="root")
    ssh_port: Mapped[int] = mapped_column(Integer, default=22)
    #: a path to the private key file (never the key itself)
    ssh_key_ref: Mapped[str | None] = mapped_column(String(255))
    mac_addr: Mapped[str | None] = mapped_column(String(20))
    #: the host's IPMI BMC; when set (and [power] ipmi_user), power goes through IPMI
    bmc_address: Mapped[str | None] = mapped_column(String(255))
    #: RAM (MB) and vCPUs reserved by the VMs placed on this host; kept by
    #: :func:`_keep_host_usage` so placement is one indexed query, not an aggregate
    ram_used_mb: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    vcpus_used: Mapped[int] = mapped_column(Integer, default=0, server_default="0")

    host_ip: Mapped[PrivateIpPool | None] = relationship(foreign_keys=[host_ip_id])
    public_ip: Mapped[PublicIpPool | None] = relationship(foreign_keys=[public_ip_id])


class Datastore(Base):
    __tablename__ = "datastore"
    id: Mapped[int] = mapped_column(primary_key=True)
    ds_name: Mapped[str] = mapped_column(String(30), unique=True)
    ds_ip: Mapped[str | None] = mapped_column(String(15))
    capacity: Mapped[int] = mapped_column(Integer)  # GB
    username: Mapped[str] = mapped_column(String(255), default="")
    #: a reference to a secret (file path), never the password itself
    password_ref: Mapped[str | None] = mapped_column(String(255))
    path: Mapped[str] = mapped_column(Text)  # export on the filer
    used: Mapped[int] = mapped_column(Integer, default=0)  # GB
    system_mount_point: Mapped[str] = mapped_column(String(255))


class Template(Base):
    __tablename__ = "template"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(30), unique=True)
    os: Mapped[str] = mapped_column(String(20), default="Linux")
    os_name: Mapped[str] = mapped_column(String(20), default="Others")
    os_version: Mapped[str] = mapped_column(String(50))
    os_type: Mapped[str] = mapped_column(String(20), default="Server")
    arch: Mapped[str] = mapped_column(String(10), default="amd64")
    hdd: Mapped[int] = mapped_column(Integer)  # GB
    hdfile: Mapped[str] = mapped_column(String(255))  # relative to the templates dir
    type: Mapped[str] = mapped_column(String(10), default=C.TemplateDiskType.QCOW2)
    tag: Mapped[str | None] = mapped_column(String(50))
    datastore_id: Mapped[int] = mapped_column(ForeignKey("datastore.id"))
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    #: direct kernel boot (the tiny guest): kernel, initrd and cmdline, relative paths
    boot_kernel: Mapped[str | None] = mapped_column(String(255))
    boot_initrd: Mapped[str | None] = mapped_column(String(255))
    boot_cmdline: Mapped[str | None] = mapped_column(String(255))

    datastore: Mapped[Datastore] = relationship()
    owners: Mapped[list[User]] = relationship(secondary="template_owner")


class TemplateOwner(Base):
    """Owners of a private (saved) template; no rows = a public template."""

    __tablename__ = "template_owner"
    template_id: Mapped[int] = mapped_column(
        ForeignKey("template.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )


class VM(Base):
    __tablename__ = "vm_data"
    id: Mapped[int] = mapped_column(primary_key=True)
    #: indexed: the CLI and the portal find a VM by its name (a scan of 25,000 rows: 2 ms)
    vm_name: Mapped[str] = mapped_column(String(100), index=True)
    #: <org>~<owner username>~<vm_name> (older VMs: joined by "_"): the libvirt domain name
    vm_identity: Mapped[str] = mapped_column(String(100), unique=True)
    host_id: Mapped[int | None] = mapped_column(ForeignKey("host.id"), index=True)
    RAM: Mapped[int] = mapped_column(Integer)  # MB
    HDD: Mapped[int] = mapped_column(Integer, default=0)  # GB
    extra_HDD: Mapped[int] = mapped_column(Integer, default=0)
    vCPU: Mapped[int] = mapped_column(Integer)
    template_id: Mapped[int | None] = mapped_column(ForeignKey("template.id"))
    requester_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    private_ip_id: Mapped[int | None] = mapped_column(ForeignKey("private_ip_pool.id"), unique=True)
    public_ip_id: Mapped[int | None] = mapped_column(ForeignKey("public_ip_pool.id"), unique=True)
    #: the request asked for a public IP (upstream stored -1 for this)
    public_ip_wanted: Mapped[bool] = mapped_column(Boolean, default=False)
    #: unique per host (with host_id): the console listens at the host's address
    vnc_port: Mapped[int | None] = mapped_column(Integer)
    datastore_id: Mapped[int | None] = mapped_column(ForeignKey("datastore.id"))
    purpose: Mapped[str | None] = mapped_column(String(512))
    expiry_date: Mapped[date | None] = mapped_column(Date)
    start_time: Mapped[datetime] = mapped_column(default=utcnow)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("vm_data.id", ondelete="SET NULL"))
    locked: Mapped[bool] = mapped_column(Boolean, default=False)
    security_domain_id: Mapped[int | None] = mapped_column(ForeignKey("security_domain.id"))
    status: Mapped[int] = mapped_column(Integer, default=C.VMStatus.IN_QUEUE)
    snapshot_flag: Mapped[int] = mapped_column(Integer, default=0)
    affinity_flag: Mapped[int] = mapped_column(Integer, default=0)
    saved_template_id: Mapped[int | None] = mapped_column(ForeignKey("template.id"))
    delete_warning_date: Mapped[datetime | None]
    shutdown_warning_date: Mapped[datetime | None]

    host: Mapped[Host | None] = relationship()
    datastore: Mapped[Datastore | None] = relationship()
    template: Mapped[Template | None] = relationship(foreign_keys=[template_id])
    private_ip: Mapped[PrivateIpPool | None] = relationship()
    public_ip: Mapped[PublicIpPool | None] = relationship()
    security_domain: Mapped[SecurityDomain | None] = relationship()

    __table_args__ = (UniqueConstraint("host_id", "vnc_port", name="uq_vm_data_host_vnc_port"),)


#: the SQL of "still pending" for the partial unique indexes on request_queue
_PENDING = f"status IN ({', '.join(str(int(s)) for s in C.REQUEST_PENDING)})"


def _unique_while_pending(name: str, where: str, *columns: str) -> Index:
    clause = text(f"{where} AND {_PENDING}")
    return Index(name, *columns, unique=True, sqlite_where=clause, postgresql_where=clause)


class RequestQueue(Base):
    __tablename__ = "request_queue"
    id: Mapped[int] = mapped_column(primary_key=True)
    vm_name: Mapped[str] = mapped_column(String(100))
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("vm_data.id", ondelete="CASCADE"))
    request_type: Mapped[str] = mapped_column(String(30))
    RAM: Mapped[int | None] = mapped_column(Integer)
    HDD: Mapped[int | None] = mapped_column(Integer)
    extra_HDD: Mapped[int] = mapped_column(Integer, default=0)
    attach_disk: Mapped[int | None] = mapped_column(Integer)
    vCPU: Mapped[int | None] = mapped_column(Integer)
    template_id: Mapped[int | None] = mapped_column(ForeignKey("template.id"))
    public_ip: Mapped[bool] = mapped_column(Boolean, default=False)
    security_domain_id: Mapped[int | None] = mapped_column(ForeignKey("security_domain.id"))
    requester_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    clone_count: Mapped[int | None] = mapped_column(Integer)
    #: clone requests: standalone copies instead of overlays on the parent's disks
    clone_full: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    purpose: Mapped[str | None] = mapped_column(String(512))
    status: Mapped[int] = mapped_column(Integer, default=C.RequestStatus.REQUESTED)
    request_time: Mapped[datetime] = mapped_column(default=utcnow)
    expiry_date: Mapped[date | None] = mapped_column(Date)
    #: the faculty member who verifies it (the owner of a student's VM)
    approver_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    #: edit requests: True attach a public IP, False detach it, None leave it
    public_ip_change: Mapped[bool | None] = mapped_column(Boolean)
    reject_reason: Mapped[str | None] = mapped_column(String(512))
    #: who moved it last (verified, approved, rejected, withdrew) and when
    decided_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    decided_at: Mapped[datetime | None] = mapped_column(DateTime)
    #: the task it was queued as (its status shows through: a failed task = FAILED)
    task_id: Mapped[int | None] = mapped_column(Integer)
    #: the VM a create request made (a plain id: the request outlives the VM)
    vm_id: Mapped[int | None] = mapped_column(Integer)
    last_reminded_at: Mapped[datetime | None] = mapped_column(DateTime)

    collaborators: Mapped[list[User]] = relationship(secondary="request_collaborator")

    # one pending request of a kind per VM, and one per new VM name of an owner, however
    # many are submitted at once (the service's check sees only committed rows)
    __table_args__ = (
        _unique_while_pending("uq_request_pending_change", "parent_id IS NOT NULL",
                              "parent_id", "request_type"),
        _unique_while_pending("uq_request_pending_create", "parent_id IS NULL",
                              "owner_id", "vm_name"),
    )  # fmt: skip


class RequestCollaborator(Base):
    __tablename__ = "request_collaborator"
    request_id: Mapped[int] = mapped_column(
        ForeignKey("request_queue.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )


class Quota(Base):
    """Limits of one user or one organisation; a NULL limit is the settings' default
    (``[quota]``) and 0 is unlimited. The row is also what queueing locks: two approvals
    that spend the same owner's or organisation's last unit are serialised on it."""

    __tablename__ = "quota"
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), unique=True
    )
    organisation_id: Mapped[int | None] = mapped_column(
        ForeignKey("organisation.id", ondelete="CASCADE"), unique=True
    )
    vms: Mapped[int | None] = mapped_column(Integer)
    vcpus: Mapped[int | None] = mapped_column(Integer)
    ram_gb: Mapped[int | None] = mapped_column(Integer)
    disk_gb: Mapped[int | None] = mapped_column(Integer)
    public_ips: Mapped[int | None] = mapped_column(Integer)

    __table_args__ = (
        CheckConstraint("(user_id IS NULL) <> (organisation_id IS NULL)", name="quota_user_or_org"),
    )


class VMEventLog(Base):
    """Audit of VM attribute changes; kept after the VM is deleted (vm_id is not a FK)."""

    __tablename__ = "vm_event_log"
    id: Mapped[int] = mapped_column(primary_key=True)
    vm_id: Mapped[int] = mapped_column(Integer, index=True)
    vm_identity: Mapped[str] = mapped_column(String(100), default="")
    attribute: Mapped[str] = mapped_column(String(100))
    old_value: Mapped[str | None] = mapped_column(String(255))
    new_value: Mapped[str | None] = mapped_column(String(255))
    requester_id: Mapped[int | None] = mapped_column(Integer)
    timestamp: Mapped[datetime] = mapped_column(default=utcnow)


class HostEventLog(Base):
    """What the host sanity check saw change (status UP/DOWN, services), for admins."""

    __tablename__ = "host_event_log"
    id: Mapped[int] = mapped_column(primary_key=True)
    host_id: Mapped[int] = mapped_column(ForeignKey("host.id", ondelete="CASCADE"), index=True)
    attribute: Mapped[str] = mapped_column(String(100))
    old_value: Mapped[str | None] = mapped_column(String(255))
    new_value: Mapped[str | None] = mapped_column(String(255))
    #: why, in words (the failing check)
    message: Mapped[str | None] = mapped_column(Text)
    timestamp: Mapped[datetime] = mapped_column(default=utcnow)


class UserVMMap(Base):
    __tablename__ = "user_vm_map"
    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    vm_id: Mapped[int] = mapped_column(
        ForeignKey("vm_data.id", ondelete="CASCADE"), primary_key=True
    )


class HostAffinity(Base):
    __tablename__ = "host_affinity"
    vm_id: Mapped[int] = mapped_column(
        ForeignKey("vm_data.id", ondelete="CASCADE"), primary_key=True
    )
    affinity_host: Mapped[int] = mapped_column(
        ForeignKey("host.id", ondelete="CASCADE"), primary_key=True
    )


class AttachedDisk(Base):
    __tablename__ = "attached_disks"
    vm_id: Mapped[int] = mapped_column(
        ForeignKey("vm_data.id", ondelete="CASCADE"), primary_key=True
    )
    datastore_id: Mapped[int] = mapped_column(ForeignKey("datastore.id"), primary_key=True)
    attached_disk_name: Mapped[str] = mapped_column(String(100), primary_key=True)
    capacity: Mapped[int] = mapped_column(Integer)  # GB
    #: the 'Attach Disk' task that reserved it and has not recorded it yet (its
    #: compensation finds what a lost run left); None once the disk is the VM's
    task_id: Mapped[int | None] = mapped_column(Integer)


class Snapshot(Base):
    __tablename__ = "snapshot"
    id: Mapped[int] = mapped_column(primary_key=True)
    vm_id: Mapped[int] = mapped_column(ForeignKey("vm_data.id", ondelete="CASCADE"), index=True)
    datastore_id: Mapped[int] = mapped_column(ForeignKey("datastore.id"))
    snapshot_name: Mapped[str] = mapped_column(String(50))
    type: Mapped[int] = mapped_column(Integer)
    path: Mapped[str | None] = mapped_column(String(255))
    timestamp: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (UniqueConstraint("vm_id", "snapshot_name"),)


class Task(Base):
    """A unit of work: the queue row workers claim, and what users see as their task."""

    __tablename__ = "task_queue"
    id: Mapped[int] = mapped_column(primary_key=True)
    task_type: Mapped[str] = mapped_column(String(40))
    requester_id: Mapped[int | None] = mapped_column(Integer)
    vm_id: Mapped[int | None] = mapped_column(Integer)
    parameters: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    priority: Mapped[int] = mapped_column(Integer, default=C.TaskPriority.NORMAL)
    status: Mapped[int] = mapped_column(Integer, default=C.TaskStatus.PENDING)
    message: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    #: not claimable before this time (retry back-off)
    run_after: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    #: every run, admin retries included (a re-run compensates first)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    #: runs whose worker was lost (lease expired) since it was queued or an admin last
    #: retried it: the worker gives up when they reach ``[worker] max_attempts``
    lost_attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    lease_owner: Mapped[str | None] = mapped_column(String(100))
    lease_expires_at: Mapped[datetime | None]
    #: periodic job that produced this task, and its period slot (exactly-once key)
    periodic_key: Mapped[str | None] = mapped_column(String(120), unique=True)

    __table_args__ = (
        Index("ix_task_queue_status_priority", "status", "priority", "id"),
        Index("ix_task_queue_vm_status", "vm_id", "status"),
    )


class TaskEvent(Base):
    """Durable history of every task state change (upstream task_queue_event)."""

    __tablename__ = "task_queue_event"
    id: Mapped[int] = mapped_column(primary_key=True)
    task_id: Mapped[int] = mapped_column(Integer, index=True)
    task_type: Mapped[str] = mapped_column(String(40))
    vm_id: Mapped[int | None] = mapped_column(Integer)
    vm_name: Mapped[str] = mapped_column(String(100), default="")
    requester_id: Mapped[int | None] = mapped_column(Integer)
    parameters: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[int] = mapped_column(Integer)
    message: Mapped[str | None] = mapped_column(Text)
    worker: Mapped[str | None] = mapped_column(String(100))
    start_time: Mapped[datetime] = mapped_column(default=utcnow)
    attention_time: Mapped[datetime | None]
    end_time: Mapped[datetime | None]


class PeriodicJob(Base):
    """One row per periodic job; advancing next_run_at is the exactly-once claim."""

    __tablename__ = "periodic_job"
    name: Mapped[str] = mapped_column(String(60), primary_key=True)
    task_type: Mapped[str] = mapped_column(String(40))
    interval_s: Mapped[float] = mapped_column(Float)
    next_run_at: Mapped[datetime]
    last_run_at: Mapped[datetime | None]


class VncAccess(Base):
    __tablename__ = "vnc_access"
    id: Mapped[int] = mapped_column(primary_key=True)
    vm_id: Mapped[int] = mapped_column(ForeignKey("vm_data.id", ondelete="CASCADE"), index=True)
    token: Mapped[str] = mapped_column(String(255))
    host_id: Mapped[int] = mapped_column(ForeignKey("host.id"))
    vnc_source_port: Mapped[int] = mapped_column(Integer)
    vnc_destination_port: Mapped[int] = mapped_column(Integer, default=-1)
    duration: Mapped[int] = mapped_column(Integer, default=C.VNC_ACCESS_DURATION_S)
    status: Mapped[str] = mapped_column(String(15), default="inactive")
    time_requested: Mapped[datetime] = mapped_column(default=utcnow)
    expiry_time: Mapped[datetime]


class ConsoleToken(Base):
    """A one-time ticket to a VM's console in the browser: it opens one connection
    through websockify, for the user it was made for, before it expires. Only its SHA-256
    is kept (32 random bytes: one indexed lookup, nothing to brute-force)."""

    __tablename__ = "console_token"
    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    vm_id: Mapped[int] = mapped_column(ForeignKey("vm_data.id", ondelete="CASCADE"), index=True)
    created: Mapped[datetime] = mapped_column(default=utcnow)
    expires: Mapped[datetime]
    #: when its one connection was opened; set once, by the connection that won it
    used_at: Mapped[datetime | None]


class LoginThrottle(Base):
    """Failed logins of one username or one source (``user:<name>``, ``source:<address>``),
    in the database so every process (web server, CLI) counts the same failures."""

    __tablename__ = "login_throttle"
    key: Mapped[str] = mapped_column(String(300), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    #: the first failure of the window being counted
    first_failure: Mapped[datetime]
    #: no login of this key is tried before this time
    locked_until: Mapped[datetime | None]


class AuditLog(Base):
    """Who changed what, on which object, when, and how it went (every guarded service
    call that changes something, and every refused one). No foreign keys: an entry
    outlives its actor's account and its object (a deleted VM)."""

    __tablename__ = "audit_log"
    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    actor_id: Mapped[int] = mapped_column(Integer)
    actor_name: Mapped[str] = mapped_column(String(128))
    #: the service function ("vms.operate") and the action it performs ("VM_OPERATE")
    function: Mapped[str] = mapped_column(String(100))
    action: Mapped[str] = mapped_column(String(40))
    #: the object: its kind ("vm", "user", ...), id and name at the time
    target_type: Mapped[str | None] = mapped_column(String(30))
    target_id: Mapped[int | None] = mapped_column(Integer)
    target_name: Mapped[str | None] = mapped_column(String(255))
    #: the VM concerned (the target, or the VM of a target task), for `audit --vm`
    vm_id: Mapped[int | None] = mapped_column(Integer, index=True)
    #: what else says what happened (the operation of ``vms.operate``, a new name, ...)
    detail: Mapped[str | None] = mapped_column(String(255))
    #: "ok", "refused: <why>" or "failed: <why>"
    outcome: Mapped[str] = mapped_column(Text)

    #: every filter of `baadal audit` is one of these, newest first
    __table_args__ = (
        Index("ix_audit_log_actor_id_id", "actor_id", "id"),
        Index("ix_audit_log_actor_name_id", "actor_name", "id"),
        Index("ix_audit_log_target", "target_type", "target_name"),
    )


class OutboxMail(Base):
    """A mail waiting to be sent, sent, or given up on: written in the transaction of the
    change it tells about (a rolled-back change sends nothing), sent later by the
    ``mail_outbox`` job (an SMTP outage loses nothing). One row per recipient."""

    __tablename__ = "outbox"
    id: Mapped[int] = mapped_column(primary_key=True)
    #: the template it was made from (request_made, task_done, ...)
    kind: Mapped[str] = mapped_column(String(40))
    #: the account it is for (not a foreign key: the mail outlives the account)
    user_id: Mapped[int | None] = mapped_column(Integer)
    recipient: Mapped[str] = mapped_column(String(C.MAIL_ADDRESS_MAX))
    subject: Mapped[str] = mapped_column(String(C.MAIL_SUBJECT_MAX))
    body: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(10), default=C.MailStatus.PENDING)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    #: not tried before this time: the back-off after a failure, or the lease of a run
    #: that is sending it
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    sent_at: Mapped[datetime | None]

    __table_args__ = (Index("ix_outbox_status_next_attempt_at", "status", "next_attempt_at"),)


def _committed(vm: VM, attr: str) -> Any:
    history = attributes.get_history(vm, attr)
    if history.deleted:
        return history.deleted[0]
    return history.unchanged[0] if history.unchanged else None


@event.listens_for(Session, "before_flush")
def _keep_host_usage(session: Session, _context: Any, _instances: Any) -> None:
    """Keep host.ram_used_mb / vcpus_used equal to the sum over the VMs placed there.

    Every VM placed on a host reserves its RAM and vCPUs whatever its power state: a
    shut-off VM may be started at any moment and must fit. One listener sees every ORM
    change of a VM's host, RAM or vCPU, so no code path can forget the bookkeeping.
    """
    delta: dict[int, list[int]] = {}

    def add(host_id: int | None, ram: int | None, vcpu: int | None, sign: int) -> None:
        if host_id is not None:
            entry = delta.setdefault(host_id, [0, 0])
            entry[0] += sign * (ram or 0)
            entry[1] += sign * (vcpu or 0)

    for obj in session.new:
        if isinstance(obj, VM):
            add(obj.host_id, obj.RAM, obj.vCPU, +1)
    for obj in session.dirty:
        if isinstance(obj, VM) and session.is_modified(obj):
            add(_committed(obj, "host_id"), _committed(obj, "RAM"), _committed(obj, "vCPU"), -1)
            add(obj.host_id, obj.RAM, obj.vCPU, +1)
    for obj in session.deleted:
        if isinstance(obj, VM):
            add(_committed(obj, "host_id"), _committed(obj, "RAM"), _committed(obj, "vCPU"), -1)
    conn = session.connection()
    for host_id, (ram, vcpu) in delta.items():
        if ram or vcpu:
            conn.execute(
                update(Host)
                .where(Host.id == host_id)
                .values(ram_used_mb=Host.ram_used_mb + ram, vcpus_used=Host.vcpus_used + vcpu)
            )


class ApiToken(Base):
    """A personal API token (``Authorization: Bearer``). Only its SHA-256 is kept: the
    token is 32 random bytes, so a fast hash cannot be brute-forced and a lookup by hash
    is one indexed query per request (a slow password hash would cost every call)."""

    __tablename__ = "api_token"
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    #: the first characters of the token, to tell tokens apart in a list
    prefix: Mapped[str] = mapped_column(String(16))
    created: Mapped[datetime] = mapped_column(default=utcnow)
    expires: Mapped[datetime | None]
    last_used: Mapped[datetime | None]
    revoked: Mapped[datetime | None]


class WebSession(Base):
    """A portal login. The cookie carries a random id; only its SHA-256 is kept, so the
    table cannot be used to log in. A row per login lets logout, blocking a user and a
    password change end sessions at once."""

    __tablename__ = "web_session"
    #: SHA-256 (hex) of the session id in the cookie
    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    #: the session's CSRF token (every form and HTMX call shows it)
    csrf_secret: Mapped[str] = mapped_column(String(64))
    created: Mapped[datetime] = mapped_column(default=utcnow)
    expires: Mapped[datetime] = mapped_column(index=True)
    last_seen: Mapped[datetime] = mapped_column(default=utcnow)
