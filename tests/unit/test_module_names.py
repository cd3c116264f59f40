"""No two modules with one name: a name says which room a module is in (``vm_commands`` is
the door, ``services.vms`` the service), so a traceback, a log line or a grep never leaves
the reader guessing which of three ``vms.py`` is meant."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "baadal"
#: names every package has by its nature
SHARED_NAMES = {"__init__.py", "__main__.py"}


def clashes(root: Path) -> dict[str, list[str]]:
    """Every module file name used more than once under ``root``, with its paths."""
    found: dict[str, list[str]] = defaultdict(list)
    for path in sorted(root.rglob("*.py")):
        if path.name not in SHARED_NAMES:
            found[path.name].append(str(path.relative_to(root)))
    return {name: paths for name, paths in found.items() if len(paths) > 1}


def test_module_names_are_unique() -> None:
    problems = [f"{name}: {', '.join(paths)}" for name, paths in sorted(clashes(PACKAGE).items())]
    assert not problems, "modules sharing a name:\n" + "\n".join(problems)


def test_a_clash_is_found(tmp_path: Path) -> None:
    for path in ("a/vms.py", "b/vms.py", "a/__init__.py", "b/__init__.py", "c/other.py"):
        (tmp_path / path).parent.mkdir(exist_ok=True)
        (tmp_path / path).touch()
    assert clashes(tmp_path) == {"vms.py": ["a/vms.py", "b/vms.py"]}
