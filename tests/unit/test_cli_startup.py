"""The CLI starts fast: ``baadal --help`` imports no command module and none of the heavy
libraries; each command imports what it needs when it runs."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator

import click
import pytest
from typer.testing import CliRunner

from baadal import constants as C
from baadal.cli.main import COMMANDS, app, load_command
from baadal.config import Settings
from baadal.db.models import Host
from baadal.db.schema import upgrade
from baadal.db.session import get_engine, session_scope

pytestmark = pytest.mark.unit

HEAVY = (
    "libvirt",
    "paramiko",
    "fastapi",
    "pydantic",
    "sqlalchemy",
    "lxml",
    "rrdtool",
    "alembic",
    "baadal.db.models",
    "baadal.services",
)

_PROBE = """
import sys
sys.argv = ["baadal", "--help"]
import baadal.cli.main
try:
    baadal.cli.main.app()
except SystemExit:
    pass
print(" ".join(sorted(sys.modules)))
"""


def test_help_imports_no_heavy_module() -> None:
    run = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True)
    loaded = set(run.stdout.split("\n")[-2].split())
    assert "typer" in loaded
    assert not [m for m in loaded if m.split(".")[0] in HEAVY or m.startswith(HEAVY)]
    assert not [m for m in loaded if m.startswith("baadal.cli.") and m != "baadal.cli.main"]


def test_the_listed_help_is_each_commands_own() -> None:
    for name, (_, _, listed) in COMMANDS.items():
        assert load_command(name).help == listed, name


def _helps(command: click.Command) -> Iterator[tuple[str, str]]:
    yield command.name or "", command.help or ""
    for param in command.params:
        yield f"{command.name} {param.name}", getattr(param, "help", None) or ""
    for sub in getattr(command, "commands", {}).values():
        yield from _helps(sub)


def test_no_help_text_is_eaten_as_rich_markup() -> None:
    """Rich reads ``[web]`` in a help text as a style and prints nothing for it ("Serve
    the API at  host:port"): settings are named ``web.host`` in help texts."""
    for name in COMMANDS:
        for where, text in _helps(load_command(name)):
            assert not re.search(r"\[[a-z_/]+\]", text), f"{where}: {text}"


def test_a_lazy_command_runs_and_shows_its_help() -> None:
    result = CliRunner().invoke(app, ["task", "--help"])
    assert result.exit_code == 0
    assert "retry" in result.output
    unknown = CliRunner().invoke(app, ["nosuch"])
    assert unknown.exit_code == 2


_COMMAND_PROBE = """
import sys
sys.argv = ["baadal", *sys.argv[1:]]
import baadal.cli.main
try:
    baadal.cli.main.app()
except SystemExit as exc:
    assert not exc.code, exc.code
print(" ".join(sorted(sys.modules)))
"""

#: what a command that only reads never needs: SSH, the migrations, the rotating log
#: handler (until something is logged), progress bars, the maintenance and host code, the
#: VM code (libvirt and its XML, the RRD files), the task queue, password hashing, the
#: web and API frameworks, and the PostgreSQL driver on SQLite
NOT_FOR_READS = ("paramiko", "alembic", "concurrent_log_handler", "portalocker", "rich.progress",
                 "baadal.host.maintenance", "libvirt", "lxml", "rrdtool", "baadal.vm.install",
                 "baadal.monitor", "baadal.tasks.queue", "argon2", "jinja2", "fastapi",
                 "psycopg")  # fmt: skip


@pytest.mark.parametrize("argv", [["status"], ["host", "list"], ["vm", "list", "--limit", "5"]])
def test_reads_start_without_ssh_migrations_or_log_rotation(
    settings: Settings, argv: list[str]
) -> None:
    upgrade(get_engine(settings))
    run = subprocess.run(
        [sys.executable, "-c", _COMMAND_PROBE, *argv], capture_output=True, text=True, check=True
    )
    loaded = set(run.stdout.split("\n")[-2].split())
    assert "baadal.services" in loaded
    assert not [m for m in loaded if m.startswith(NOT_FOR_READS)], argv
    if argv == ["host", "list"]:
        assert "baadal.services.hosts" not in loaded
    if argv != ["vm", "list", "--limit", "5"]:  # no driver: not the fake one, nor lxml
        assert not [m for m in loaded if m.startswith(("baadal.drivers.fake", "lxml"))], argv


def test_a_long_list_is_printed_without_rich(settings: Settings) -> None:
    """Past C.CLI_RICH_TABLE_MAX_ROWS rows a list is plain text, and Rich is not even
    imported (0.02 s of every `host list` and `vm list --limit 100` of a large cloud)."""
    engine = get_engine(settings)
    upgrade(engine)
    count = C.CLI_RICH_TABLE_MAX_ROWS + 2  # a page one row longer than a Rich table
    with session_scope(engine) as s:
        s.add_all(
            Host(host_name=f"h{i}", address=f"10.0.0.{i}", CPUs=8, libvirt_uri="test:///default")
            for i in range(count)
        )
    run = subprocess.run(
        [sys.executable, "-c", _COMMAND_PROBE, "host", "list", "--limit", str(count - 1)],
        capture_output=True,
        text=True,
        check=True,
    )
    *printed, loaded = run.stdout.rstrip("\n").split("\n")
    assert f"h{count - 2} " in "\n".join(printed) and printed[-1] == f"more: --after {count - 1}"
    assert not [m for m in loaded.split() if m.startswith("rich")]
