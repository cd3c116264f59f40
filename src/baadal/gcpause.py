"""Python's cyclic garbage collector paused around a bulk read.

A sweep over 25,000 VMs builds a hundred thousand small objects (rows, domain infos,
report lines) that hold no reference cycles; each allocation burst makes the collector
run, and its full collections walk every object the process holds, so their cost grows
with the cloud twice over (more objects made, a bigger heap walked each time): at 2,500
hosts they were a third to a half of the VM sanity sweep and of a metrics scrape. Paused,
the collector runs at its next turn after the read, once.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_lock = threading.Lock()
#: how many paused blocks are running (threads may overlap them)
_depth = 0
#: whether the collector was on when the first of them began
_was_enabled = False


@contextmanager
def paused_gc() -> Iterator[None]:
    """No cyclic collection while the block runs (in any thread); the collector is on
    again when the last overlapping block ends, if it was on before the first."""
    global _depth, _was_enabled
    with _lock:
        if _depth == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _was_enabled:
                gc.enable()
