"""Inventory: the hosts, datastores and templates an admin registers, plus schema/config views.

Every ``add_*`` checks its whole input (names, ranges, addresses, files on disk) before it
writes; a refusal raises :class:`ValidationError`, :class:`NotFoundError` or
:class:`ConflictError` and leaves the database as it was. Files are never created here
except the datastore's standard directories, which are created idempotently.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar
from urllib.parse import quote, urlunsplit

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import InstrumentedAttribute, Session, joinedload, selectinload

from baadal import constants as C
from baadal.config import Settings, get_settings
from baadal.db.models import VM, Base, Datastore, Host, Template, VncAccess
from baadal.drivers.uri import uri_problem
from baadal.errors import ConflictError, NotFoundError, ValidationError
from baadal.gcpause import paused_gc
from baadal.logs import redact_url
from baadal.net.validators import (
    check_int,
    check_no_control,
    check_safe_name,
    is_valid_ipv4,
    normalize_mac,
)
from baadal.services import lookup
from baadal.services.policy import Action, Actor, guarded, require, template_filter
from baadal.services.rows import Page, keyset

M = TypeVar("M", bound=Base)

DATASTORE_NAME_MAX = 30
TEMPLATE_NAME_MAX = 30
SSH_USER_MAX = 64
CATEGORY_MAX = 50
OS_VERSION_MAX = 50
TAG_MAX = 50
#: the template/host columns these strings land in
PATH_COLUMN_MAX = 255
DATASTORE_PATH_MAX = 1024

#: upstream value sets of the template row (upstream-facts.md section 1)
TEMPLATE_OS = ("Linux", "Windows", "Others")
TEMPLATE_OS_NAMES = ("Ubuntu", "Centos", "Kali", "Windows", "Others")
TEMPLATE_OS_TYPES = ("Desktop", "Server")
TEMPLATE_ARCHES = ("amd64", "i386", "x86", "x64")
TEMPLATE_DISK_TYPES = tuple(t.value for t in C.TemplateDiskType)

_DNS_LABEL_RE = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
_SSH_USER_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")

# --- shared checks -------------------------------------------------------------------


def _check_text(value: str | None, what: str, max_len: int, *, required: bool = False) -> str:
    """Free text that ends up in columns, URIs or command lines: no control characters."""
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise ValidationError(f"{what} must be text")
    if required and not value.strip():
        raise ValidationError(f"{what} must not be empty")
    if len(value) > max_len:
        raise ValidationError(f"{what} must be at most {max_len} characters")
    return check_no_control(value, what)


def _choice(value: str, what: str, allowed: tuple[str, ...]) -> str:
    """Case-insensitive match against an upstream value set; returns the canonical spelling."""
    if isinstance(value, str):
        for option in allowed:
            if value.lower() == option.lower():
                return option
    raise ValidationError(f"{what} {value!r} is not one of {', '.join(allowed)}")


def _existing_file(value: str, what: str) -> str:
    """A reference to a secret or image is a path that must exist now, not later at use."""
    _check_text(value, what, PATH_COLUMN_MAX, required=True)
    path = Path(value).expanduser()
    if not path.is_file():
        # no echo: someone may have pasted the secret itself instead of its path
        raise ValidationError(f"{what} must be the path of an existing file")
    resolved = str(path.resolve())
    if len(resolved) > PATH_COLUMN_MAX:
        raise ValidationError(f"{what} path must be at most {PATH_COLUMN_MAX} characters")
    return resolved


def _unique(session: Session, column: InstrumentedAttribute[Any], value: object, what: str) -> None:
    if session.scalar(select(func.count()).where(column == value)):
        raise ConflictError(f"{what} {value!r} already exists")


def _insert(session: Session, row: M, what: str) -> M:
    """Insert in a savepoint so a concurrent duplicate becomes a ConflictError, not a crash."""
    try:
        with session.begin_nested():
            session.add(row)
    except IntegrityError:
        raise ConflictError(
            f"{what} conflicts with an existing row (added concurrently?)"
        ) from None
    return row


# --- addresses and URIs --------------------------------------------------------------


def check_address(address: str) -> str:
    """An IPv4 address or a DNS host name: it is put into ping, SSH and libvirt URIs."""
    if not isinstance(address, str) or not address:
        raise ValidationError("host address must not be empty")
    if is_valid_ipv4(address):
        return address
    labels = address.split(".")
    if (
        len(address) > 253
        or not all(_DNS_LABEL_RE.fullmatch(label) for label in labels)
        or all(label.isdigit() for label in labels)
    ):
        raise ValidationError(
            f"host address {address!r} is neither an IPv4 address nor a host name"
        )
    return address


def check_libvirt_uri(uri: str) -> str:
    """Refuse URIs libvirt would misread, that point at something other than a hypervisor,
    or whose query turns libvirt's checks off or runs programs (drivers/uri.py)."""
    _check_text(uri, "libvirt URI", PATH_COLUMN_MAX, required=True)
    allow_test = get_settings().general.allow_test_hypervisors
    if (problem := uri_problem(uri, allow_test=allow_test)) is not None:
        raise ValidationError(f"libvirt URI {uri!r}: {problem}")
    return uri


def default_libvirt_uri(
    address: str, ssh_user: str, ssh_port: int = 22, ssh_key_ref: str | None = None
) -> str:
    """qemu+ssh to the host, carrying the port and key so the URI alone is enough to connect."""
    netloc = f"{ssh_user}@{address}" + (f":{ssh_port}" if ssh_port != 22 else "")
    query = f"keyfile={quote(ssh_key_ref, safe='/')}" if ssh_key_ref else ""
    return urlunsplit(("qemu+ssh", netloc, "/system", query, ""))


# --- hosts ---------------------------------------------------------------------------


def parse_host_status(value: C.HostStatus | int | str) -> C.HostStatus:
    """Accept 'up', 'DOWN', 2 or HostStatus.UP, as front doors receive them differently."""
    if isinstance(value, str):
        name = value.strip().upper()
        if name in C.HostStatus.__members__:
            return C.HostStatus[name]
        if name.isascii() and name.isdigit() and len(name) < 10:
            value = int(name)
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return C.HostStatus(value)
        except ValueError:
            pass
    names = ", ".join(s.name.lower() for s in C.HostStatus)
    raise ValidationError(f"host status {value!r} is not one of {names}")


def parse_host_type(value: C.HostType | str) -> C.HostType:
    return C.HostType(_choice(value, "host type", tuple(t.value for t in C.HostType)))


@guarded(Action.HOST_MANAGE)
def add_host(
    session: Session,
    actor: Actor,
    *,
    name: str,
    address: str,
    cpus: int,
    ram_gb: int,
    hdd_gb: int = 0,
    libvirt_uri: str | None = None,
    ssh_user: str = "root",
    ssh_port: int = 22,
    ssh_key_ref: str | None = None,
    mac_addr: str | None = None,
    host_type: C.HostType | str = C.HostType.PHYSICAL,
    category: str | None = None,
    status: C.HostStatus | int | str = C.HostStatus.DOWN,
) -> Host:
    """Register a host; it starts DOWN until host sanity (or the admin) sees it up."""
    check_safe_name(name, "host name", C.HOST_NAME_MAX)
    address = check_address(address)
    check_int(cpus, "CPUs", *C.HOST_CPUS_RANGE)
    check_int(ram_gb, "RAM (GB)", *C.HOST_RAM_GB_RANGE)
    check_int(hdd_gb, "HDD (GB)", *C.HOST_HDD_GB_RANGE)
    check_int(ssh_port, "SSH port", *C.PORT_RANGE)
    if (
        not isinstance(ssh_user, str)
        or not 0 < len(ssh_user) <= SSH_USER_MAX
        or not _SSH_USER_RE.fullmatch(ssh_user)
    ):
        raise ValidationError(f"SSH user {ssh_user!r} is not a valid user name")
    key = _existing_file(ssh_key_ref, "SSH key file") if ssh_key_ref else None
    mac = normalize_mac(mac_addr) if mac_addr else None
    kind = parse_host_type(host_type)
    state = parse_host_status(status)
    category = _check_text(category, "category", CATEGORY_MAX) or None
    if libvirt_uri:
        uri = check_libvirt_uri(libvirt_uri)
    else:
        uri = check_libvirt_uri(default_libvirt_uri(address, ssh_user, ssh_port, key))

    _unique(session, Host.host_name, name, "host")
    # two rows on one hypervisor would count its capacity and its VMs twice
    _unique(session, Host.libvirt_uri, uri, "host with libvirt URI")
    if mac:
        _unique(session, Host.mac_addr, mac, "host with MAC")
    host = Host(
        host_name=name,
        address=address,
        CPUs=cpus,
        RAM=ram_gb,
        HDD=hdd_gb,
        libvirt_uri=uri,
        ssh_user=ssh_user,
        ssh_port=ssh_port,
        ssh_key_ref=key,
        mac_addr=mac,
        host_type=kind.value,
        category=category,
        status=int(state),
    )
    return _insert(session, host, f"host {name!r}")


@guarded(Action.HOST_READ)
def list_hosts(
    session: Session, actor: Actor, *, after: int | None = None, limit: int | None = None
) -> Page[Host]:
    """Hosts by id, one query a page (no limit: all of them)."""
    with paused_gc():  # thousands of rows at once (see baadal.gcpause)
        rows = session.scalars(keyset(select(Host), Host.id, after, limit)).all()
    return Page.of(rows, limit, lambda h: h.id)


@guarded(Action.HOST_READ)
def get_host(session: Session, actor: Actor, name_or_id: str | int) -> Host:
    return lookup.host(session, name_or_id)


@guarded(Action.HOST_MANAGE)
def set_host_status(
    session: Session, actor: Actor, name_or_id: str | int, status: C.HostStatus | int | str
) -> Host:
    state = parse_host_status(status)
    host = lookup.host(session, name_or_id)
    host.status = int(state)
    session.flush()
    return host


@guarded(Action.HOST_MANAGE)
def remove_host(session: Session, actor: Actor, name_or_id: str | int) -> None:
    """Refused while VMs live there: their rows would point at nothing."""
    host = lookup.host(session, name_or_id)
    vms = session.scalar(select(func.count()).select_from(VM).where(VM.host_id == host.id)) or 0
    if vms:
        raise ConflictError(
            f"host {host.host_name!r} still has {vms} VM(s): migrate or delete them first"
        )
    consoles = session.scalars(select(VncAccess).where(VncAccess.host_id == host.id)).all()
    if any(v.status != "inactive" for v in consoles):
        raise ConflictError(f"host {host.host_name!r} still has active VNC console access")
    for record in consoles:  # expired console grants only name the host; they go with it
        session.delete(record)
    session.delete(host)
    session.flush()


# --- datastores ----------------------------------------------------------------------


def datastore_directories(settings: Settings) -> tuple[str, ...]:
    """The sub-directories every datastore carries (the seed's constants-table paths)."""
    p = settings.paths
    return (
        p.vms,
        p.templates_dir,
        p.extra_disks_dir,
        p.archives_dir,
        p.vm_migration_data,
        p.vm_rrds_dir,
    )


def ensure_datastore_layout(settings: Settings, mount_point: Path) -> list[Path]:
    """Create the standard directories (again, harmlessly) and return them."""
    made = []
    for name in datastore_directories(settings):
        directory = mount_point / name.strip("/")
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ValidationError(f"cannot create {directory}: {exc.strerror}") from None
        made.append(directory)
    return made


def _mount_point(value: str) -> Path:
    """The mount point as one canonical path: '/a/../ds', '/ds/' and a symlink to /ds are
    all /ds, so one mount can never be registered (and its capacity counted) twice."""
    _check_text(value, "mount point", PATH_COLUMN_MAX, required=True)
    if not Path(value).is_absolute():
        raise ValidationError(f"mount point {value!r} must be an absolute path")
    mount = Path(value).resolve()
    if not mount.exists():
        raise ValidationError(f"mount point {value} does not exist: mount the datastore first")
    if not mount.is_dir():
        raise ValidationError(f"mount point {value} is not a directory")
    if len(str(mount)) > PATH_COLUMN_MAX:
        raise ValidationError(f"mount point path must be at most {PATH_COLUMN_MAX} characters")
    return mount


def _check_mount_free(session: Session, mount: Path) -> None:
    """Compare with the stored mount points resolved too: rows written before they were
    normalised may still hold '/a/../ds'."""
    for name, stored in session.execute(select(Datastore.ds_name, Datastore.system_mount_point)):
        if Path(stored).resolve() == mount:
            raise ConflictError(f"datastore {name!r} already uses mount point {mount}")


@guarded(Action.DATASTORE_MANAGE)
def add_datastore(
    session: Session,
    actor: Actor,
    *,
    name: str,
    mount_point: str,
    capacity_gb: int,
    path: str | None = None,
    ds_ip: str | None = None,
    username: str = "",
    password_ref: str | None = None,
    settings: Settings | None = None,
) -> Datastore:
    """Register a mounted datastore and lay out its directories."""
    settings = settings or get_settings()
    check_safe_name(name, "datastore name", DATASTORE_NAME_MAX)
    check_int(capacity_gb, "datastore capacity (GB)", *C.DATASTORE_CAPACITY_GB_RANGE)
    mount = _mount_point(mount_point)
    export = _check_text(path, "datastore path", DATASTORE_PATH_MAX) or str(mount)
    if ds_ip and not is_valid_ipv4(ds_ip):
        raise ValidationError(f"datastore IP {ds_ip!r} is not a valid IPv4 address")
    username = _check_text(username, "datastore user name", PATH_COLUMN_MAX)
    secret = _existing_file(password_ref, "password file") if password_ref else None

    _unique(session, Datastore.ds_name, name, "datastore")
    _check_mount_free(session, mount)
    ensure_datastore_layout(settings, mount)
    datastore = Datastore(
        ds_name=name,
        ds_ip=ds_ip or None,
        capacity=capacity_gb,
        username=username,
        password_ref=secret,
        path=export,
        used=0,
        system_mount_point=str(mount),
    )
    return _insert(session, datastore, f"datastore {name!r}")


@guarded(Action.DATASTORE_READ)
def list_datastores(
    session: Session, actor: Actor, *, after: int | None = None, limit: int | None = None
) -> Page[Datastore]:
    """Datastores by id, one query a page (no limit: all of them)."""
    rows = session.scalars(keyset(select(Datastore), Datastore.id, after, limit)).all()
    return Page.of(rows, limit, lambda d: d.id)


@guarded(Action.DATASTORE_READ)
def get_datastore(session: Session, actor: Actor, name_or_id: str | int) -> Datastore:
    return lookup.datastore(session, name_or_id)


# --- templates -----------------------------------------------------------------------


def templates_dir(settings: Settings, datastore: Datastore) -> Path:
    return Path(datastore.system_mount_point) / settings.paths.templates_dir.strip("/")


def _template_relative(value: str, what: str) -> str:
    """A path below the templates dir: relative, no '..', stored in POSIX form."""
    _check_text(value, what, PATH_COLUMN_MAX, required=True)
    rel = PurePosixPath(value)
    if rel.is_absolute():
        raise ValidationError(f"{what} {value!r} must be relative to the templates directory")
    if ".." in rel.parts:
        raise ValidationError(f"{what} {value!r} must not contain '..'")
    if str(rel) in ("", "."):
        raise ValidationError(f"{what} must name a file")
    return str(rel)


def _template_file(base: Path, relative: str, what: str) -> None:
    """Resolved like the VM code resolves it, so a symlink out of the dir is refused now."""
    path = (base / relative).resolve()
    if base.resolve() not in path.parents:
        raise ValidationError(f"{what} {relative!r} resolves outside {base}")
    if not path.is_file():
        raise NotFoundError(f"{what} {relative!r} not found in {base}")


@guarded(Action.TEMPLATE_MANAGE)
def add_template(
    session: Session,
    actor: Actor,
    *,
    name: str,
    datastore: str | int,
    hdfile: str,
    os_version: str,
    hdd_gb: int,
    os: str = "Linux",
    os_name: str = "Others",
    os_type: str = "Server",
    arch: str = "amd64",
    disk_type: str = "QCOW2",
    tag: str | None = None,
    boot_kernel: str | None = None,
    boot_initrd: str | None = None,
    boot_cmdline: str | None = None,
    settings: Settings | None = None,
) -> Template:
    """Register a template image already on a datastore (public: no owners)."""
    settings = settings or get_settings()
    check_safe_name(name, "template name", TEMPLATE_NAME_MAX)
    image = _template_relative(hdfile, "template image")
    os_version = _check_text(os_version, "OS version", OS_VERSION_MAX, required=True)
    check_int(hdd_gb, "template HDD (GB)", *C.TEMPLATE_HDD_GB_RANGE)
    os = _choice(os, "OS", TEMPLATE_OS)
    os_name = _choice(os_name, "OS name", TEMPLATE_OS_NAMES)
    os_type = _choice(os_type, "OS type", TEMPLATE_OS_TYPES)
    arch = _choice(arch, "architecture", TEMPLATE_ARCHES)
    disk_type = _choice(disk_type, "disk type", TEMPLATE_DISK_TYPES)
    tag = _check_text(tag, "tag", TAG_MAX) or None
    kernel = _template_relative(boot_kernel, "boot kernel") if boot_kernel else None
    initrd = _template_relative(boot_initrd, "boot initrd") if boot_initrd else None
    cmdline = _check_text(boot_cmdline, "boot command line", PATH_COLUMN_MAX) or None
    if (initrd or cmdline) and not kernel:
        raise ValidationError("boot initrd and command line need a boot kernel")

    store = lookup.datastore(session, datastore)
    base = templates_dir(settings, store)
    _template_file(base, image, "template image")
    if kernel:
        _template_file(base, kernel, "boot kernel")
    if initrd:
        _template_file(base, initrd, "boot initrd")
    _unique(session, Template.name, name, "template")
    template = Template(
        name=name,
        os=os,
        os_name=os_name,
        os_version=os_version,
        os_type=os_type,
        arch=arch,
        hdd=hdd_gb,
        hdfile=image,
        type=disk_type,
        tag=tag,
        datastore_id=store.id,
        is_active=True,
        boot_kernel=kernel,
        boot_initrd=initrd,
        boot_cmdline=cmdline,
    )
    return _insert(session, template, f"template {name!r}")


@guarded(Action.TEMPLATE_LIST)
def list_templates(
    session: Session,
    actor: Actor,
    *,
    active_only: bool = False,
    after: int | None = None,
    limit: int | None = None,
) -> Page[Template]:
    """Public templates and the actor's own (admins: all), by id, in two queries a page
    (no limit: all of them)."""
    require(session, actor, Action.TEMPLATE_LIST)
    # the portal's table shows each one's datastore and whether it is private
    query = (
        select(Template)
        .where(template_filter(actor))
        .options(joinedload(Template.datastore), selectinload(Template.owners))
    )
    if active_only:
        query = query.where(Template.is_active.is_(True))
    rows = session.scalars(keyset(query, Template.id, after, limit)).all()
    return Page.of(rows, limit, lambda t: t.id)


@guarded(Action.TEMPLATE_LIST)
def get_template(session: Session, actor: Actor, name_or_id: str | int) -> Template:
    template = lookup.template(session, name_or_id)
    require(session, actor, Action.TEMPLATE_LIST, template, f"template {template.name}")
    return template


@guarded(Action.TEMPLATE_MANAGE)
def deactivate_template(session: Session, actor: Actor, name_or_id: str | int) -> Template:
    """Hide a template from new requests; VMs made from it keep their reference."""
    template = lookup.template(session, name_or_id)
    template.is_active = False
    session.flush()
    return template


# --- settings ------------------------------------------------------------------------

REDACTED = "***"
#: words that make a setting's value a secret (matched against '_'-separated parts)
_SECRET_WORDS = frozenset(
    {"password", "passwd", "pwd", "secret", "token", "key", "credential", "credentials", "login"}
)
#: suffixes naming where a secret lives rather than the secret itself
_REFERENCE_SUFFIXES = ("_file", "_ref", "_path")


def is_secret_setting(key: str) -> bool:
    """nat_ssh_key, mail login (web2py 'user:password'), any *password*: hidden."""
    lowered = key.lower()
    if lowered.endswith(_REFERENCE_SUFFIXES):
        return False
    return bool(_SECRET_WORDS.intersection(lowered.split("_")))


def _redact(data: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, Mapping):
            out[key] = _redact(value)
        elif isinstance(value, str):
            if is_secret_setting(key) and value:
                out[key] = REDACTED
            else:
                # a URL stays readable, without its password (database and LDAP URLs)
                out[key] = redact_url(value) if "://" in value else value
        elif isinstance(value, list) and is_secret_setting(key):
            out[key] = [REDACTED for _ in value]
        else:
            out[key] = value
    return out


@guarded(Action.SYSTEM_MANAGE, reads=True)
def settings_as_dict(actor: Actor, settings: Settings, redact: bool = True) -> dict[str, Any]:
    """The effective settings as plain data; secrets replaced by '***' unless told not to."""
    data = settings.model_dump(mode="json")
    return _redact(data) if redact else data
