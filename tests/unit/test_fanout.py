"""One call per host on a bounded pool: outcomes in order, errors kept, late calls given
up on without waiting for them."""

from __future__ import annotations

import threading

import pytest

from baadal.host.fanout import NoAnswer, fan_out

pytestmark = pytest.mark.unit


def test_outcomes_come_in_item_order_with_their_errors() -> None:
    def call(n: int) -> int:
        if n % 7 == 3:
            raise ValueError(f"bad {n}")
        return n * n

    outcomes = fan_out(call, list(range(500)), threads=8, budget_s=60)
    assert len(outcomes) == 500
    for n, outcome in enumerate(outcomes):
        if n % 7 == 3:
            assert isinstance(outcome.error, ValueError) and str(outcome.error) == f"bad {n}"
            assert outcome.value is None
        else:
            assert outcome.error is None and outcome.value == n * n


def test_a_call_past_its_budget_is_no_answer_and_the_others_are_kept() -> None:
    release = threading.Event()

    def call(n: int) -> int:
        if n == 2:
            release.wait()  # hangs until the sweep has given up on it
        return n

    try:
        outcomes = fan_out(call, [0, 1, 2, 3], threads=4, budget_s=0.05)
    finally:
        release.set()
    assert [o.value for o in outcomes] == [0, 1, None, 3]
    assert isinstance(outcomes[2].error, NoAnswer)


def test_nothing_to_do() -> None:
    assert fan_out(str, [], threads=4, budget_s=1) == []
