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
from concurrent.futures import ThreadPoolExecutor
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
    outcomes: list[Outcome[R] | None] = [None] * len(items)
    #: index -> when its call started, while it runs
    running: dict[int, float] = {}
    pending = len(items)
    lock = threading.Lock()
    all_done = threading.Event()

    def settle(index: int, outcome: Outcome[R]) -> None:  # under the lock
        nonlocal pending
        running.pop(index, None)
        if outcomes[index] is None:  # not given up on meanwhile
            outcomes[index] = outcome
            pending -= 1
            if not pending:
                all_done.set()

    def run(index: int) -> None:
        with lock:
            running[index] = time.monotonic()
        try:
            outcome: Outcome[R] = Outcome(call(items[index]))
        except BaseException as exc:  # the caller decides what each error means
            outcome = Outcome(error=exc)
        with lock:
            settle(index, outcome)

    pool = ThreadPoolExecutor(min(threads, len(items)), thread_name_prefix="sweep")
    try:
        for index in range(len(items)):
            pool.submit(run, index)
        # the main thread wakes once per tick, not per call, and looks only at the calls
        # running (at most ``threads``): waiting on 2,500 futures cost more than the calls
        while not all_done.wait(_TICK_S):
            now = time.monotonic()
            with lock:
                late = [i for i, began in running.items() if now - began > budget_s]
                for index in late:
                    settle(index, Outcome(error=NoAnswer(f"no answer within {budget_s:g} s")))
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    return [o for o in outcomes if o is not None]
