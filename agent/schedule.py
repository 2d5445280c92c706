"""When things happen on the shop's clock: pre-close review, cutoff, reminders, baseline refresh.

The plan is computed once from the configuration (pure), then either run by
:class:`Scheduler` in the daemon on its injected clock (jobs only post commands
onto the pipeline's queue) or stepped through on simulated time by ``replay``;
both walk the same APScheduler triggers with :func:`fire_times`, so they agree
to the second, DST included.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta, tzinfo
from typing import Any

from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from agent.alerts.budget import LOOKAHEAD_DAYS, NoiseBudget
from agent.config import LoadedConfig
from agent.messages import Command
from drivers.clock import SYSTEM_CLOCK, Clock

log = logging.getLogger("settleguard.schedule")

# A review that fires late is still worth sending as long as the batch is open; past 10 minutes
# the start-up catch-up (or the next review) is the better judge.
REVIEW_GRACE = 600
CUTOFF_GRACE = 3600


@dataclass(frozen=True)
class PlannedJob:
    name: str                  # the pipeline command it posts: review | cutoff | reminders | baseline
    trigger: Any               # CronTrigger | IntervalTrigger | ShopDayTrigger
    misfire_grace: int


class ShopDayTrigger:
    """Fires at the times a function of the shop day gives (reviews move with the opening hours).

    Speaks the one method of APScheduler's triggers that :func:`fire_times` uses, so cron jobs and
    this one are walked the same way, by the daemon and by replay alike.
    """

    def __init__(self, times_for: Callable[[date], list[datetime]], tz: tzinfo) -> None:
        self.times_for = times_for
        self.tz = tz

    def get_next_fire_time(self, previous: datetime | None, now: datetime) -> datetime | None:
        day = now.astimezone(self.tz).date() - timedelta(days=1)   # a shop day may close after midnight
        for offset in range(0, LOOKAHEAD_DAYS + 2):
            for at in self.times_for(day + timedelta(days=offset)):
                if at >= now:
                    return at
        return None


def review_times(loaded: LoadedConfig, day: date) -> list[datetime]:
    """The pre-close reviews of the shop day ``day`` (agent/alerts/budget.py: before the earlier of
    closing and cutoff, plus the extra times; none on a closed day)."""
    return NoiseBudget(loaded).review_times(day)


def plan(loaded: LoadedConfig) -> list[PlannedJob]:
    tz = loaded.tz
    budget = NoiseBudget(loaded)
    cutoff = loaded.config.settlement.cutoff_time
    jobs = []
    if budget.has_review:
        jobs.append(PlannedJob("review", ShopDayTrigger(budget.review_times, tz), REVIEW_GRACE))
    if cutoff is not None:
        jobs.append(PlannedJob("cutoff", CronTrigger(hour=cutoff.hour, minute=cutoff.minute, timezone=tz),
                               CUTOFF_GRACE))
    jobs.append(PlannedJob("reminders", IntervalTrigger(minutes=1, timezone=tz), 60))
    jobs.append(PlannedJob("baseline", CronTrigger(hour=4, minute=10, timezone=tz), 6 * 3600))
    return jobs


# A heartbeat job per machine channel with ``heartbeat = "5m"``: "heartbeat:<channel>" (agent/service/heartbeat.py).
# Daemon only: replay and start-up catch-up use plan(), since a heartbeat of the past tells nobody anything.
HEARTBEAT_JOB = "heartbeat:"


def heartbeat_intervals(loaded: LoadedConfig) -> dict[str, timedelta]:
    """Enabled channels that send heartbeats, and how often."""
    return {c.name: c.heartbeat for c in loaded.config.channel if c.enabled and c.heartbeat is not None}


def heartbeat_jobs(loaded: LoadedConfig) -> list[PlannedJob]:
    # The grace is the interval: a heartbeat later than that is replaced by the next one anyway.
    return [PlannedJob(HEARTBEAT_JOB + name, IntervalTrigger(seconds=every.total_seconds(), timezone=loaded.tz),
                       max(1, int(every.total_seconds())))
            for name, every in heartbeat_intervals(loaded).items()]


def fire_times(jobs: list[PlannedJob], start: datetime, end: datetime, *,
               anchor: datetime | None = None) -> list[tuple[datetime, str]]:
    """Every firing in (start, end], in order — how replay runs the same schedule on simulated time.

    Interval jobs fire at ``anchor`` plus whole intervals (``anchor`` defaults to ``start``), so a
    caller stepping through consecutive windows keeps one rhythm.
    """
    out: list[tuple[datetime, str]] = []
    origin = start if anchor is None else anchor
    for job in jobs:
        if isinstance(job.trigger, IntervalTrigger):
            step = job.trigger.interval
            t = origin + step * (max(0, (start - origin) // step) + 1)
            while t <= end:
                out.append((t, job.name))
                t += step
            continue
        prev: datetime | None = None
        t = job.trigger.get_next_fire_time(None, start + timedelta(microseconds=1))
        while t is not None and t <= end:
            out.append((t, job.name))
            prev = t
            t = job.trigger.get_next_fire_time(prev, t + timedelta(seconds=1))
    out.sort(key=lambda x: (x[0], x[1] != "review"))
    return out


def missed_review(loaded: LoadedConfig, last_review: datetime | None, now: datetime) -> bool:
    """Down at review time, but the batch is still open: review at start-up.

    The fallback for a journal that has no schedule mark yet (written before catch-up existed).
    """
    tz: tzinfo = loaded.tz
    cutoff = loaded.config.settlement.cutoff_time
    if cutoff is None:
        return False
    local = now.astimezone(tz)
    today_cutoff = datetime.combine(local.date(), cutoff, tzinfo=tz)
    if local >= today_cutoff:
        return False
    for review_at in reversed(review_times(loaded, local.date())):
        if review_at <= local:
            return last_review is None or last_review < review_at
    return False


# The journal's meta key holding the instant up to which the schedule was handled: every scheduled
# command carries its due time, the pipeline stores it in the same transaction as the work.
SCHEDULE_MARK = "schedule_seen"
# What start-up catch-up looks back over at most: a till switched off for a holiday still closes the
# batch it left open, without walking months of minute-by-minute reminders.
CATCH_UP_LIMIT = timedelta(days=14)


def catch_up(loaded: LoadedConfig, since: datetime | None, now: datetime) -> list[Command]:
    """What fell due while settleguard was down, in order, each job once (its latest firing).

    A missed cutoff always runs: the acquirer settled whether or not we were up, so open findings
    become refund cases now. A missed review runs only when no missed cutoff came after it (the
    batch it would review is still open). Reminders and the baseline run once. ``since`` None
    means no mark yet (a first start): there is nothing to catch up.
    """
    if since is None or now <= since:
        return []
    start = max(since, now - CATCH_UP_LIMIT)
    latest: dict[str, datetime] = {}
    for at, name in fire_times(plan(loaded), start, now, anchor=since):
        latest[name] = at
    cutoff_at = latest.get("cutoff")
    if "review" in latest and cutoff_at is not None and latest["review"] <= cutoff_at:
        del latest["review"]
    return [scheduled(name, at) for name, at in sorted(latest.items(), key=lambda i: (i[1], i[0] != "review"))]


SCHEDULED_JOBS = frozenset({"review", "cutoff", "reminders", "baseline"})


def mark_schedule(journal: Any, due: object) -> None:
    """Record a scheduled job's due time (called by the pipeline inside the job's transaction)."""
    if not isinstance(due, str):
        return
    try:
        at = datetime.fromisoformat(due)
    except ValueError:
        return
    if at.tzinfo is None:
        return
    previous = read_schedule_mark(journal)
    if previous is None or at > previous:  # only forward: a clock set back must not re-run a cutoff
        journal.set_meta(SCHEDULE_MARK, at.isoformat())


def read_schedule_mark(journal: Any) -> datetime | None:
    text = journal.get_meta(SCHEDULE_MARK)
    try:
        mark = datetime.fromisoformat(text) if text else None
    except ValueError:
        return None
    return mark if mark is not None and mark.tzinfo is not None else None


def scheduled(name: str, due: datetime) -> Command:
    """A scheduled job as a pipeline command; ``due`` becomes the journal's schedule mark."""
    if name.startswith(HEARTBEAT_JOB):
        return Command("heartbeat", {"due": due.isoformat(), "channel": name.removeprefix(HEARTBEAT_JOB)})
    return Command(name, {"due": due.isoformat()})


# How often the scheduler thread looks at the clock: well inside the one-minute resolution of the plan.
PACING_SECONDS = 1.0


class Scheduler:
    """The plan on the daemon's clock: jobs post commands, the pipeline does the work.

    Each :meth:`run_due` posts what fell due since the last one. Several missed firings of one
    job (the till was suspended) post once, and not at all when the last of them is older than
    the job's grace — except a cutoff, which is never skipped: the batch settled anyway. A wall
    clock set back fires nothing twice. ``since`` continues from another scheduler (a restart
    after a crash or a reload) so nothing between the two is missed or doubled.
    """

    def __init__(self, loaded: LoadedConfig, inbox: queue.Queue[Any], clock: Clock = SYSTEM_CLOCK, *,
                 since: datetime | None = None) -> None:
        self.inbox = inbox
        self.clock = clock
        self.jobs = plan(loaded) + heartbeat_jobs(loaded)
        self._grace = {job.name: job.misfire_grace for job in self.jobs}
        self._checked = self._anchor = since or clock.now()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="scheduler", daemon=True)
        # Health: a step that keeps failing means no cutoff or review runs; the daemon reports it.
        self.last_ok = clock.monotonic()
        self.last_error: str | None = None

    @property
    def checked(self) -> datetime:
        return self._checked

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def run_due(self) -> list[str]:
        """Post the commands due since the last call; returns their names."""
        now = self.clock.now()
        if now <= self._checked:
            return []
        latest: dict[str, datetime] = {}
        for at, name in fire_times(self.jobs, self._checked, now, anchor=self._anchor):
            latest[name] = at
        self._checked = now
        posted = []
        for name, at in sorted(latest.items(), key=lambda item: (item[1], item[0] != "review")):
            if name != "cutoff" and (now - at).total_seconds() > self._grace[name]:
                log.warning("skipped the %s due at %s: more than %d s late", name, at.isoformat(), self._grace[name])
                continue
            self.inbox.put(scheduled(name, at))
            posted.append(name)
        return posted

    def _run(self) -> None:
        while not self._stop.wait(PACING_SECONDS):
            try:
                self.run_due()
            except Exception as exc:  # a scheduling bug must not silence every later review
                if self.last_error is None:
                    log.exception("scheduler step failed")
                self.last_error = f"{type(exc).__name__}: {exc}"
                continue
            self.last_ok = self.clock.monotonic()
            self.last_error = None

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(2.0)
