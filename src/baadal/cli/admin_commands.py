"""``baadal db ...`` (schema) and ``baadal config show`` (the effective settings)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import typer

from baadal.cli.door import console, current_actor, handle_errors, print_table
from baadal.config import config_file_path, get_settings
from baadal.services import inventory, system

db_app = typer.Typer(help="Database schema: create, upgrade, inspect.", no_args_is_help=True)
config_app = typer.Typer(help="Settings in effect.", no_args_is_help=True)


@db_app.command("upgrade")
@handle_errors
def upgrade_cmd() -> None:
    """Create or upgrade the schema and load the reference rows (safe to repeat)."""
    schema = system.upgrade_schema(get_settings(), current_actor())
    console.print(
        f"database {schema.database} is at revision {schema.current}",
        highlight=False,
        markup=False,
    )


@db_app.command("status")
@handle_errors
def status_cmd() -> None:
    """Which database, its schema revision, and whether it needs `baadal db upgrade`."""
    schema = system.schema_state(get_settings(), current_actor())
    lines = [
        f"database: {schema.database}",
        f"revision: {schema.current or 'none'}",
        f"latest:   {', '.join(schema.heads)}",
        f"state:    {schema.state}",
    ]
    for line in lines:
        console.print(line, highlight=False, markup=False)


@db_app.command("check")
@handle_errors
def check_cmd() -> None:
    """List stored names, MACs, addresses and paths holding control characters (a
    trailing newline from before input was matched in full); exit 1 if there are any."""
    problems = system.stored_text_problems(get_settings(), current_actor())
    if not problems:
        console.print("no stored name, MAC, address or path holds a control character")
        return
    print_table(
        "Stored values with control characters (correct or remove these rows)",
        ["table", "row", "column", "value"],
        [(p.table, p.row_id, p.column, p.value) for p in problems],
    )
    raise typer.Exit(1)


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
    data = inventory.settings_as_dict(current_actor(), get_settings(), redact=True)
    source = str(path) if path else "none (defaults + environment)"
    # plain echo: Rich would wrap long values and read [section] headers as markup
    typer.echo(f"# config file: {source}")
    typer.echo("\n".join(render_toml(data)))
