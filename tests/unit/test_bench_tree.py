"""The benchmarks time their own tree's code, wherever the virtualenv's editable install
points (a worktree's bench timed the main checkout's baadal before)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]

#: how a bench script starts (bench/__init__.py), run as a script is: its folder first
_START = f"""
import sys
sys.path[0] = {str(ROOT / "bench")!r}
sys.path.append("/elsewhere/src")  # another checkout's editable install
sys.path.insert(0, {str(ROOT)!r})
from bench import use_own_tree

use_own_tree()
import queue

import baadal
print(sys.path[0], baadal.__file__, queue.__file__)
"""


def test_a_bench_script_imports_its_own_tree_and_the_stdlib_queue() -> None:
    run = subprocess.run(
        [sys.executable, "-c", _START], capture_output=True, text=True, check=True, cwd="/"
    )
    first, baadal_file, queue_file = run.stdout.split()
    assert first == str(ROOT / "src")
    assert Path(baadal_file).is_relative_to(ROOT / "src")
    assert not Path(queue_file).is_relative_to(ROOT)  # not bench/queue.py


def test_every_bench_script_starts_on_its_own_tree() -> None:
    scripts = [p for p in (ROOT / "bench").glob("*.py") if p.name != "__init__.py"]
    missing = [p.name for p in scripts if "use_own_tree()" not in p.read_text()]
    assert missing == [], missing
