"""The reader loop: progress, stop, backoff."""

from __future__ import annotations

import random
import time
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.backoff import backoff_delay
from drivers.transports import SerialSource, Supervisor
from tests.transport_support import (
    FAST,
    WAIT,
    Pty,
    Recorder,
)


def test_a_quiet_line_still_shows_progress_and_stop_is_prompt(ptys: list[Pty]) -> None:
    pty = Pty()
    ptys.append(pty)
    rec = Recorder()
    sup = Supervisor(SerialSource(pty.path), rec.on_bytes, rec.on_state, **FAST)
    sup.start()
    try:
        rec.wait_state("open")
        seen = sup.last_progress
        rec.wait_for(lambda: sup.last_progress > seen, "progress while nothing arrives")
    finally:
        started = time.monotonic()
        sup.stop()
        sup.join(WAIT)
    assert not sup.is_alive()
    assert time.monotonic() - started < 1.0


def test_a_long_backoff_keeps_reporting_progress_and_does_not_delay_stop(tmp_path: Path) -> None:
    rec = Recorder()
    always_long = random.Random()
    always_long.uniform = lambda a, b: b  # type: ignore[method-assign]
    sup = Supervisor(SerialSource(str(tmp_path / "absent")), rec.on_bytes, rec.on_state, backoff_base=30.0,
                     backoff_cap=30.0, read_timeout=0.05, rng=always_long)
    sup.start()
    try:
        rec.wait_state("waiting")
        seen = sup.last_progress
        rec.wait_for(lambda: sup.last_progress > seen, "progress during a 30 s backoff")
    finally:
        started = time.monotonic()
        sup.stop()
        sup.join(WAIT)
    assert not sup.is_alive()
    assert time.monotonic() - started < 1.0
    assert rec.state_names == ["opening", "waiting", "closed"]


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
