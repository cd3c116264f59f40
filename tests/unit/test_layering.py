"""The layers, read from the imports (``ast``, nothing is imported):

* a door (the CLI, the REST API, the web portal) reaches the cloud only through the
  service layer, so every request meets the policy; the API's application mounts the
  portal (one ASGI app), the only import from one door into another;
* the hypervisor drivers and the network code know nothing of the database;
* the database package depends on nothing of Baadal but its foundations.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

SRC = Path(__file__).resolve().parents[2] / "src"
DOORS = ("baadal.cli", "baadal.web", "baadal.api")
FOUNDATIONS = ("baadal.constants", "baadal.config", "baadal.errors", "baadal.logs")
#: service modules that are not for doors: unchecked lookups for the other services,
#: writing the audit log
SERVICES_NOT_FOR_DOORS = ("baadal.services.lookup", "baadal.services.auditing")
DB_MAY_IMPORT = (
    *FOUNDATIONS,
    "baadal.timeutil",
    "baadal.files",
    "baadal.filelock",
    "baadal.home",
    "baadal.db",
)


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> Iterator[str]:
    """Every module ``path`` imports, inside functions too, relative imports resolved;
    ``from baadal import x`` is ``baadal.x``, ``from a.b import c`` is ``a.b``."""
    package = _module_name(path)
    if path.name != "__init__.py":
        package = package.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, module] if module else base)
            if module == "baadal":
                yield from (f"baadal.{alias.name}" for alias in node.names)
            else:
                yield module


def _within(module: str, packages: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(f"{p}.") for p in packages)


def _modules(*packages: str) -> Iterator[tuple[str, Path]]:
    for path in sorted((SRC / "baadal").rglob("*.py")):
        name = _module_name(path)
        if _within(name, packages):
            yield name, path


def _violations(packages: tuple[str, ...], may_import: tuple[str, ...]) -> list[str]:
    """'module imports what' for every import of Baadal by ``packages`` outside
    ``may_import``."""
    return [
        f"{name} imports {module}"
        for name, path in _modules(*packages)
        for module in sorted(set(_imports(path)))
        if _within(module, ("baadal",)) and not _within(module, may_import)
    ]


def _report(what: str, violations: list[str]) -> str:
    return f"{what}:\n  " + "\n  ".join(violations)


#: a door module that may import another door: (module, the door it may import)
DOOR_MOUNTS = {"baadal.api.app": "baadal.web"}


def test_doors_use_only_the_service_layer() -> None:
    problems = []
    for door in DOORS:
        allowed = ("baadal.services", *FOUNDATIONS, door)
        problems += [
            v
            for v in _violations((door,), allowed)
            if v.split(" imports ") not in ([m, d] for m, d in DOOR_MOUNTS.items())
        ]
        problems += [
            f"{name} imports {module}"
            for name, path in _modules(door)
            for module in set(_imports(path))
            if _within(module, SERVICES_NOT_FOR_DOORS)
        ]
    assert not problems, _report("doors must go through baadal.services", problems)


def _database_imports(package: str) -> list[str]:
    return [
        f"{name} imports {module}"
        for name, path in _modules(package)
        for module in sorted(set(_imports(path)))
        if _within(module, ("baadal.db",))
    ]


def test_drivers_know_no_database() -> None:
    problems = _database_imports("baadal.drivers")
    assert not problems, _report("drivers must not import baadal.db", problems)


def test_network_code_knows_no_database() -> None:
    problems = _database_imports("baadal.net")
    assert not problems, _report("baadal.net must not import baadal.db", problems)


def test_the_database_package_depends_only_on_foundations() -> None:
    problems = _violations(("baadal.db",), DB_MAY_IMPORT)
    assert not problems, _report("baadal.db may import only its foundations", problems)


def test_the_checks_see_a_forbidden_import(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The parser finds plain, from- and relative imports, inside functions too."""
    path = tmp_path / "baadal" / "cli" / "x.py"
    path.parent.mkdir(parents=True)
    path.write_text("def f():\n    from ..db import models\n    import baadal.vm.lifecycle\n")
    monkeypatch.setattr(sys.modules[__name__], "SRC", tmp_path)
    assert set(_imports(path)) == {"baadal.db", "baadal.vm.lifecycle"}
    assert _violations(("baadal.cli",), ("baadal.services",)) == [
        "baadal.cli.x imports baadal.db",
        "baadal.cli.x imports baadal.vm.lifecycle",
    ]


def test_the_rest_api_and_the_portal_are_checked_as_doors() -> None:
    """The door check above must not pass by finding no module of the API or portal."""
    assert "baadal.api" in DOORS and "baadal.web" in DOORS
    assert {name for name, _ in _modules("baadal.api")} >= {"baadal.api.app", "baadal.api.callers"}
    assert {name for name, _ in _modules("baadal.web")} >= {"baadal.web.portal", "baadal.web.pages"}
