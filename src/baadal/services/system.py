"""The database for the doors: where its schema stands, upgrading it (thin, guarded
wrappers over :mod:`baadal.db.schema`), and checking the rows already stored. These take
the settings, not a session: the schema may not exist yet."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import inspect, select
from sqlalchemy.orm import InstrumentedAttribute

from baadal.config import Settings
from baadal.db import schema
from baadal.db.models import (
    VM,
    Datastore,
    Host,
    Organisation,
    PrivateIpPool,
    PublicIpPool,
    SecurityDomain,
    Snapshot,
    Template,
    User,
    Vlan,
)
from baadal.db.session import get_engine, session_scope
from baadal.net.validators import has_control_chars
from baadal.services.policy import Action, Actor, guarded


@dataclass(frozen=True)
class SchemaState:
    """Which database, its schema revision and the newest this code knows."""

    database: str  # its URL, password hidden
    current: str | None
    heads: tuple[str, ...]

    @property
    def state(self) -> str:
        if self.current is None:
            return schema.SCHEMA_MISSING
        if self.current in self.heads:
            return "up to date"
        return "needs upgrade: run `baadal db upgrade`"


@guarded(Action.SYSTEM_MANAGE, reads=True)
def schema_state(settings: Settings, actor: Actor) -> SchemaState:
    engine = get_engine(settings)
    current, heads = schema.schema_revisions(engine)
    return SchemaState(engine.url.render_as_string(hide_password=True), current, heads)


@guarded(Action.SYSTEM_MANAGE)
def upgrade_schema(settings: Settings, actor: Actor) -> SchemaState:
    """Create or upgrade the schema and load the reference rows (safe to repeat)."""
    schema.upgrade(get_engine(settings))
    return schema_state(settings, actor)


#: stored names, addresses and paths that end up in files (DHCP hosts, NAT rules),
#: commands, URIs and terminal lines: before full-match validation a trailing newline
#: (or any control character) could get into them
CHECKED_COLUMNS: tuple[InstrumentedAttribute[str | None], ...] = (
    Organisation.name,
    User.username,
    User.email,
    User.first_name,
    User.last_name,
    Vlan.name,
    Vlan.vlan_addr,
    SecurityDomain.name,
    PublicIpPool.public_ip,
    PrivateIpPool.private_ip,
    PrivateIpPool.mac_addr,
    Host.host_name,
    Host.address,
    Host.libvirt_uri,
    Host.ssh_user,
    Host.ssh_key_ref,
    Host.mac_addr,
    Host.bmc_address,
    Host.category,
    Datastore.ds_name,
    Datastore.system_mount_point,
    Datastore.path,
    Datastore.username,
    Template.name,
    Template.hdfile,
    Template.boot_kernel,
    Template.boot_initrd,
    Template.boot_cmdline,
    VM.vm_name,
    VM.vm_identity,
    VM.purpose,
    Snapshot.snapshot_name,
    Snapshot.path,
)


@dataclass(frozen=True)
class StoredTextProblem:
    """One stored value holding a control character, for an admin to correct."""

    table: str
    row_id: str
    column: str
    #: the value with its control characters escaped (safe to print)
    value: str


@guarded(Action.SYSTEM_MANAGE, reads=True)
def stored_text_problems(settings: Settings, actor: Actor) -> list[StoredTextProblem]:
    """Rows whose names, MACs, addresses or paths hold control characters (stored before
    input was matched in full): each breaks the DHCP file, a NAT rule or a command."""
    engine = get_engine(settings)
    schema.require_schema(engine)
    found = []
    with session_scope(engine) as session:
        for column in CHECKED_COLUMNS:
            model = column.class_
            keys = inspect(model).primary_key
            query = select(column, *keys).where(column.is_not(None)).order_by(*keys)
            for value, *ids in session.execute(query):
                if has_control_chars(value):
                    row_id = ",".join(str(i) for i in ids)
                    found.append(
                        StoredTextProblem(model.__tablename__, row_id, column.key, repr(value))
                    )
    return found
