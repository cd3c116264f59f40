"""Schema migrations through Alembic, driven from code (``baadal db upgrade``)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect
from sqlalchemy.exc import OperationalError

from baadal.db.seed import seed_reference_data
from baadal.db.session import session_scope
from baadal.errors import ConfigError

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
SCHEMA_MISSING = "database not initialised: run `baadal db upgrade`"


def alembic_config(engine: Engine | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if engine is not None:
        cfg.attributes["engine"] = engine
    return cfg


def head_revision() -> str:
    """The newest revision this code knows (one head: migrations are linear)."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head() or ""


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to ``revision`` and load the reference rows (idempotent)."""
    command.upgrade(alembic_config(engine), revision)
    with session_scope(engine) as session:
        seed_reference_data(session)


def current_revision(engine: Engine) -> str | None:
    if not inspect(engine).has_table("alembic_version"):
        return None
    with engine.connect() as conn:
        row = conn.exec_driver_sql("SELECT version_num FROM alembic_version").first()
    return row[0] if row else None


def schema_revisions(engine: Engine) -> tuple[str | None, tuple[str, ...]]:
    """(the database's revision, the revisions this code knows as newest)."""
    heads = ScriptDirectory.from_config(alembic_config(engine)).get_heads()
    try:
        current = current_revision(engine)
    except OperationalError as exc:
        where = engine.url.render_as_string(hide_password=True)
        reason = str(exc.orig).splitlines()[0] if exc.orig else type(exc).__name__
        raise ConfigError(f"cannot open database {where}: {reason}") from None
    return current, tuple(heads)


def require_schema(engine: Engine) -> str:
    """Fail with one line before a command trips over missing or old tables."""
    current, heads = schema_revisions(engine)
    if current is None:
        raise ConfigError(SCHEMA_MISSING)
    if current not in heads:
        raise ConfigError(
            f"database schema is at revision {current}, this Baadal needs"
            f" {', '.join(heads)}: run `baadal db upgrade`"
        )
    return current
