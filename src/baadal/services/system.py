"""The database schema for the doors: where it stands, and upgrading it (thin, guarded
wrappers over :mod:`baadal.db.schema`). These take the settings, not a session: the
schema may not exist yet."""

from __future__ import annotations

from dataclasses import dataclass

from baadal.config import Settings
from baadal.db import schema
from baadal.db.session import get_engine
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


@guarded(Action.SYSTEM_MANAGE)
def schema_state(settings: Settings, actor: Actor) -> SchemaState:
    engine = get_engine(settings)
    current, heads = schema.schema_revisions(engine)
    return SchemaState(engine.url.render_as_string(hide_password=True), current, heads)


@guarded(Action.SYSTEM_MANAGE)
def upgrade_schema(settings: Settings, actor: Actor) -> SchemaState:
    """Create or upgrade the schema and load the reference rows (safe to repeat)."""
    schema.upgrade(get_engine(settings))
    return schema_state(settings, actor)
