"""Schema migrations through Alembic, driven from code (``baadal db upgrade``).

Checking that a database is current (every CLI command does it at start) does not import
Alembic and every migration: the newest revision is read from the migration files'
``revision`` / ``down_revision`` lines.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine, inspect
from sqlalchemy.exc import OperationalError

from baadal.db.seed import seed_reference_data
from baadal.db.session import session_scope
from baadal.errors import ConfigError

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
SCHEMA_MISSING = "database not initialised: run `baadal db upgrade`"


#: a migration file's ``revision = "0014"`` or ``down_revision = "0013"`` (or None) line
_REVISION_LINE = re.compile(r'^(revision|down_revision)(?::[^=\n]*)? = (?:None|"([^"\n]+)")$', re.M)


def alembic_config(engine: Engine | None = None) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if engine is not None:
        cfg.attributes["engine"] = engine
    return cfg


def alembic_heads() -> tuple[str, ...]:
    """The newest revisions as Alembic reads them (it imports every migration)."""
    from alembic.script import ScriptDirectory

    return tuple(ScriptDirectory.from_config(alembic_config()).get_heads())


def _heads_from_files() -> tuple[str, ...] | None:
    """The revisions no migration builds on, from the files' text; None when a file is
    not in the simple form (a merge's tuple, say): Alembic decides then."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in (MIGRATIONS_DIR / "versions").glob("*.py"):
        lines = {m[1]: m[2] for m in _REVISION_LINE.finditer(path.read_text(encoding="utf-8"))}
        if not lines.get("revision") or "down_revision" not in lines:
            return None
        revisions.add(lines["revision"])
        if lines["down_revision"]:
            parents.add(lines["down_revision"])
    return tuple(sorted(revisions - parents)) or None


def known_heads() -> tuple[str, ...]:
    """The newest revisions this code knows (one: migrations are linear)."""
    return _heads_from_files() or alembic_heads()


def head_revision() -> str:
    """The newest revision this code knows (one head: migrations are linear)."""
    heads = known_heads()
    return heads[0] if len(heads) == 1 else ""


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to ``revision`` and load the reference rows (idempotent)."""
    from alembic import command

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
    heads = known_heads()
    try:
        current = current_revision(engine)
    except OperationalError as exc:
        where = engine.url.render_as_string(hide_password=True)
        reason = str(exc.orig).splitlines()[0] if exc.orig else type(exc).__name__
        raise ConfigError(f"cannot open database {where}: {reason}") from None
    return current, heads


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
