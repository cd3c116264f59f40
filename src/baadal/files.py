"""Whole-file replacement that readers never see half done: the new content goes to a
private file in the same directory, which is renamed over the target only once complete
(DHCP reservations dnsmasq re-reads, graphs a page may be showing, RRD files, the tiny
guest's parts). A failure leaves the old file as it was and no private file behind.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def replaced_atomically(target: Path, mode: int = 0o644) -> Iterator[Path]:
    """A private path to write (by any means, e.g. rrdtool) that then replaces ``target``."""
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    private = Path(name)
    try:
        yield private
        private.chmod(mode)
        os.replace(private, target)
    finally:
        private.unlink(missing_ok=True)


def write_atomically(
    target: Path, data: str | bytes, mode: int = 0o644, *, durable: bool = True
) -> None:
    """Replace ``target`` with ``data``, flushed to disk before the rename unless it is
    not ``durable`` (a cache its readers can do without after a crash: the flush costs a
    disk write each, 4 ms on a busy disk)."""
    with replaced_atomically(target, mode) as private, private.open("wb") as stream:
        stream.write(data.encode() if isinstance(data, str) else data)
        if durable:
            stream.flush()
            os.fsync(stream.fileno())
