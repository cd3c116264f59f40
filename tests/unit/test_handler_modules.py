"""The worker imports the modules in ``BUILTIN_HANDLER_MODULES`` to register the task
handlers; a handler in a module missing from that list (say, after a move) would leave its
tasks queued forever. Read from the source (``ast``): every module calling ``handler(...)``
is listed, and every listed module does."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from baadal.tasks.registry import BUILTIN_HANDLER_MODULES

pytestmark = pytest.mark.unit

SRC = Path(__file__).resolve().parents[2] / "src"


def registers_handlers(source: str) -> bool:
    """True when the module calls ``handler(...)``, as a decorator or directly."""
    return any(
        isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "handler"
        for node in ast.walk(ast.parse(source))
    )


def handler_modules(root: Path) -> set[str]:
    return {
        ".".join(path.relative_to(root).with_suffix("").parts)
        for path in (root / "baadal").rglob("*.py")
        if registers_handlers(path.read_text())
    }


def test_builtin_handler_modules_are_the_modules_with_handlers() -> None:
    assert handler_modules(SRC) == set(BUILTIN_HANDLER_MODULES)


def test_a_direct_call_counts_too() -> None:
    assert registers_handlers("x = handler('T')(run)\n")
    assert registers_handlers("@handler('T')\ndef run(ctx): ...\n")
    assert not registers_handlers("from baadal.tasks.registry import handler\n")
