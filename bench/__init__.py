"""Benchmarks: scripts run from a repository root, ``.venv/bin/python bench/<name>.py``.

Each script starts with::

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from bench import use_own_tree

    use_own_tree()

so that it times its own tree's code: without it ``baadal`` is whatever the virtualenv's
editable install points at (another checkout, when run from a worktree).
"""

from __future__ import annotations

import sys
from pathlib import Path

#: the repository the benchmarks belong to
ROOT = Path(__file__).resolve().parents[1]


def use_own_tree() -> None:
    """Put this tree's ``src`` and root first on the import path and take the ``bench``
    folder off it (bench/queue.py is named like the stdlib module)."""
    here = Path(__file__).resolve().parent
    own = [ROOT / "src", ROOT]
    kept = [p for p in sys.path if Path(p or ".").resolve() not in (here, *own)]
    sys.path[:] = [*map(str, own), *kept]
