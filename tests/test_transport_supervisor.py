"""The reader loop: progress, stop, backoff."""

from __future__ import annotations

import random
import time
from pathlib import Path

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
