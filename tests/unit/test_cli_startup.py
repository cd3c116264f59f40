"""The CLI starts fast: ``baadal --help`` imports no command module and none of the heavy
libraries; each command imports what it needs when it runs."""

from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from baadal.cli.main import COMMANDS, app, load_command

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


def test_a_lazy_command_runs_and_shows_its_help() -> None:
    result = CliRunner().invoke(app, ["task", "--help"])
    assert result.exit_code == 0
    assert "retry" in result.output
    unknown = CliRunner().invoke(app, ["nosuch"])
    assert unknown.exit_code == 2
