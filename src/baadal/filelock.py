"""Serialising work across processes on this machine: an exclusive ``flock``.

The web server, the workers, the CLI and tests are separate processes; where they share
a file (DHCP reservations, a template being built, the lab) they take this lock first.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from baadal.errors import ConfigError


@contextlib.contextmanager
def flocked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path``: a lock file (made if missing, left behind) or
    an existing directory (no file is left at all). Released when the block ends, or
    when the process dies."""
    flags = os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() else os.O_CREAT)
    try:
        fd = os.open(path, flags, 0o600)
    except OSError as exc:
        raise ConfigError(f"cannot open {path}: {exc.strerror or exc}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the flock
