"""The delivery thread: drains the outbox to the channels, grouping for people, one-by-one for machines.

* Machine channels (webhook) get one message per alert revision, strictly in
  order, with a ``webhook-id`` that is stable across retries.
* People channels (chat robots, the printer) get grouped messages, the way
  Alertmanager groups: a batch waits ``group_wait`` after its oldest finding
  so findings that arrive together are read together, and a channel gets at
  most one summary per ``group_interval``. Reviews go out on their own.
  Findings and resolutions are never mixed in one message (a digest tells
  staff what to do; a resolved finding in it would read as "void this").
  Reminders and first announcements whose alert has moved on by the time they
  are due are marked ``superseded``: the newer revision says it better.
* A failure is retried with full-jitter backoff (Retry-After is a floor)
  until the message's deadline, then handed to the next configured channel
  that can carry it; a permanent failure goes to the dead-letter state.
  Nothing unsent is ever deleted.
* The channel's own rate limiter decides when the next request may go; a
  send the limiter would refuse is simply not attempted yet, so it costs no
  attempt and no backoff.
"""

from __future__ import annotations

import hashlib
import logging
import random
import threading
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from agent.alerts.lifecycle import ALERT_NOTICES, RESOLUTION_NOTICES, SUPERSEDABLE_NOTICES, NoticeKind
from agent.config import DeliveryConfig
from agent.delivery.channels.base import Channel, HttpSender, Notice, Outcome, RateLimiter
from agent.store.outbox import Outbox, OutboxRow
from drivers.backoff import backoff_delay
from drivers.clock import Clock

log = logging.getLogger("settleguard.delivery")

# A message is retried from seconds to five minutes apart: fast enough to catch a brief outage before
# the void deadline, slow enough not to hammer a robot that is throttling us.
RETRY_BASE = 2.0
RETRY_CAP = 300.0


def retry_delay(attempts: int, *, rng: random.Random | None = None, minimum: float | None = None) -> float:
    """Seconds before the next try of a message that failed ``attempts + 1`` times (Retry-After is a floor)."""
    return backoff_delay(attempts, base=RETRY_BASE, cap=RETRY_CAP, rng=rng, minimum=minimum)

# Nothing pending: look again after this long (a commit wakes the thread earlier anyway).
IDLE_WAIT = 60.0
# Row kinds a people channel sends alone, never folded into a digest.
SINGLE_KINDS = frozenset({NoticeKind.REVIEW, NoticeKind.ALL_CLEAR, NoticeKind.DEVICE})
# A digest lists at most this many rows; the rest waits for the next group_interval.
MAX_GROUP = 200


class Delivery:
    def __init__(self, outbox: Outbox, channels: Sequence[Channel], sender: HttpSender, *, clock: Clock,
                 config: DeliveryConfig, shop: str, source: str, rng: random.Random | None = None) -> None:
        self.outbox = outbox
        self.channels = {c.name: c for c in channels}
        self.order = [c.name for c in channels]
        self.sender = sender
        self.clock = clock
        self.config = config
        self.shop = shop
        self.source = source
        self.rng = rng or random.Random()
        # HTTP channels own a limiter (they also hold it on Retry-After): use that very object, so the
        # delivery loop and the channel never disagree about when the next request may go.
        self.limiters: dict[str, RateLimiter] = {c.name: _limiter_for(c) for c in channels}
        self.last_group_sent: dict[str, datetime] = {}
        self.wake = threading.Event()
        self.last_progress = clock.monotonic()
        # A step that raises (the outbox unreadable, a bug) is retried, but must not look healthy for
        # ever: the daemon's health check compares last_ok with the clock, as it does for the scheduler.
        self.last_ok = clock.monotonic()
        self.last_error: str | None = None
        self.failures: dict[str, int] = {c.name: 0 for c in channels}
        self.sent_count = 0
        self.superseded_count = 0

    # -- thread ---------------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        recovered = self.outbox.recover()
        if recovered:
            log.warning("re-sending %d message(s) interrupted by the last shutdown", recovered)
        while not stop.is_set():
            self.last_progress = self.clock.monotonic()
            try:
                wait = self.step()
            except Exception as exc:  # never let one bad row kill delivery; it is retried later
                log.exception("delivery step failed")
                self.last_error = f"{type(exc).__name__}: {exc}"
                wait = 5.0
            else:
                self.last_ok, self.last_error = self.clock.monotonic(), None
            self.wake.wait(timeout=max(0.01, min(wait, 1.0)))
            self.wake.clear()
        self.close()

    def close(self) -> None:
        """Let go of what channels hold open (a NATS connection and its loop thread): a reload builds new ones."""
        for channel in self.channels.values():
            close = getattr(channel, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:   # closing must not keep a reload or a shutdown from finishing
                    log.exception("channel %s: closing failed", channel.name)

    def step(self) -> float:
        """Send what is due on every channel; return seconds until something may be due."""
        now = self.clock.now()
        next_wait = IDLE_WAIT
        for name in self.order:
            wait = self._step_channel(self.channels[name], now)
            next_wait = min(next_wait, wait)
        return next_wait

    def _step_channel(self, channel: Channel, now: datetime) -> float:
        pending = self.outbox.pending(channel.name)
        if channel.groups and pending:
            pending = self._drop_superseded(channel, pending, now)
        pending = self._drop_old_heartbeats(channel, pending, now)
        if not pending:
            return IDLE_WAIT
        due = [r for r in pending if r.next_at <= now]
        if not due:
            return _seconds(min(r.next_at for r in pending) - now)
        moved = self._reroute_expired(channel, due, now)
        if moved:
            pending = [r for r in pending if r.id not in moved]
            due = [r for r in due if r.id not in moved]
            if not due:
                return 0.0
        if channel.groups:
            return self._step_people(channel, due, now)
        return self._step_machine(channel, pending, now)

    def _step_machine(self, channel: Channel, pending: list[OutboxRow], now: datetime) -> float:
        """Strictly in order, one revision per message: a row waiting for its retry holds back the rest."""
        limiter = self.limiters[channel.name]
        for row in pending:
            if row.next_at > now:
                return _seconds(row.next_at - now)
            at = self.clock.now()
            wait = limiter.wait(at)
            if wait > 0:
                return wait
            if not self._send(channel, [row], at):
                return 0.0
        return 0.0

    def _step_people(self, channel: Channel, due: list[OutboxRow], now: datetime) -> float:
        wait = self.limiters[channel.name].wait(now)
        if wait > 0:
            return wait
        singles = [r for r in due if r.kind in SINGLE_KINDS]
        if singles:
            # A review already lists every open finding: it goes out on its own, ahead of the digest,
            # and does not use up the group_interval of the findings.
            self._send(channel, singles[:1], now)
            return 0.0
        findings = [r for r in due if r.kind not in RESOLUTION_NOTICES]
        batch = (findings or due)[:MAX_GROUP]
        ready_at = min(r.created for r in batch) + self.config.group_wait
        last = self.last_group_sent.get(channel.name)
        if last is not None:
            ready_at = max(ready_at, last + self.config.group_interval)
        if now < ready_at:
            return _seconds(ready_at - now)
        if self._send(channel, batch, now):
            # Only a summary people actually got starts the interval: a failed one is retried by backoff.
            self.last_group_sent[channel.name] = now
        return 0.0

    def _drop_superseded(self, channel: Channel, pending: list[OutboxRow], now: datetime) -> list[OutboxRow]:
        """An announcement or reminder whose alert has a newer revision (resolved, escalated) stays unsent."""
        candidates = [r for r in pending if r.kind in SUPERSEDABLE_NOTICES and r.alert_id and r.revision is not None]
        if not candidates:
            return pending
        current = self.outbox.alert_revisions({r.alert_id for r in candidates if r.alert_id})
        stale = [r for r in candidates
                 if r.alert_id in current and r.revision is not None and current[r.alert_id] > r.revision]
        if not stale:
            return pending
        for row in stale:
            self.outbox.mark_superseded([row.id], now, f"alert {row.alert_id} is at revision "
                                                       f"{current[row.alert_id or '']} now")
        self.superseded_count += len(stale)
        log.info("channel %s: %d stale announcement(s)/reminder(s) superseded by a newer revision",
                 channel.name, len(stale))
        gone = {r.id for r in stale}
        return [r for r in pending if r.id not in gone]

    def _drop_old_heartbeats(self, channel: Channel, pending: list[OutboxRow], now: datetime) -> list[OutboxRow]:
        """Only the newest unsent heartbeat says how the till is: older ones stay unsent (superseded), so
        an endpoint down for a day gets one heartbeat when it is back, not one per interval."""
        beats = [r for r in pending if r.kind == NoticeKind.HEARTBEAT]
        if len(beats) < 2:
            return pending
        newest = max(beats, key=lambda r: r.id)
        stale = [r.id for r in beats if r is not newest]
        self.outbox.mark_superseded(stale, now, f"a newer heartbeat is queued ({newest.message_id})")
        self.superseded_count += len(stale)
        log.info("channel %s: %d unsent heartbeat(s) superseded by a newer one", channel.name, len(stale))
        gone = set(stale)
        return [r for r in pending if r.id not in gone]

    def _reroute_expired(self, channel: Channel, rows: list[OutboxRow], now: datetime) -> set[int]:
        """A message still failing at its deadline moves on to the next channel instead of waiting here.

        Returns the ids of the rows that left this channel. With no later channel able to carry a
        message, it stays and keeps retrying here: late is better than lost.
        """
        moved: set[int] = set()
        later = [self.channels[n] for n in self.order[self.order.index(channel.name) + 1:]]
        for row in rows:
            if row.deadline is None or row.attempts == 0 or now < row.deadline:
                continue
            targets = [c.name for c in later if c.groups or row.kind in ALERT_NOTICES]
            target = self.outbox.reroute(row, targets, now) if targets else None
            if target is None:
                continue
            moved.add(row.id)
            log.warning("channel %s could not deliver %s before its deadline; handed to %s",
                        channel.name, row.message_id, target)
        return moved

    def _send(self, channel: Channel, rows: list[OutboxRow], now: datetime) -> bool:
        ids = [r.id for r in rows]
        notice = self._notice(rows)
        # A digest's id names every row it carries: a robot channel remembers per id which parts of a split
        # message were accepted, so a retry that carries another set of rows must get another id (naming
        # only the first few once let a row that joined on a retry be marked sent without being sent).
        message_id = rows[0].message_id if len(rows) == 1 else (
            f"digest.{ids[0]}.{len(ids)}." + hashlib.sha256(",".join(map(str, ids)).encode()).hexdigest()[:16])
        self.outbox.claim(ids, now)
        try:
            outcome = channel.send(notice, message_id=message_id, now=now, sender=self.sender)
        except Exception as exc:  # an adapter bug is a retry, not a lost alert
            log.exception("channel %s raised", channel.name)
            outcome = Outcome.retry(None, f"adapter error: {exc}")
        if _own_limiter(channel) is None:
            self.limiters[channel.name].record(now)
        done = self.clock.now()
        if outcome.status == "ok":
            self.outbox.mark_sent(ids, done)
            self.sent_count += len(ids)
            return True
        self.failures[channel.name] = self.failures.get(channel.name, 0) + 1
        if outcome.status == "permanent":
            self.outbox.mark_dead(ids, done, outcome.reason)
            log.error("channel %s refused %s permanently: %s", channel.name, message_id, outcome.reason)
            return False
        attempts = max(r.attempts for r in rows) + 1
        delay = retry_delay(attempts - 1, rng=self.rng, minimum=outcome.retry_after)
        next_at = done + timedelta(seconds=delay)
        deadline = min((r.deadline for r in rows if r.deadline is not None), default=None)
        if deadline is not None and done < deadline < next_at and self._has_fallback(channel):
            # Past the deadline the message goes elsewhere: look again right then, not a backoff later.
            next_at = deadline
        self.outbox.mark_retry(ids, done, next_at, outcome.reason)
        log.warning("channel %s: %s (retry in %.1fs)", channel.name, outcome.reason,
                    (next_at - done).total_seconds())
        return False

    def _has_fallback(self, channel: Channel) -> bool:
        return self.order.index(channel.name) + 1 < len(self.order)

    def _notice(self, rows: list[OutboxRow]) -> Notice:
        alerts: list[dict[str, Any]] = []
        for r in rows:
            if "alert" in r.payload:
                alerts.append(r.payload["alert"])
            alerts.extend(r.payload.get("alerts", ()))
        if len(rows) == 1:
            kind = NoticeKind(rows[0].kind)
        elif all(r.kind in RESOLUTION_NOTICES for r in rows):
            kind = NoticeKind.RESOLVED
        else:
            kind = NoticeKind.DIGEST
        deadline = min((r.deadline for r in rows if r.deadline), default=None)
        # The rows' own creation time, not the send time: a retried message must carry the same body.
        created = min(r.created for r in rows)
        # Reviews, all-clears and device notices go alone (SINGLE_KINDS) and carry their own lines.
        title = rows[0].payload.get("title") if len(rows) == 1 else None
        lines = tuple(str(x) for x in rows[0].payload.get("lines", ())) if len(rows) == 1 else ()
        raw_sections = rows[0].payload.get("sections", ()) if len(rows) == 1 else ()
        sections = tuple(tuple(str(x) for x in sec) for sec in raw_sections if isinstance(sec, list) and sec)
        data = rows[0].payload.get("data") if len(rows) == 1 else None
        return Notice(kind=kind, alerts=tuple(alerts), shop=self.shop, source=self.source, created=created,
                      deadline=deadline, title=(str(title[0]), str(title[1])) if title else None, lines=lines,
                      sections=sections, data=data if isinstance(data, dict) else None)


def _own_limiter(channel: Channel) -> RateLimiter | None:
    # Not `getattr(...) or ...`: a RateLimiter with no sends yet has len() 0 and is falsy.
    limiter = getattr(channel, "limiter", None)
    return limiter if isinstance(limiter, RateLimiter) else None


def _limiter_for(channel: Channel) -> RateLimiter:
    own = _own_limiter(channel)
    return own if own is not None else RateLimiter(channel.limits)


def _seconds(delta: timedelta) -> float:
    return max(0.0, delta.total_seconds())

