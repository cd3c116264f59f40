"""Where the lab lives and what it made: its directories, and ``<home>/lab/state.json``,
which records everything *before* it is made so ``lab down`` (and ``lab up`` after a crash)
removes exactly that."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

from baadal.config import Settings
from baadal.errors import BaadalError
from baadal.filelock import flocked


class LabError(BaadalError):
    """The lab could not be built or taken down."""


def lab_dir(settings: Settings) -> Path:
    return settings.home / "lab"


def datastore_dir(settings: Settings) -> Path:
    return lab_dir(settings) / "datastore"


def dns_dir(settings: Settings) -> Path:
    return lab_dir(settings) / "dns"


def hosts_file(settings: Settings) -> Path:
    return dns_dir(settings) / "hosts"


class State:
    """What the lab made, in order; saved after every change so a crash loses nothing."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.created: list[list[str]] = []
        self.complete = False
        if path.is_file():
            with contextlib.suppress(ValueError):
                data = json.loads(path.read_text())
                self.created = [list(x) for x in data.get("created", [])]
                self.complete = bool(data.get("complete", False))

    def record(self, kind: str, name: str) -> None:
        if [kind, name] not in self.created:
            self.created.append([kind, name])
            self.save()

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"created": self.created, "complete": self.complete}, indent=1))
        tmp.rename(self.path)


@contextlib.contextmanager
def locked(settings: Settings) -> Iterator[None]:
    """One lab operation at a time; the lock is on the home directory so no file is left."""
    settings.home.mkdir(parents=True, exist_ok=True)
    with flocked(settings.home):
        yield


def nat_dir(settings: Settings) -> Path:
    return lab_dir(settings) / "nat"
