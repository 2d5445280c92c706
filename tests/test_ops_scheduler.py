"""The daemon's schedule on its injected clock: review, cutoff and reminders fire as a ManualClock moves."""

from __future__ import annotations

import queue
from datetime import datetime, timedelta

from agent.messages import Command
from agent.schedule import Scheduler
from drivers.clock import ManualClock
from tests.helpers import SHANGHAI, config, wait_until


def at(hour: int, minute: int, second: int = 0) -> datetime:
    return datetime(2026, 11, 27, hour, minute, second, tzinfo=SHANGHAI)


def posted(inbox: queue.Queue[Command]) -> list[str]:
    out = []
    while not inbox.empty():
        out.append(inbox.get_nowait().name)
    return out


def test_review_then_cutoff_fire_at_their_local_times_and_reminders_every_minute() -> None:
    clock = ManualClock(at(22, 29, 30))
    inbox: queue.Queue[Command] = queue.Queue()
    scheduler = Scheduler(config(), inbox, clock)
    assert scheduler.run_due() == []
    clock.advance(29)
    assert scheduler.run_due() == [], "22:29:59 is before the 22:30 review"
    clock.advance(1)
    assert scheduler.run_due() == ["review"]
    clock.advance(30)
    assert scheduler.run_due() == ["reminders"], "a minute after the scheduler started"
    clock.set(at(23, 0, 5))
    assert scheduler.run_due() == ["reminders", "cutoff"], "29 missed reminders post once"
    assert posted(inbox) == ["review", "reminders", "reminders", "cutoff"]


def test_firings_missed_beyond_their_grace_are_skipped_but_a_late_cutoff_still_runs() -> None:
    clock = ManualClock(at(22, 0))
    inbox: queue.Queue[Command] = queue.Queue()
    scheduler = Scheduler(config(), inbox, clock)
    clock.advance(timedelta(hours=2, minutes=30))   # suspended: review 2 h and cutoff 1.5 h late
    # The acquirer settled at 23:00 whether or not the till was awake: open findings become refunds.
    assert scheduler.run_due() == ["cutoff", "reminders"]
    clock.set(at(22, 0) + timedelta(hours=2, minutes=30, seconds=30))
    assert scheduler.run_due() == []


def test_a_wall_clock_set_back_fires_nothing_twice() -> None:
    clock = ManualClock(at(22, 29))
    inbox: queue.Queue[Command] = queue.Queue()
    scheduler = Scheduler(config(), inbox, clock)
    clock.set(at(22, 30, 10))
    assert scheduler.run_due() == ["review", "reminders"]
    clock.set(at(22, 29, 50))   # NTP steps the clock back 20 s
    assert scheduler.run_due() == []
    clock.set(at(22, 30, 20))
    assert scheduler.run_due() == []


def test_the_scheduler_thread_follows_the_clock() -> None:
    clock = ManualClock(at(22, 29, 59))
    inbox: queue.Queue[Command] = queue.Queue()
    scheduler = Scheduler(config(), inbox, clock)
    scheduler.start()
    try:
        clock.advance(2)
        wait_until(lambda: not inbox.empty(), "the review posted by the scheduler thread")
    finally:
        scheduler.stop()
    assert posted(inbox) == ["review"]
