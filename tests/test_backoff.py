"""Retry pacing shared by the readers and delivery (drivers/backoff.py)."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.backoff import backoff_delay


def test_backoff_doubles_up_to_the_cap() -> None:
    top = random.Random()
    top.uniform = lambda a, b: b  # type: ignore[method-assign]
    ceilings = [backoff_delay(n, base=0.5, cap=30.0, rng=top) for n in range(10)]
    assert ceilings == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0, 30.0]


@settings(max_examples=200, deadline=None)
@given(failures=st.integers(0, 10_000), base=st.floats(0.001, 10.0), cap=st.floats(0.001, 300.0),
       seed=st.integers(0, 2**32))
def test_backoff_is_full_jitter_never_negative_never_past_the_cap(
        failures: int, base: float, cap: float, seed: int) -> None:
    delay = backoff_delay(failures, base=base, cap=cap, rng=random.Random(seed))
    assert 0.0 <= delay <= min(cap, base * 2.0 ** min(failures, 62))


def test_a_floor_the_other_side_asked_for_wins_over_the_jitter_and_the_cap() -> None:
    bottom = random.Random()
    bottom.uniform = lambda a, b: a  # type: ignore[method-assign]
    assert backoff_delay(3, base=2.0, cap=300.0, rng=bottom) == 0.0
    assert backoff_delay(3, base=2.0, cap=300.0, rng=bottom, minimum=45.0) == 45.0
    assert backoff_delay(30, base=2.0, cap=300.0, rng=bottom, minimum=600.0) == 600.0
