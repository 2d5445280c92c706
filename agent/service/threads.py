"""Long-lived threads that cannot die quietly.

Every thread the daemon starts runs under a :class:`Guarded` wrapper: an exception that escapes
the thread's loop is logged with its traceback and kept (which thread, what, when), and a loop
that returns while the daemon is not stopping counts as a death too. :class:`RestartBudget`
decides whether the daemon may start it again: a thread whose whole state is durable or rebuilt
from the journal is restarted a few times; one that keeps dying is left dead, so the health step
reports it, WATCHDOG=1 stops and systemd restarts the whole service.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from drivers.clock import Clock

log = logging.getLogger("settleguard.threads")

# Five restarts in ten minutes: enough for a one-off (a poison batch, a flaky device) and few
# enough that a thread failing on every round gets the service restarted by systemd instead.
MAX_RESTARTS = 5
RESTART_WINDOW = 600.0
# Deaths kept for status and doctor.
KEEP_DEATHS = 20


@dataclass(frozen=True, slots=True)
class Death:
    thread: str
    error: str          # "KeyError: 'loaded'", or why a loop ended that should not have
    at: datetime        # wall time, for people
    restarted: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"thread": self.thread, "error": self.error, "at": self.at.isoformat(), "restarted": self.restarted}


def describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class Guarded:
    """One thread running ``target(*args)``; ``stopping()`` says whether an end is expected."""

    def __init__(self, name: str, target: Callable[..., Any], args: tuple[Any, ...] = (), *,
                 stopping: Callable[[], bool]) -> None:
        self.name = name
        self.target = target
        self.args = args
        self.stopping = stopping
        self.error: str | None = None
        self.thread = threading.Thread(target=self._main, name=name, daemon=True)

    def start(self) -> Guarded:
        self.thread.start()
        return self

    def _main(self) -> None:
        try:
            self.target(*self.args)
        except BaseException as exc:  # the point of the guard: nothing leaves a thread unrecorded
            self.error = describe(exc)
            log.error("thread %s died: %s", self.name, self.error, exc_info=exc)
            return
        if not self.stopping():
            self.error = "its loop ended while the service was running"
            log.error("thread %s ended unexpectedly", self.name)

    @property
    def dead(self) -> bool:
        """Ended with an error, or ended at all while the service runs."""
        return not self.thread.is_alive() and (self.error is not None or not self.stopping())

    def join(self, timeout: float) -> None:
        self.thread.join(timeout)


class RestartBudget:
    """At most ``limit`` restarts per thread name in any ``window`` seconds (monotonic)."""

    def __init__(self, clock: Clock, *, limit: int = MAX_RESTARTS, window: float = RESTART_WINDOW) -> None:
        self.clock = clock
        self.limit = limit
        self.window = window
        self._recent: dict[str, deque[float]] = {}
        self.deaths: deque[Death] = deque(maxlen=KEEP_DEATHS)
        self.given_up: dict[str, Death] = {}

    def record(self, name: str, error: str, *, restartable: bool) -> bool:
        """Note a death; True when the thread may be started again."""
        now = self.clock.monotonic()
        recent = self._recent.setdefault(name, deque())
        while recent and now - recent[0] > self.window:
            recent.popleft()
        allowed = restartable and len(recent) < self.limit
        if allowed:
            recent.append(now)
        death = Death(name, error, self.clock.now(), restarted=allowed)
        self.deaths.append(death)
        if allowed:
            log.warning("restarting thread %s (%d of %d in %.0f s)", name, len(recent), self.limit, self.window)
        else:
            self.given_up[name] = death
            log.error("thread %s stays dead (%s): reporting unhealthy so systemd restarts settleguard", name,
                      "keeps dying" if restartable else "not safe to restart")
        return allowed

    def problems(self) -> list[str]:
        return [f"thread {d.thread} died: {d.error}" for d in self.given_up.values()]
