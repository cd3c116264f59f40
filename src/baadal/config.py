"""Settings: one TOML file plus environment overrides (the seed's baadalapp.cfg sections).

Where the file is: ``$BAADAL_CONFIG`` if set, else ``<home>/baadal.toml`` if it exists.
Any value can be overridden from the environment as ``BAADAL_<SECTION>__<KEY>``, e.g.
``BAADAL_DATABASE__URL=postgresql+psycopg://...``. Settings are built on demand by
:func:`get_settings` (cached), never at import time.
"""

from __future__ import annotations

import os
import re
import tomllib
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from baadal import constants as C
from baadal.errors import ConfigError


def default_home() -> Path:
    if env := os.environ.get("BAADAL_HOME"):
        return Path(env)
    if os.geteuid() == 0:
        return Path("/var/lib/baadal")
    return Path.home() / ".local" / "share" / "baadal"


class Section(BaseModel):
    """A settings section; unknown keys are errors (a typo must not pass silently)."""

    model_config = ConfigDict(extra="forbid")


class GeneralConf(Section):
    home_address: str = "http://localhost:8000"
    #: accept ``test:`` and ``fake:`` hypervisor URIs (libvirt's test driver, the
    #: project's fake driver): development and the test suite only, never production
    allow_test_hypervisors: bool = False
    #: usernames granted a role at login (upstream admin_uid / orgadmin_uid / faculty_uid)
    admin_uid: list[str] = Field(default_factory=list)
    orgadmin_uid: list[str] = Field(default_factory=list)
    faculty_uid: list[str] = Field(default_factory=list)
    storage_type: str = "linux_nfs"
    #: idle VMs (upstream vm_daily_checks / vm_garbage_collector): a VM shut off this long
    #: is warned, then deleted ``idle_warning_days`` later unless started or kept
    shutdown_vm_days: int = Field(default=90, ge=1, le=C.IDLE_DAYS_MAX)
    #: a running VM this old whose RRD history over these days never reached the CPU (%)
    #: and network (bytes/s received = read, sent = write) thresholds is warned, then
    #: destroyed ``idle_warning_days`` later unless it got busy or was kept. The window
    #: must fit in the hourly RRD archive (62 days).
    idle_vm_days: int = Field(default=20, ge=1, le=C.IDLE_WINDOW_DAYS_MAX)
    idle_warning_days: int = Field(default=20, ge=1, le=C.IDLE_DAYS_MAX)
    cpu_threshold_limit: int = Field(default=50, ge=0, le=100)
    nw_read_threshold_limit: int = Field(default=15000, ge=0)
    nw_write_threshold_limit: int = Field(default=10000, ge=0)
    #: seed rule: a running VM must answer ping before it is snapshotted
    snapshot_requires_ping: bool = True
    #: the host sanity check also asks each host over SSH whether libvirtd and OVS run
    host_check_services: bool = True
    #: respawn the VMs of a DOWN host elsewhere even when they could not be fenced there
    #: (no SSH): only safe where a dead host really is off
    respawn_unfenced: bool = False
    #: an UP host is declared DOWN (and its VMs fenced and respawned) only after this many
    #: failed checks in a row within one sanity pass, ``host_down_recheck_s`` apart: a
    #: libvirtd restart or a lost ping must not cost every guest on the host a reboot
    host_down_checks: int = Field(default=3, ge=1)
    host_down_recheck_s: float = Field(default=2.0, ge=0)


class DatabaseConf(Section):
    #: empty = embedded SQLite file <home>/baadal.db
    url: str = ""
    echo: bool = False


class AuthConf(Section):
    auth_type: C.AuthType = C.AuthType.DB
    login_after_registration: bool = False
    #: self-registrations one client address may make per window (a lab behind one NAT
    #: is one address: raise it there); more wait until the window ends (HTTP 429)
    registrations_per_address: int = Field(
        default=C.REGISTRATIONS_PER_ADDRESS, ge=1, le=C.REGISTRATIONS_PER_ADDRESS_MAX
    )
    registration_window_s: int = Field(
        default=C.REGISTRATION_WINDOW_S, ge=60, le=C.REGISTRATION_WINDOW_MAX_S
    )


class LdapConf(Section):
    """The directory users log in with when auth.auth_type is ldap."""

    #: e.g. ldaps://ldap.example.org:636 (or ldap:// with start_tls)
    ldap_url: str = ""
    #: PEM file of the CA(s) the directory's certificate must chain to; empty = the
    #: system's CAs. The certificate is always checked, and its name against the URL's host
    ca_file: str = ""
    #: upgrade an ldap:// connection to TLS (StartTLS) before anything is sent
    start_tls: bool = False
    #: allow ldap:// without StartTLS: passwords cross the network in clear (testing only)
    allow_insecure: bool = False
    #: where people are searched (uid=<username>) below, e.g. ou=people,dc=example,dc=org
    ldap_dn: str = ""
    #: who searches; empty = an anonymous search
    bind_dn: str = ""
    bind_password_file: str = ""
    #: organisation of LDAP users whose entry names none Baadal knows (upstream: IITD)
    default_organisation: str = ""
    timeout_s: float = 10.0


#: an e-mail address: no spaces, controls or second '@' (a header must stay one line)
_ADDRESS = r"^[^@\s\x00-\x1f\x7f]{1,64}@[A-Za-z0-9.-]{1,253}$"


class MailConf(Section):
    """Where mails go (SMTP). Mails wait in the outbox table and a periodic job
    (``[scheduler] mail_outbox``) sends them, retrying with back-off."""

    #: off by default: nothing is written to the outbox and nothing is sent
    mail_active: bool = False
    #: the SMTP server's host name or address (the port is ``port``)
    server: str = Field(default="localhost", pattern=r"^[A-Za-z0-9.:-]{1,253}$")
    port: int = Field(default=25, ge=C.PORT_RANGE[0], le=C.PORT_RANGE[1])
    #: none, starttls (upgrade after connecting, usually port 587) or tls (usually 465);
    #: the server's certificate is always checked
    tls: C.MailTls = C.MailTls.NONE
    #: PEM file of the CA(s) the server's certificate must chain to; empty = the system's
    ca_file: str = ""
    #: the SMTP login; its password is read from ``password_file`` (never kept here)
    login: str = ""
    password_file: str = ""
    #: log in over a connection without TLS (the password crosses the network in clear)
    allow_insecure: bool = False
    #: the From address
    sender: str = Field(default="baadal@localhost", pattern=_ADDRESS)
    #: accounts without an e-mail address get <username>@<email_domain>; empty = skipped
    email_domain: str = Field(
        default="", pattern=r"^(?:[A-Za-z0-9-]{1,63}\.)*[A-Za-z0-9-]{1,63}$|^$"
    )
    #: also told when a request waits for an admin (besides the admins' own addresses)
    admin_email: str = Field(default="", pattern=f"{_ADDRESS}|^$")
    timeout_s: float = Field(default=30.0, gt=0, le=600)
    #: a mail is tried this many times before it is marked failed (``baadal mail outbox
    #: --failed``); the n-th retry waits retry_base_s x 2^(n-1), at most retry_max_s
    max_attempts: int = Field(default=8, ge=1, le=100)
    retry_base_s: float = Field(default=60.0, gt=0)
    retry_max_s: float = Field(default=6 * 3600.0, gt=0)
    #: sent mails are kept this long (for ``mail outbox``), then deleted by the job
    keep_sent_days: int = Field(default=30, ge=1, le=3650)

    @field_validator("tls", mode="before")
    @classmethod
    def _old_boolean(cls, value: object) -> object:
        # upstream's tls = true/false (a TOML boolean, or a word from the environment):
        # STARTTLS or nothing
        word = str(value).lower() if isinstance(value, bool | str) else None
        return {"true": C.MailTls.STARTTLS, "false": C.MailTls.NONE}.get(word or "", value)

    @field_validator("server")
    @classmethod
    def _no_port(cls, value: str) -> str:
        if value.count(":") == 1:  # upstream's 'host:port'; an IPv6 address has more
            raise ValueError("the port goes in [mail] port, not in server")
        return value

    @field_validator("login")
    @classmethod
    def _no_password(cls, value: str) -> str:
        if ":" in value:  # upstream's 'user:password'
            raise ValueError("the password goes in a file named by [mail] password_file")
        return value

    @model_validator(mode="after")
    def _login_over_tls(self) -> MailConf:
        if self.login and self.tls == C.MailTls.NONE and not self.allow_insecure:
            raise ValueError(
                "a login needs tls = starttls or tls (the password would cross the network"
                " in clear); allow_insecure = true allows it"
            )
        if self.login and not self.password_file:
            raise ValueError("a login needs password_file (the file holding its password)")
        return self


class NovncConf(Section):
    """The console in the browser: ``baadal serve`` starts websockify on this loopback
    port and relays the pages' WebSocket to it (browsers never reach it directly)."""

    port: int = Field(default=C.WEBSOCKIFY_PORT, ge=1024, le=C.PORT_RANGE[1])


class NatConf(Section):
    """The NAT box that maps public IPs and VNC ports (upstream nat_ip/nat_type/vnc_ip)."""

    #: software_nat = iptables over SSH on the NAT box; no_nat = Baadal maps nothing
    nat_type: C.NatType = C.NatType.NONE
    nat_ip: str = ""
    nat_user: str = "root"
    nat_ssh_port: int = 22
    nat_ssh_key: str = ""
    #: the NAT box's interface facing the public network (public IPs are added here)
    public_interface: str = "eth0"
    #: public address users connect to for VNC; empty = the NAT box's own nat_ip
    vnc_ip: str = ""


class DhcpConf(Section):
    """Where VMs' address reservations go (upstream dhcp_ip + dhcp_helper)."""

    #: "dnsmasq" (hosts file + SIGHUP), "isc" (dhcpd.conf host blocks) or "none"
    backend: C.DhcpBackend = C.DhcpBackend.NONE
    #: the DHCP server's address for SSH; empty = this machine
    dhcp_ip: str = ""
    #: dnsmasq: the --dhcp-hostsfile and the pid file to SIGHUP
    hosts_file: str = ""
    pid_file: str = ""
    #: isc: the file Baadal owns (include it from dhcpd.conf) and how to reload the server
    isc_conf_file: str = "/etc/dhcp/baadal-hosts.conf"
    isc_reload_command: list[str] = Field(
        default_factory=lambda: ["service", "isc-dhcp-server", "restart"]
    )


class NetworkConf(Section):
    """How VM NICs attach on the hosts (upstream: OVS bridge baadal-br-int)."""

    bridge: str = "baadal-br-int"
    openvswitch: bool = True
    #: attach NICs to this libvirt network instead of the bridge (when set)
    libvirt_network: str = ""
    #: the security domain of a VM requested without one; empty = such a request is
    #: refused unless it asks for no network at all
    default_security_domain: str = Field(
        default="",
        pattern=rf"^(?:[A-Za-z0-9][A-Za-z0-9_.-]{{0,{C.SECURITY_DOMAIN_NAME_MAX - 1}}})?$",
    )


class VmConf(Section):
    #: how long 'Stop VM' waits for the guest's own shutdown before forcing it off
    stop_timeout_s: float = 60.0
    #: new VM disks are copy-on-write overlays of the template unless this is set
    full_copy: bool = False
    #: address VNC listens on; empty = the host's own (management) address from its row
    vnc_listen: str = ""
    #: directory under the datastore kept for serial console logs of the VMs
    console_dir: str = "vm_consoles"

    @field_validator("vnc_listen")
    @classmethod
    def _one_address(cls, value: str) -> str:
        # a wildcard would open every console on every network the host is on
        if value.strip().strip("[]") in {"0.0.0.0", "::", "*"}:
            raise ValueError("must be one address (empty = the host's own), not every address")
        return value


class PathsConf(Section):
    """Where the datastore keeps things (the seed's constants table paths)."""

    vmfiles_path: str = "/mnt/datastore"
    vms: str = "vm_images"
    templates_dir: str = "vm_templates"
    extra_disks_dir: str = "vm_extra_disks"
    archives_dir: str = "vm_deleted"
    vm_migration_data: str = "vm_migration_data"
    vm_rrds_dir: str = "vm_rrds"
    graph_file_dir: str = "graphs"


class SshConf(Section):
    user: str = "root"
    port: int = 22
    key_file: str = ""
    connect_timeout_s: float = 10.0
    command_timeout_s: float = 120.0
    #: known_hosts file; hosts not listed are refused unless trust_unknown_hosts is set
    known_hosts: str = ""
    trust_unknown_hosts: bool = False


class LogConf(Section):
    dir: str = ""
    level: str = "INFO"
    max_bytes: int = 10 * 1024 * 1024
    backup_count: int = 20


class SchedulerConf(Section):
    """Intervals of the periodic jobs in seconds (upstream-facts.md section 4); 0 switches
    a job off, a negative interval is an error."""

    vm_sanity: int = 30 * 60
    host_sanity: int = 10 * 60
    rrd: int = 5 * 60
    network_graph: int = 4 * 3600
    vnc_expiry: int = 5 * 60
    vm_daily_checks: int = 24 * 3600
    vm_garbage_collector: int = 24 * 3600
    snapshot_daily: int = 24 * 3600
    snapshot_weekly: int = 7 * 24 * 3600
    snapshot_monthly: int = 30 * 24 * 3600
    #: moving VMs off hosts above [balance] memory_threshold_pct: off by default
    vm_loadbalance: int = 0
    #: send the outbox's due mails (only while [mail] mail_active is true)
    mail_outbox: int = 60
    #: extra intervals by job name (tests and site-specific jobs)
    extra: dict[str, int] = Field(default_factory=dict)

    @field_validator("*")
    @classmethod
    def _not_negative(cls, value: int | dict[str, int]) -> int | dict[str, int]:
        intervals = value.items() if isinstance(value, dict) else [("", value)]
        for job, interval in intervals:
            if interval < 0:
                where = f"{job}: " if job else ""
                raise ValueError(f"{where}an interval must be >= 0 s (0 switches the job off)")
        return value

    @field_validator("rrd")
    @classmethod
    def _rrd_within_heartbeat(cls, value: int) -> int:
        # a longer gap between samples than the RRD heartbeat records nothing but unknowns
        if value > C.RRD_HEARTBEAT_S:
            raise ValueError(f"must be at most {C.RRD_HEARTBEAT_S} s (the RRD heartbeat)")
        return value

    def interval_for(self, job: str) -> int | None:
        if job in self.extra:
            return self.extra[job]
        value = getattr(self, job, None)
        return value if isinstance(value, int) else None


class WorkerConf(Section):
    """A task's lease is renewed every ``lease_s / 3`` by a loop that wakes every
    ``poll_interval_s``: a lease not well above the poll interval expires under a running
    task, and another worker runs the same task at the same time."""

    concurrency: int = Field(default=4, ge=1, le=C.WORKER_CONCURRENCY_MAX)
    lease_s: float = Field(default=C.TASK_LEASE_S, gt=0)
    poll_interval_s: float = Field(default=0.5, gt=0)
    max_attempts: int = Field(default=C.TASK_MAX_ATTEMPTS, ge=1)
    #: on PostgreSQL an idle worker LISTENs for queued tasks instead of waiting out its
    #: poll; switch off where LISTEN cannot work (a transaction-pooling PgBouncer)
    listen: bool = True

    @model_validator(mode="after")
    def _lease_above_poll(self) -> WorkerConf:
        least = C.LEASE_POLL_RATIO * self.poll_interval_s
        if self.lease_s < least:
            raise ValueError(
                f"lease_s ({self.lease_s:g} s) must be at least {C.LEASE_POLL_RATIO} x "
                f"poll_interval_s ({self.poll_interval_s:g} s), i.e. >= {least:g} s"
            )
        return self


class PlacementConf(Section):
    ram_overcommit: float = C.OVERCOMMIT_RAM_FACTOR
    cpu_overcommit: float = C.OVERCOMMIT_CPU_FACTOR


class BalanceConf(Section):
    """The load balancer (upstream vm_loadbalance; its interval is [scheduler]
    vm_loadbalance, 0 = off): VMs leave hosts whose memory in use is above the threshold
    for the least loaded hosts, as migration tasks."""

    memory_threshold_pct: int = Field(default=90, ge=1, le=100)
    #: migrations (queued or running, whoever asked) at once; the balancer adds none beyond
    max_migrations: int = Field(default=2, ge=1, le=C.BALANCE_MIGRATIONS_MAX)


class PowerConf(Section):
    """How hosts are powered off and woken (host_power)."""

    #: run on the host over SSH to power it off (the lab replaces it with its own script)
    poweroff_command: list[str] = Field(default_factory=lambda: ["poweroff"])
    #: Wake-on-LAN: UDP port and the broadcast address the magic packet is sent to
    #: (empty = the limited broadcast 255.255.255.255)
    wol_port: int = 9
    wol_broadcast: str = ""
    #: IPMI instead of WOL for hosts with a ``bmc_address``
    ipmi_user: str = ""
    ipmi_password_file: str = ""
    #: the BMCs' RMCP+ port
    ipmi_port: int = 623
    #: how long power-up waits for the host to answer (ping + libvirt)
    boot_timeout_s: float = 300.0
    #: host_power_operation keeps at least this many hosts UP
    min_hosts_up: int = 1


class QuotaConf(Section):
    """Default limits of every user (``user_*``, on the VMs they own) and every
    organisation (``org_*``, on its members' VMs); 0 = unlimited. ``baadal quota set``
    overrides them per user or organisation."""

    user_vms: int = Field(default=0, ge=0, le=C.QUOTA_MAX)
    user_vcpus: int = Field(default=0, ge=0, le=C.QUOTA_MAX)
    user_ram_gb: int = Field(default=0, ge=0, le=C.QUOTA_MAX)
    user_disk_gb: int = Field(default=0, ge=0, le=C.QUOTA_MAX)
    user_public_ips: int = Field(default=0, ge=0, le=C.QUOTA_MAX)
    org_vms: int = Field(default=0, ge=0, le=C.QUOTA_MAX)
    org_vcpus: int = Field(default=0, ge=0, le=C.QUOTA_MAX)
    org_ram_gb: int = Field(default=0, ge=0, le=C.QUOTA_MAX)
    org_disk_gb: int = Field(default=0, ge=0, le=C.QUOTA_MAX)
    org_public_ips: int = Field(default=0, ge=0, le=C.QUOTA_MAX)


class WebConf(Section):
    """``baadal serve``: where the API and the portal listen (loopback by default: put a TLS proxy in
    front, or give ``tls_cert``/``tls_key``), and the address people reach it by."""

    host: str = Field(default="127.0.0.1", pattern=r"^[A-Za-z0-9.:-]{1,253}$")
    port: int = Field(default=C.WEB_PORT, ge=C.PORT_RANGE[0], le=C.PORT_RANGE[1])
    #: the address in links (``Location`` stays relative); empty: http://host:port
    public_url: str = Field(default="", pattern=r"^(https?://[^\s/?#]+(/[^\s?#]*)?)?$")
    workers: int = Field(default=1, ge=1, le=C.WEB_WORKERS_MAX)
    tls_cert: str = ""
    tls_key: str = ""
    #: a portal login lasts at most this long, and ends after this long unused
    session_hours: int = Field(default=12, ge=1, le=C.WEB_SESSION_HOURS_MAX)
    session_idle_minutes: int = Field(default=120, ge=5, le=C.WEB_SESSION_HOURS_MAX * 60)

    @model_validator(mode="after")
    def _tls_pair(self) -> WebConf:
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValueError("tls_cert and tls_key go together: give both or neither")
        return self


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="BAADAL_", env_nested_delimiter="__", extra="forbid"
    )

    home: Path = Field(default_factory=default_home)
    general: GeneralConf = Field(default_factory=GeneralConf)
    database: DatabaseConf = Field(default_factory=DatabaseConf)
    auth: AuthConf = Field(default_factory=AuthConf)
    ldap: LdapConf = Field(default_factory=LdapConf)
    mail: MailConf = Field(default_factory=MailConf)
    novnc: NovncConf = Field(default_factory=NovncConf)
    nat: NatConf = Field(default_factory=NatConf)
    dhcp: DhcpConf = Field(default_factory=DhcpConf)
    network: NetworkConf = Field(default_factory=NetworkConf)
    vm: VmConf = Field(default_factory=VmConf)
    paths: PathsConf = Field(default_factory=PathsConf)
    ssh: SshConf = Field(default_factory=SshConf)
    log: LogConf = Field(default_factory=LogConf)
    scheduler: SchedulerConf = Field(default_factory=SchedulerConf)
    worker: WorkerConf = Field(default_factory=WorkerConf)
    placement: PlacementConf = Field(default_factory=PlacementConf)
    power: PowerConf = Field(default_factory=PowerConf)
    balance: BalanceConf = Field(default_factory=BalanceConf)
    quota: QuotaConf = Field(default_factory=QuotaConf)
    web: WebConf = Field(default_factory=WebConf)

    @field_validator("home")
    @classmethod
    def _absolute_home(cls, value: Path) -> Path:
        return value.expanduser().absolute()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = config_file_path()
        if path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)

    @property
    def database_url(self) -> str:
        return self.database.url or f"sqlite:///{self.home / 'baadal.db'}"

    @property
    def log_dir(self) -> Path:
        return Path(self.log.dir) if self.log.dir else self.home / "logs"

    def job_interval(self, job: str) -> int | None:
        """The job's ``[scheduler]`` interval; 0 for a job whose feature is switched off
        (no task is queued every minute to send the mails of a cloud that sends none)."""
        if job == "mail_outbox" and not self.mail.mail_active:
            return 0
        return self.scheduler.interval_for(job)

    def datastore_path(self, *parts: str) -> Path:
        """A path under the datastore mount, e.g. ``datastore_path(paths.vms, identity)``."""
        return Path(self.paths.vmfiles_path, *parts)


def config_file_path() -> Path | None:
    """The settings file in use, or None when running on defaults and environment only."""
    if env := os.environ.get("BAADAL_CONFIG"):
        path = Path(env)
        if not path.is_file():
            raise ConfigError(f"BAADAL_CONFIG points to {path}, which is not a file")
        return path
    candidate = default_home() / "baadal.toml"
    return candidate if candidate.is_file() else None


def read_secret_file(path: str, what: str) -> str:
    """A password kept in its own file (never in the settings file or an argument list)."""
    try:
        return Path(path).read_text().strip()
    except OSError as exc:
        raise ConfigError(f"{what} {path}: {exc.strerror or exc}") from None


#: how tomllib ends its messages: "(at line 3, column 5)" or "(at end of document)"
_TOML_POSITION = re.compile(
    r"^(?P<problem>.*?) \((?:at line (?P<line>\d+), column \d+|at end of document)\)$"
)


def check_settings_file(path: Path) -> None:
    """A settings file that cannot be read, is not UTF-8 or not TOML: one line naming the
    file, the line and the problem (the TOML reader would only say "internal error")."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"settings file {path}: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError(
            f"settings file {path}, line {line}: not UTF-8 (byte 0x{data[exc.start]:02x})"
        ) from None
    try:
        tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        match = _TOML_POSITION.match(str(exc))
        problem = match.group("problem") if match else str(exc)
        line = match.group("line") if match else None
        where = f"line {line}" if line else "at the end"
        raise ConfigError(f"settings file {path}, {where}: not valid TOML: {problem}") from None


def load_settings(**overrides: Any) -> Settings:
    """Build settings from file + environment (+ explicit overrides); clear errors only."""
    path = config_file_path()
    if path is not None:
        check_settings_file(path)
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        message = first["msg"].removeprefix("Value error, ")
        raise ConfigError(f"bad setting {where}: {message}") from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (the seed's get_config_file)."""
    return load_settings()


def config_value(section: str, key: str) -> Any:
    """The seed's config lookup: ``config_value("nat", "nat_ip")``."""
    settings = get_settings()
    try:
        return getattr(getattr(settings, section), key)
    except AttributeError:
        raise ConfigError(f"no setting {section}.{key}") from None
