"""When things happen on the shop's clock: pre-close review, cutoff, reminders, baseline refresh.

The plan is computed once from the configuration (pure), then either run by
APScheduler's BackgroundScheduler in the daemon (jobs only post commands onto
the pipeline's queue) or stepped through on simulated time by ``replay``,
using the same triggers so both agree to the second, DST included.
"""

from __future__ import annotations

import logging
import queue
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, tzinfo
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from agent.config import LoadedConfig
from agent.messages import Command

log = logging.getLogger("settleguard.schedule")

# A review that fires late is still worth sending as long as the batch is open; past 10 minutes
# the start-up catch-up (or the next review) is the better judge.
REVIEW_GRACE = 600
CUTOFF_GRACE = 3600


@dataclass(frozen=True)
class PlannedJob:
    name: str                  # the pipeline command it posts: review | cutoff | reminders | baseline
    trigger: Any               # CronTrigger | IntervalTrigger
    misfire_grace: int


def review_times(loaded: LoadedConfig) -> list[time]:
    s = loaded.config.settlement
    times: list[time] = []
    if s.cutoff_time is not None:
        anchor = datetime.combine(date(2000, 1, 3), s.cutoff_time) - s.review_lead
        times.append(anchor.time())
    for text in s.review_times:
        hh, mm = text.split(":")
        times.append(time(int(hh), int(mm)))
    return sorted(set(times))


def plan(loaded: LoadedConfig) -> list[PlannedJob]:
    tz = loaded.tz
    jobs = [PlannedJob("review", CronTrigger(hour=t.hour, minute=t.minute, timezone=tz), REVIEW_GRACE)
            for t in review_times(loaded)]
    cutoff = loaded.config.settlement.cutoff_time
    if cutoff is not None:
        jobs.append(PlannedJob("cutoff", CronTrigger(hour=cutoff.hour, minute=cutoff.minute, timezone=tz),
                               CUTOFF_GRACE))
    jobs.append(PlannedJob("reminders", IntervalTrigger(minutes=1, timezone=tz), 60))
    jobs.append(PlannedJob("baseline", CronTrigger(hour=4, minute=10, timezone=tz), 6 * 3600))
    return jobs


def fire_times(jobs: list[PlannedJob], start: datetime, end: datetime) -> list[tuple[datetime, str]]:
    """Every firing in (start, end], in order — how replay runs the same schedule on simulated time."""
    out: list[tuple[datetime, str]] = []
    for job in jobs:
        if isinstance(job.trigger, IntervalTrigger):
            step = job.trigger.interval
            t = start + step
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
    """Down at review time, but the batch is still open: review at start-up."""
    tz: tzinfo = loaded.tz
    cutoff = loaded.config.settlement.cutoff_time
    if cutoff is None:
        return False
    local = now.astimezone(tz)
    today_cutoff = datetime.combine(local.date(), cutoff, tzinfo=tz)
    if local >= today_cutoff:
        return False
    for t in reversed(review_times(loaded)):
        review_at = datetime.combine(local.date(), t, tzinfo=tz)
        if review_at <= local:
            return last_review is None or last_review < review_at
    return False


class Scheduler:
    """APScheduler in the daemon: jobs post commands, the pipeline does the work."""

    def __init__(self, loaded: LoadedConfig, inbox: queue.Queue[Any]) -> None:
        self.inbox = inbox
        self.scheduler = BackgroundScheduler(timezone=loaded.tz)
        for job in plan(loaded):
            self.scheduler.add_job(self._post, job.trigger, args=[job.name], id=job.name + str(id(job)),
                                   misfire_grace_time=job.misfire_grace, coalesce=True, max_instances=1)

    def _post(self, name: str) -> None:
        self.inbox.put(Command(name))

    def start(self) -> None:
        self.scheduler.start()

    def stop(self) -> None:
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
