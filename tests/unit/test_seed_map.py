"""docs/seed-map.md stays true when modules move: every ``src/...py:function`` it names is
defined there, every ``tests/...py::test`` exists, and every row is ``done``."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
SEED_MAP = ROOT / "docs" / "seed-map.md"
#: ``src/baadal/x.py:name`` anywhere in the map, or a path alone
WHERE = re.compile(r"(src/baadal/[\w/]+\.py)(?::(\w+))?")
TEST = re.compile(r"(tests/[\w/]+\.py)(?:::(\w+))?")


def _defines(path: Path, name: str) -> bool:
    return (
        re.search(rf"^(?:async def|def|class) {name}\b|^{name}\b.*=", path.read_text(), re.M)
        is not None
    )


def stale_references(text: str, root: Path) -> list[str]:
    """The code and test references in ``text`` that do not exist under ``root``."""
    stale = []
    for pattern in (WHERE, TEST):
        for match in pattern.finditer(text):
            path, name = root / match.group(1), match.group(2)
            if not path.is_file() or (name and not _defines(path, name)):
                stale.append(match.group(0))
    return stale


def test_every_reference_exists() -> None:
    stale = stale_references(SEED_MAP.read_text(), ROOT)
    assert not stale, "docs/seed-map.md names what is not there:\n" + "\n".join(stale)


def test_every_row_is_done() -> None:
    rows = [line for line in SEED_MAP.read_text().splitlines() if line.startswith("| ")]
    statuses = {line.rstrip(" |").rsplit("|", 1)[1].strip() for line in rows}
    assert statuses == {"done", "status"}, statuses  # "status": the header rows


def test_a_moved_function_is_found(tmp_path: Path) -> None:
    (tmp_path / "src/baadal/host").mkdir(parents=True)
    (tmp_path / "src/baadal/host/domains.py").write_text("def get_host_domains(): ...\n")
    text = "`src/baadal/host/domains.py:get_host_domains`, `src/baadal/host/vms.py:has_running_vm`"
    assert stale_references(text, tmp_path) == ["src/baadal/host/vms.py:has_running_vm"]
