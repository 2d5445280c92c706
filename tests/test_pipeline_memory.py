"""The rules' memory stays bounded by their horizon, whatever the transactions' stamps (issue 20)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from agent.messages import EventBatch
from tests.helpers import Harness, sale


def _backlog(h: Harness, hours: int, every: timedelta) -> int:
    """Sales stamped and received from ``hours`` before the clock up to 10 h before it, ten per batch; how many."""
    start = h.clock.now() - timedelta(hours=hours)
    n = int((timedelta(hours=hours - 10)) / every)
    for first in range(0, n, 10):
        events = tuple(sale(f"{i:06d}", 1000 + i, start + i * every, card=f"622576******{i % 10000:04d}",
                            batch=f"{i // 1000:06d}") for i in range(first, min(n, first + 10)))
        # Received when stamped (a spool or a buffered wire replayed late): the terminal's clock is right.
        h.pipeline.process([EventBatch("terminal", events, events[-1].time)])
    return n


def test_a_start_up_tick_does_not_stop_pruning_of_earlier_transactions(tmp_path: Path) -> None:
    """The daemon's first idle tick comes before any transaction. It used to record the clock's "now" as
    the newest transaction time pruned at, so a backlog stamped before the start-up never moved a minute
    past it and, the clock standing still within the minute, nothing left the rules' memory."""
    h = Harness(tmp_path)
    h.pipeline.tick()
    sent = _backlog(h, hours=60, every=timedelta(minutes=1))
    horizon = h.pipeline.engine.state.horizon
    held = len(h.pipeline.engine.state)
    # What is inside the horizon of the newest instant the pipeline knows (its clock) may stay; no more.
    inside = int((horizon - timedelta(hours=10)) / timedelta(minutes=1)) + 1
    assert sent == 3000
    assert held <= inside, f"{held} views held of {sent}; at most {inside} are inside the horizon"


def test_pruning_follows_transaction_time_when_the_clock_stands_still(tmp_path: Path) -> None:
    """A backlog caught up in seconds: a minute of transaction time is enough to prune, with or
    without the start-up tick."""
    h = Harness(tmp_path)
    _backlog(h, hours=60, every=timedelta(minutes=1))
    inside = int((h.pipeline.engine.state.horizon - timedelta(hours=10)) / timedelta(minutes=1)) + 1
    assert len(h.pipeline.engine.state) <= inside
