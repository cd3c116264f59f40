"""The lab for the doors: a whole cloud on this machine (up, down, status), the tiny guest
template and the demo's proof that a VM answers (thin, guarded wrappers over
:mod:`baadal.lab`)."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from baadal import constants as C
from baadal.auth import accounts, roles
from baadal.config import Settings
from baadal.db.models import Organisation, Template, User
from baadal.db.seed import ADMIN_ORGANISATION
from baadal.db.session import session_scope
from baadal.errors import ConflictError
from baadal.files import write_atomically
from baadal.home import TINY_GUEST_ENTRY, open_for_lab, private_dir
from baadal.lab import layout, topology
from baadal.lab.guest import TinyGuest, build_tiny_guest
from baadal.lab.topology import Part, UpResult
from baadal.net.ping import is_pingable
from baadal.services import inventory, lookup
from baadal.services.policy import Action, Actor, guarded

#: the portal's demo accounts, one per role: (username, role, organisation); the
#: student, faculty member and orgadmin share an organisation so a request walks through
DEMO_ORGANISATION = "DEMO"
DEMO_ACCOUNTS = (
    ("student", C.Role.USER, DEMO_ORGANISATION),
    ("faculty", C.Role.FACULTY, DEMO_ORGANISATION),
    ("orgadmin", C.Role.ORGADMIN, DEMO_ORGANISATION),
    ("cloudadmin", C.Role.ADMIN, ADMIN_ORGANISATION),
)
#: where their passwords are kept (0600, in the home): ``username role password`` lines
DEMO_ACCOUNTS_FILE = "demo-accounts.txt"

#: the lab's compute hosts (name, libvirt URI, ...), its first security domain and template
HOSTS = layout.HOSTS
FIRST_DOMAIN = layout.VLANS[0].domain
TEMPLATE_NAME = layout.TEMPLATE_NAME


@guarded(Action.SYSTEM_MANAGE)
def build_guest(settings: Settings, actor: Actor, *, force: bool = False) -> TinyGuest:
    """Build (or reuse) the tiny bootable guest (Debian kernel + busybox) in the home,
    where the hosts' QEMU must reach its kernel (the KVM probe boots it)."""
    guest = build_tiny_guest(settings.home / TINY_GUEST_ENTRY, force=force)
    open_for_lab(settings.home)
    return guest


@guarded(Action.SYSTEM_MANAGE)
def add_guest_template(
    session: Session,
    actor: Actor,
    settings: Settings,
    *,
    datastore: str | int,
    name: str = TEMPLATE_NAME,
    force: bool = False,
) -> Template:
    """Put the tiny guest on the datastore and register it as template ``name``."""
    ds = lookup.datastore(session, datastore)
    guest = build_tiny_guest(
        inventory.templates_dir(settings, ds) / layout.TEMPLATE_DIR, force=force
    )
    return inventory.add_template(
        session,
        actor,
        name=name,
        datastore=ds.id,
        hdfile=f"{layout.TEMPLATE_DIR}/tiny-disk.qcow2",
        os_version=guest.kernel_version,
        hdd_gb=1,
        os_name="Others",
        boot_kernel=f"{layout.TEMPLATE_DIR}/vmlinuz",
        boot_initrd=f"{layout.TEMPLATE_DIR}/tiny-initrd.gz",
        boot_cmdline=guest.cmdline,
        settings=settings,
    )


@guarded(Action.SYSTEM_MANAGE)
def up(
    engine: Engine,
    actor: Actor,
    settings: Settings,
    *,
    progress: Callable[[str], None] | None = None,
) -> UpResult:
    """Build the lab (idempotent; after a crash it cleans up first) and register it."""
    return topology.up(settings, lambda: session_scope(engine), progress=progress)


@guarded(Action.SYSTEM_MANAGE)
def down(engine: Engine, actor: Actor, settings: Settings) -> list[str]:
    """Remove every namespace, process, link, bridge and file the lab made."""
    return topology.down(settings, db=lambda: session_scope(engine))


@guarded(Action.SYSTEM_MANAGE, reads=True)
def status(settings: Settings, actor: Actor) -> tuple[list[Part], bool]:
    """Each part of the lab, and whether all are healthy."""
    parts = topology.status(settings)
    return parts, topology.healthy(parts)


@guarded(Action.SYSTEM_MANAGE, reads=True)
def wait_for_ping(engine: Engine, actor: Actor, vm: str | int, timeout_s: float) -> bool:
    """True once the VM answers ping on its private address, False after ``timeout_s``
    (the demo's proof that DHCP and the network work)."""
    with session_scope(engine) as session:
        row = lookup.vm(session, vm)
        if row.private_ip is None:
            raise ConflictError(f"VM {row.vm_name} has no private address")
        ip = row.private_ip.private_ip
    deadline = time.monotonic() + timeout_s
    while not is_pingable(ip, count=1, timeout_s=1.0):
        if time.monotonic() > deadline:
            return False
    return True


@dataclass(frozen=True)
class DemoAccount:
    username: str
    role: C.Role
    password: str


def _kept_passwords(settings: Settings) -> dict[str, str]:
    path = settings.home / DEMO_ACCOUNTS_FILE
    if not path.exists():
        return {}
    kept = {}
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 3:
            kept[parts[0]] = parts[2]
    return kept


@guarded(Action.SYSTEM_MANAGE)
def demo_accounts(session: Session, actor: Actor, settings: Settings) -> list[DemoAccount]:
    """An account per role for trying the portal (run again: the same passwords, from
    the 0600 file in the home; an account changed meanwhile gets its demo password and
    role back). Only for a lab: these passwords are written down."""
    kept = _kept_passwords(settings)
    made = []
    for username, role, org_name in DEMO_ACCOUNTS:
        org = session.scalar(select(Organisation).where(Organisation.name == org_name))
        if org is None:
            org = Organisation(name=org_name, details="the portal's demo accounts")
            session.add(org)
            session.flush()
        password = kept.get(username) or secrets.token_urlsafe(12)
        user = session.scalar(select(User).where(User.username == username))
        if user is None:
            user = User(username=username, first_name="Demo", last_name=role.value.title())
            session.add(user)
        user.organisation_id = org.id
        user.password = accounts.hash_password(password)
        user.block_user = False
        user.registration_key = C.RegistrationKey.ACTIVE
        session.flush()
        roles.add_membership_db(session, user.id, [role, C.Role.USER])
        made.append(DemoAccount(username, role, password))
    lines = "".join(f"{a.username} {a.role.value} {a.password}\n" for a in made)
    write_atomically(private_dir(settings.home) / DEMO_ACCOUNTS_FILE, lines, mode=0o600)
    return made
