"""One call per host on a bounded pool of threads, each bounded in time.

A sweep over thousands of hosts must neither ask them one after another (2,500 hosts at
25 ms each is a minute) nor wait for one that hangs: a host whose call runs past its
budget counts as failed with :class:`NoAnswer` and the sweep ends without it (its thread
finishes in the background; every call the sweeps make has its own timeouts as well).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ALL_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Generic, TypeVar

from baadal.errors import BaadalError

T = TypeVar("T")
R = TypeVar("R")

#: how often the budgets of running calls are looked at
_TICK_S = 0.05


class NoAnswer(BaadalError):
    """A host's call did not end within its budget."""


@dataclass(frozen=True)
class Outcome(Generic[R]):
    """What one call returned, or the exception it raised (``NoAnswer`` past its budget)."""

    value: R | None = None
    error: BaseException | None = None


def fan_out(
    call: Callable[[T], R], items: Sequence[T], *, threads: int, budget_s: float
) -> list[Outcome[R]]:
    """``call(item)`` for every item, at most ``threads`` at once; outcomes in item order.
    A call's budget starts when it starts, not when it is queued."""
    if not items:
        return []
    started: dict[int, float] = {}
    lock = threading.Lock()

    def run(index: int) -> R:
        with lock:
            started[index] = time.monotonic()
        return call(items[index])

    pool = ThreadPoolExecutor(min(threads, len(items)), thread_name_prefix="sweep")
    futures: dict[Future[R], int] = {pool.submit(run, i): i for i in range(len(items))}
    outcomes: list[Outcome[R] | None] = [None] * len(items)
    try:
        while futures:
            # one wait per tick, not per finished call: wait() looks at every future, so
            # waking up for each of 2,500 would cost O(n^2)
            done, _ = wait(futures, timeout=_TICK_S, return_when=ALL_COMPLETED)
            for future in done:
                index = futures.pop(future)
                error = future.exception()
                outcomes[index] = Outcome(error=error) if error else Outcome(future.result())
            now = time.monotonic()
            with lock:
                late = [f for f, i in futures.items() if now - started.get(i, now) > budget_s]
            for future in late:
                index = futures.pop(future)
                outcomes[index] = Outcome(error=NoAnswer(f"no answer within {budget_s:g} s"))
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    return [o for o in outcomes if o is not None]
