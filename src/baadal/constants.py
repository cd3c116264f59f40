"""Every status, role, type name and limit Baadal uses, in one place.

Numeric values are the original Baadal's (see upstream-facts.md section 2) so task results,
VM states and host states read the same as they always did.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum


class TaskStatus(IntEnum):
    PENDING = 1
    PROCESSING = 2
    SUCCESS = 3
    FAILED = 4
    RETRY = 5
    IGNORE = 6
    PARTIAL_SUCCESS = 7


# The seed's names for the two results every handler returns.
TASK_QUEUE_STATUS_SUCCESS = TaskStatus.SUCCESS
TASK_QUEUE_STATUS_FAILED = TaskStatus.FAILED
#: how the seed began a failed task's message (the error follows)
TASK_FAILED_PREFIX = "Task Status: FAILED Error: "

#: statuses a worker may pick up
TASK_RUNNABLE = (TaskStatus.PENDING, TaskStatus.RETRY)
#: statuses of a task that has not ended yet (blocks later tasks of the same VM)
TASK_UNFINISHED = (TaskStatus.PENDING, TaskStatus.RETRY, TaskStatus.PROCESSING)
#: statuses that end a task
TASK_FINAL = (
    TaskStatus.SUCCESS,
    TaskStatus.FAILED,
    TaskStatus.IGNORE,
    TaskStatus.PARTIAL_SUCCESS,
)
#: how a handler's run may end: a final status, or RETRY (the run was lost: its
#: database went away; the task runs again)
TASK_ENDS_OF_RUN = (*TASK_FINAL, TaskStatus.RETRY)


class TaskPriority(IntEnum):
    LOW = 0
    NORMAL = 1
    HIGH = 2
    URGENT = 3


class TaskType(StrEnum):
    """The upstream task type names (stored verbatim in task_queue.task_type)."""

    CREATE_VM = "Create VM"
    START_VM = "Start VM"
    STOP_VM = "Stop VM"
    SUSPEND_VM = "Suspend VM"
    RESUME_VM = "Resume VM"
    DELETE_VM = "Delete VM"
    DESTROY_VM = "Destroy VM"
    DELETE_SNAPSHOT = "Delete Snapshot"
    REVERT_TO_SNAPSHOT = "Revert to Snapshot"
    EDIT_VM_CONFIG = "Edit VM Config"
    SNAPSHOT_VM = "Snapshot VM"
    CLONE_VM = "Clone VM"
    ATTACH_DISK = "Attach Disk"
    MIGRATE_VM_HOST = "Migrate VM Between Hosts"
    MIGRATE_VM_DATASTORE = "Migrate VM Between Datastores"
    SAVE_AS_TEMPLATE = "Save As Template"
    DELETE_TEMPLATE = "Delete Template"
    #: periodic: queue the daily/weekly/monthly snapshots of the VMs that asked for them
    SCHEDULED_SNAPSHOTS = "Scheduled Snapshots"
    #: periodic: ping + libvirtd/OVS check of every host, mark UP/DOWN, record events
    HOST_SANITY = "Host Sanity"
    #: periodic: reconcile VM rows with the domains the UP hosts report
    VM_SANITY = "VM Sanity"
    #: maintenance: snapshot (type MAINTENANCE) and destroy one VM / revert and resume it
    MAINTENANCE_SHUTDOWN_VM = "Maintenance Shutdown VM"
    MAINTENANCE_BOOTUP_VM = "Maintenance Bootup VM"
    #: periodic: close expired VNC grants, restore lost DHCP entries and NAT mappings
    NETWORK_SANITY = "Network Sanity"
    #: periodic: record every UP host's and its VMs' usage in their RRD files
    UPDATE_RRD = "Update RRD"
    #: periodic: latency and throughput between the UP hosts (host network graph)
    HOST_NETWORK_GRAPH = "Host Network Graph"
    #: periodic: warn the users of idle and long shut-off VMs (upstream vm_daily_checks)
    VM_DAILY_CHECKS = "VM Daily Checks"
    #: periodic: destroy / delete the VMs whose warning ran out (vm_garbage_collector)
    VM_GARBAGE_COLLECTOR = "VM Garbage Collector"
    #: periodic: migrate VMs off hosts short of memory (upstream vm_loadbalance)
    VM_LOADBALANCE = "VM Load Balance"
    #: periodic: send the mails of the outbox that are due (retries with back-off)
    SEND_MAIL = "Send Mail"
    #: periodic: delete the audit entries older than [audit] retention_days, in batches
    AUDIT_RETENTION = "Audit Retention"
    #: an admin's power on, off or cycle of one host (wake-on-LAN / IPMI, SSH poweroff)
    HOST_POWER = "Host Power"
    WARN_SHUTDOWN = "Warn Shutdown"
    WARN_DELETE = "Warn Delete"


class RequestStatus(IntEnum):
    FAILED = -1
    REQUESTED = 1
    REJECTED = 2
    VERIFIED = 3
    APPROVED = 4
    IN_QUEUE = 5


#: a request still waiting for someone (it can be edited, withdrawn, approved, rejected)
REQUEST_PENDING = (RequestStatus.REQUESTED, RequestStatus.VERIFIED, RequestStatus.APPROVED)


class RequestKind(StrEnum):
    """What a request asks for (stored in request_queue.request_type)."""

    CREATE = "create"
    CLONE = "clone"
    ATTACH_DISK = "attach_disk"
    EDIT = "edit"


class RequestEvent(StrEnum):
    """The transitions of a request that people are told about (mail)."""

    MADE = "made"
    VERIFIED = "verified"
    APPROVED = "approved"
    REJECTED = "rejected"
    REMINDED = "reminded"
    QUEUED = "queued"


class QuotaItem(StrEnum):
    """What a quota limits; the value is the column of ``quota`` and the settings key
    suffix (``[quota] user_<item>`` / ``org_<item>``)."""

    VMS = "vms"
    VCPUS = "vcpus"
    RAM_GB = "ram_gb"
    DISK_GB = "disk_gb"
    PUBLIC_IPS = "public_ips"


#: a quota limit is 0..this (0 = unlimited)
QUOTA_MAX = 1_000_000
#: longest reason a rejection keeps
REJECT_REASON_MAX = 512
#: a reminder to the same approver at most this often
REQUEST_REMIND_INTERVAL_S = 24 * 3600
#: clones one request may ask for
CLONE_COUNT_MAX = 100


class VMStatus(IntEnum):
    UNKNOWN = -1
    IN_QUEUE = 1
    RUNNING = 2
    SUSPENDED = 3
    SHUTDOWN = 4


class HostStatus(IntEnum):
    DOWN = 0
    UP = 1
    MAINTENANCE = 2


#: what a ``Host Power`` task does: cycle is off (after its VMs), then on again
HOST_POWER_ACTIONS = ("on", "off", "cycle")


class HostType(StrEnum):
    PHYSICAL = "Physical"
    VIRTUAL = "Virtual"


class SnapshotType(IntEnum):
    DAILY = 1
    WEEKLY = 2
    MONTHLY = 4
    YEARLY = 8
    #: taken by maintenance (shutdown_baadal) and reverted at bootup
    MAINTENANCE = 6
    USER = 101
    SYSTEM = 102


class Role(StrEnum):
    ADMIN = "admin"
    ORGADMIN = "orgadmin"
    FACULTY = "faculty"
    USER = "user"


class BaadalStatus(StrEnum):
    UP = "up"
    UP_PROGRESS = "up-progress"
    DOWN = "down"
    DOWN_PROGRESS = "down-progress"


#: the ``constants`` table row that holds the cloud's BaadalStatus
BAADAL_STATUS_KEY = "baadal_status"


class NatType(StrEnum):
    SOFTWARE = "software_nat"
    HARDWARE = "hardware_nat"
    MAPPING = "mapping_nat"
    NONE = "no_nat"


class DhcpBackend(StrEnum):
    NONE = "none"
    DNSMASQ = "dnsmasq"
    ISC = "isc"


class MailTls(StrEnum):
    """How the SMTP connection is protected: not at all, upgraded (STARTTLS, usually port
    587) or TLS from the first byte (usually port 465)."""

    NONE = "none"
    STARTTLS = "starttls"
    TLS = "tls"


class MailStatus(StrEnum):
    """An outbox row: waiting (to be sent or tried again), sent, or given up on."""

    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"


class AuthType(StrEnum):
    DB = "db"
    LDAP = "ldap"
    OAUTH = "oauth"


class RegistrationKey(StrEnum):
    """users.registration_key (upstream): '' active, 'pending' awaiting approval."""

    ACTIVE = ""
    PENDING = "pending"
    DISABLED = "disable"


class TemplateDiskType(StrEnum):
    QCOW2 = "QCOW2"
    RAW = "RAW"
    ISO = "ISO"


SYSTEM_USER_ID = -1
HOST_VLAN_ID = 1
ITEMS_PER_PAGE = 20
#: CLI tables longer than this print as plain aligned text: Rich measures and wraps every
#: cell (about 1 ms a row here), so 2,500 hosts took 3 s to print as a Rich table
CLI_RICH_TABLE_MAX_ROWS = 50

# Limits
USER_SNAPSHOT_LIMIT = 3
MAX_VNC_ALLOWED_IN_A_DAY = 10
#: the window MAX_VNC_ALLOWED_IN_A_DAY counts grants in
VNC_GRANT_WINDOW_S = 24 * 3600
VNC_ACCESS_DURATION_S = 30 * 60
VNC_ACCESS_MAX_DURATION_S = 24 * 3600
VNC_PORT_RANGE = (20000, 50000)
# --- the console in the browser (noVNC through websockify) -----------------------------
#: a console token: random bytes (URL-safe base64, 43 characters), and how long after the
#: click it may open its one connection (the page connects at once)
CONSOLE_TOKEN_BYTES = 32
CONSOLE_TOKEN_RE = r"[A-Za-z0-9_-]{43}"
CONSOLE_TOKEN_TTL_S = 60
#: the WebSocket path of ``baadal serve`` that relays to websockify (same origin as the pages)
CONSOLE_WEBSOCKET_PATH = "/console/websockify"
#: websockify's token plugin (in the package; websockify imports it by this name)
CONSOLE_TOKEN_PLUGIN = "baadal.web.websockify_tokens.DatabaseTokens"
#: websockify's default loopback port ([novnc] port) and how long ``baadal serve`` waits
#: for it to listen
WEBSOCKIFY_PORT = 6080
WEBSOCKIFY_START_S = 15.0
#: how long the relay waits for websockify's answer to a console's handshake
WEBSOCKIFY_HANDSHAKE_S = 10.0
#: failed logins counted per username / per source within LOGIN_FAILURE_WINDOW_S before
#: further tries wait LOGIN_LOCKOUT_S, doubled by each further failure up to the maximum
LOGIN_USER_MAX_FAILURES = 5
LOGIN_SOURCE_MAX_FAILURES = 20
LOGIN_FAILURE_WINDOW_S = 15 * 60
LOGIN_LOCKOUT_S = 60
LOGIN_LOCKOUT_MAX_S = 15 * 60
#: self-registrations counted per client address within a window ([auth] settings)
REGISTRATIONS_PER_ADDRESS = 5
REGISTRATIONS_PER_ADDRESS_MAX = 10_000
REGISTRATION_WINDOW_S = 60 * 60
REGISTRATION_WINDOW_MAX_S = 7 * 24 * 60 * 60
#: upstream allowed hosts to be overcommitted to 200 % of their RAM and CPUs
OVERCOMMIT_RAM_FACTOR = 2.0
OVERCOMMIT_CPU_FACTOR = 2.0
VLAN_TAG_RANGE = (1, 4094)
VM_NAME_MAX = 100
SECURITY_DOMAIN_NAME_MAX = 30
#: an organisation's name is the first part of its VMs' identities
ORG_NAME_MAX = 30
#: an organisation's free-text description (its column)
ORG_DETAILS_MAX = 255
#: audit entries one `baadal audit` shows: by default, and at most
AUDIT_LIST_DEFAULT = 50
AUDIT_LIST_MAX = 1000
#: audit entries deleted per transaction by the retention job (a first run over years of
#: entries must not hold the write lock for long)
AUDIT_PURGE_BATCH = 1000
HOST_NAME_MAX = 30
#: what a host may report: far above any real machine, far below the columns' limits
HOST_CPUS_RANGE = (1, 4096)
HOST_RAM_GB_RANGE = (1, 65536)
HOST_HDD_GB_RANGE = (0, 1024 * 1024)
#: TCP/UDP ports (SSH, metrics)
PORT_RANGE = (1, 65535)
#: row ids people type: a PostgreSQL INTEGER; a larger number names no row (and would
#: overflow SQLite's and PostgreSQL's integer parameters)
ROW_ID_MAX = 2**31 - 1
#: the most tasks one list shows
TASK_LIST_MAX = 1000
#: the free-text purpose of a VM request (its column)
VM_PURPOSE_MAX = 512
DATASTORE_CAPACITY_GB_RANGE = (1, 9999)
TEMPLATE_HDD_GB_RANGE = (1, 1024)
EXTRA_DISK_GB_RANGE = (1, 1024)
#: joins the parts of a VM identity, <org>~<user>~<vm>, and the prefix of a host's RRD
#: file: no name may contain it (upstream's '_' may be inside a name, so user system_web's
#: VM x and system's VM web_x were both system_web_x)
IDENTITY_SEPARATOR = "~"
#: a host's RRD file is <HOST_RRD_PREFIX><address>.rrd, apart from the controller's and
#: the NAT box's (a host at address 'nat' must not write into the NAT box's file)
HOST_RRD_PREFIX = f"host{IDENTITY_SEPARATOR}"
#: generated MACs use the locally administered prefix upstream used
GENERATED_MAC_PREFIX = "A2:00:00"

# Idle VMs and load balancing
#: the idle window is read from the hourly RRD archive, which keeps 62 days
IDLE_WINDOW_DAYS_MAX = 60
IDLE_DAYS_MAX = 3650
#: share of the idle window's hours that must have data before a VM counts as idle
#: (a VM nobody measured is not idle, it is unknown)
IDLE_MIN_KNOWN = 0.9
BALANCE_MIGRATIONS_MAX = 100

# Task engine defaults
TASK_LEASE_S = 60.0
TASK_MAX_ATTEMPTS = 3
#: a worker's lease must be at least this many poll intervals (it is renewed every third)
LEASE_POLL_RATIO = 3
#: task threads one worker process may run (more work = more worker processes)
WORKER_CONCURRENCY_MAX = 256
#: PostgreSQL channel on which a transaction that made a task runnable wakes idle workers
TASK_NOTIFY_CHANNEL = "baadal_tasks"
#: longest a worker's PostgreSQL listener blocks before it looks whether to stop
LISTEN_CHECK_S = 1.0

# --- monitoring (upstream-facts.md: RRD step 300, heartbeat 550; five graph periods) ---
RRD_STEP_S = 300
RRD_HEARTBEAT_S = 550
#: graph and average periods by name, in seconds
GRAPH_PERIODS = {
    "hour": 3600,
    "day": 24 * 3600,
    "week": 7 * 24 * 3600,
    "month": 31 * 24 * 3600,
    "year": 365 * 24 * 3600,
}

# --- mail (the outbox; [mail] says where it goes) ---
#: VM task types whose end is mailed to the VM's users (not migrations, maintenance or
#: periodic jobs; scheduled snapshots are left out by their snapshot type)
TASK_TYPES_MAILED = frozenset(
    {
        TaskType.CREATE_VM,
        TaskType.START_VM,
        TaskType.STOP_VM,
        TaskType.SUSPEND_VM,
        TaskType.RESUME_VM,
        TaskType.DELETE_VM,
        TaskType.DESTROY_VM,
        TaskType.DELETE_SNAPSHOT,
        TaskType.REVERT_TO_SNAPSHOT,
        TaskType.EDIT_VM_CONFIG,
        TaskType.SNAPSHOT_VM,
        TaskType.CLONE_VM,
        TaskType.ATTACH_DISK,
        TaskType.SAVE_AS_TEMPLATE,
    }
)
#: the most mails one run of the sending job takes from the outbox
MAIL_BATCH = 100
#: a mail taken by a run is not taken by another for at least this long (a run that
#: died leaves it to the next one after that; sender.lease_s)
MAIL_SEND_LEASE_MIN_S = 15 * 60
#: the outbox's columns: an address (RFC 5321), a subject line
MAIL_ADDRESS_MAX = 254
MAIL_SUBJECT_MAX = 255
#: the most outbox rows one list shows
MAIL_LIST_MAX = 1000

# --- REST API ---------------------------------------------------------------------------
#: ``baadal serve``'s default port and most worker processes
WEB_PORT = 8080
WEB_WORKERS_MAX = 64
#: where the API lives; its OpenAPI document and docs are under it
API_PREFIX = "/api/v1"
#: personal API tokens: random bytes (hex-encoded after the prefix), the visible prefix
#: that tells people which token is which, the longest validity
API_TOKEN_BYTES = 32
API_TOKEN_PREFIX = "bdl_"
API_TOKEN_SHOWN_CHARS = 8
API_TOKEN_DAYS_MAX = 3650
#: a page of an API list: default and most items
API_PAGE_DEFAULT = 100
API_PAGE_MAX = 1000
#: threads per server process that run the busiest reads (VM list and show) of a
#: database server: enough to overlap PostgreSQL's round trips, few enough not to fight
#: over the interpreter's lock (SQLite's run on the event loop: ``Caller.read``)
API_READ_THREADS = 2
#: a token's name: printable ASCII words (one pattern for the service and the OpenAPI)
API_TOKEN_NAME_RE = r"[A-Za-z0-9_ .:@+-]{1,64}"

# --- web portal -------------------------------------------------------------------------
#: the longest a portal login may last ([web] session_hours)
WEB_SESSION_HOURS_MAX = 24 * 30
#: the portal's cookies: the login (HttpOnly) and, before login, the form token of the
#: login and registration forms (double-submit)
WEB_SESSION_COOKIE = "baadal_session"
WEB_FORM_COOKIE = "baadal_form"
#: a one-line message for the next page (after a POST's redirect)
WEB_FLASH_COOKIE = "baadal_flash"
#: the CSRF token: a hidden field in every form, a header on every HTMX or API call
WEB_CSRF_FIELD = "csrf_token"
WEB_CSRF_HEADER = "X-CSRF-Token"
#: random bytes of a session id and of its CSRF secret
WEB_SESSION_BYTES = 32
#: last_seen is written at most this often per session
WEB_SESSION_TOUCH_S = 60
#: how often a page asks for the progress of unfinished tasks (HTMX polling)
WEB_POLL_S = 2
#: the file (in the home, 0600) with the key that signs session cookies
WEB_SESSION_KEY_FILE = "web-session.key"
#: the only sizes a VM may have (upstream's menus)
ALLOWED_RAM_MB = tuple(2**n for n in range(8, 17))  # 256 .. 65536
ALLOWED_VCPUS = (1, 2, 4, 8, 16)
#: free text (a purpose, a reason): no C0/C1 control character, as net.validators checks
NO_CONTROL_PATTERN = r"^[^\x00-\x1f\x7f-\x9f]*$"
#: a name that may become a path or a libvirt name (net.validators.check_safe_name)
SAFE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"

# --- sweeps over every host -------------------------------------------------------------
#: hosts asked at once by the host and VM sanity sweeps (the work is waiting on the
#: network, so many more threads than cores)
SWEEP_THREADS = 32
#: the most one host may take in a sweep (its checks, rechecks included): past it the
#: host counts as not answering and the sweep goes on without it
SWEEP_HOST_BUDGET_S = 30.0
