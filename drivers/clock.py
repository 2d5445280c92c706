"""The one clock: wall time and monotonic time, injected into everything that needs either.

Nothing else in settleguard reads time. The daemon passes :class:`SystemClock`;
``replay``, the demo and the tests pass a :class:`ManualClock` and move it, which
is what makes them exact and keeps the tests free of real-time sleeps. It lives
in ``drivers`` because the readers stamp what they receive with it, and
``drivers`` may not import ``agent``.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """Wall time, timezone-aware UTC: what is recorded and compared with terminal times."""
        ...

    def monotonic(self) -> float:
        """Seconds that never go backwards: what health checks, debounce and backoff measure."""
        ...


class SystemClock:
    """The machine's clocks."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()


class ManualClock:
    """A clock that moves only when told: replay (event time), the demo (a shop day in seconds), tests.

    Wall and monotonic time advance together; :meth:`set` may jump the wall clock backwards (a
    replay of an older capture) without the monotonic reading ever going back.
    """

    def __init__(self, start: datetime | None = None, *, monotonic: float = 1000.0) -> None:
        self._lock = threading.Lock()
        self._now = (start or datetime(2026, 1, 1, tzinfo=UTC)).astimezone(UTC)
        self._mono = monotonic

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def monotonic(self) -> float:
        with self._lock:
            return self._mono

    def advance(self, seconds: float | timedelta) -> None:
        step = seconds.total_seconds() if isinstance(seconds, timedelta) else float(seconds)
        if step < 0:
            raise ValueError("a clock does not run backwards; use set() for the wall clock")
        with self._lock:
            self._now += timedelta(seconds=step)
            self._mono += step

    def set(self, when: datetime) -> None:
        """Move the wall clock to ``when``; the monotonic clock moves forward by the same step, or not at all."""
        when = when.astimezone(UTC)
        with self._lock:
            step = (when - self._now).total_seconds()
            self._now = when
            if step > 0:
                self._mono += step


SYSTEM_CLOCK = SystemClock()
