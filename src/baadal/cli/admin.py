"""``baadal db ...`` (schema) and ``baadal config show`` (the effective settings)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import typer

from baadal.cli.common import console, handle_errors
from baadal.config import config_file_path, get_settings
from baadal.db import migrate
from baadal.db.migrate import SCHEMA_MISSING, schema_revisions
from baadal.db.session import get_engine
from baadal.services import inventory

db_app = typer.Typer(help="Database schema: create, upgrade, inspect.", no_args_is_help=True)
config_app = typer.Typer(help="Settings in effect.", no_args_is_help=True)


def _database_label() -> str:
    return get_engine().url.render_as_string(hide_password=True)


@db_app.command("upgrade")
@handle_errors
def upgrade_cmd() -> None:
    """Create or upgrade the schema and load the reference rows (safe to repeat)."""
    engine = get_engine()
    migrate.upgrade(engine)
    console.print(
        f"database {_database_label()} is at revision {migrate.current_revision(engine)}",
        highlight=False,
        markup=False,
    )


@db_app.command("status")
@handle_errors
def status_cmd() -> None:
    """Which database, its schema revision, and whether it needs `baadal db upgrade`."""
    current, heads = schema_revisions(get_engine())
    if current is None:
        state = SCHEMA_MISSING
    elif current in heads:
        state = "up to date"
    else:
        state = "needs upgrade: run `baadal db upgrade`"
    lines = [
        f"database: {_database_label()}",
        f"revision: {current or 'none'}",
        f"latest:   {', '.join(heads)}",
        f"state:    {state}",
    ]
    for line in lines:
        console.print(line, highlight=False, markup=False)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value))  # TOML basic strings share JSON's escapes


def render_toml(data: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Settings as TOML, so the output can seed a baadal.toml."""
    lines = [f"{key} = {_toml_value(v)}" for key, v in data.items() if not isinstance(v, Mapping)]
    for key, value in data.items():
        if isinstance(value, Mapping):
            name = f"{prefix}{key}"
            lines += ["", f"[{name}]", *render_toml(value, f"{name}.")]
    return lines


@config_app.command("show")
@handle_errors
def show_cmd() -> None:
    """Print the effective settings (file + environment); secrets show as ***."""
    path = config_file_path()
    data = inventory.settings_as_dict(get_settings(), redact=True)
    source = str(path) if path else "none (defaults + environment)"
    # plain echo: Rich would wrap long values and read [section] headers as markup
    typer.echo(f"# config file: {source}")
    typer.echo("\n".join(render_toml(data)))
