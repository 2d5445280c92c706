"""The delivery thread: drains the outbox to the channels, grouping for people, one-by-one for machines.

* Machine channels (webhook) get one message per alert revision, in order,
  with a ``webhook-id`` that is stable across retries.
* Chat robots (people) get grouped messages: the first waits ``group_wait``
  to batch findings, later ones at most one per ``group_interval``.
* A failure is retried with full-jitter backoff (Retry-After is a floor)
  until the message's deadline, then handed to the next channel; a permanent
  failure goes to the dead-letter state. Nothing unsent is ever deleted.
"""

from __future__ import annotations

import logging
import random
import threading
import time as _time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from agent.channels.base import Channel, HttpSender, Notice, Outcome, RateLimiter
from agent.config import DeliveryConfig
from agent.outbox import Outbox, OutboxRow, backoff_delay

log = logging.getLogger("settleguard.delivery")

Clock = Callable[[], datetime]


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
        # HTTP channels keep their own limiter (they also hold it on Retry-After); share it, never double it.
        self.limiters = {c.name: getattr(c, "limiter", None) or RateLimiter(c.limits) for c in channels}
        self.last_group_sent: dict[str, datetime] = {}
        self.wake = threading.Event()
        self.last_progress = _time.monotonic()
        self.failures: dict[str, int] = {c.name: 0 for c in channels}
        self.sent_count = 0

    # -- thread ---------------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        recovered = self.outbox.recover()
        if recovered:
            log.warning("re-sending %d message(s) interrupted by the last shutdown", recovered)
        while not stop.is_set():
            self.last_progress = _time.monotonic()
            try:
                wait = self.step()
            except Exception:  # never let one bad row kill delivery; it is retried later
                log.exception("delivery step failed")
                wait = 5.0
            self.wake.wait(timeout=max(0.01, min(wait, 1.0)))
            self.wake.clear()

    def step(self) -> float:
        """Send what is due on every channel; return seconds until something may be due."""
        now = self.clock()
        next_wait = 60.0
        for name in self.order:
            channel = self.channels[name]
            wait = self._step_channel(channel, now)
            next_wait = min(next_wait, wait)
        return next_wait

    def _step_channel(self, channel: Channel, now: datetime) -> float:
        pending = self.outbox.pending(channel.name)
        if not pending:
            return 60.0
        rows = [r for r in pending if r.next_at <= now][:200]
        if not rows:
            first_due = min(r.next_at for r in pending)
            return max(0.0, (first_due - now).total_seconds())
        rows = self._reroute_expired(channel, rows, now)
        if not rows:
            return 0.0
        wait = self.limiters[channel.name].wait(now)
        if wait > 0:
            return wait
        if channel.groups:
            # A review already lists every open finding: it goes out on its own, ahead of the digest.
            singles = [r for r in rows if r.kind in ("review", "all_clear")]
            if singles:
                self._send(channel, singles[:1], now)
                self.last_group_sent[channel.name] = now
                return 0.0
            oldest = min(r.created for r in rows)
            if now - oldest < self.config.group_wait and channel.name not in self.last_group_sent:
                return (oldest + self.config.group_wait - now).total_seconds()
            last = self.last_group_sent.get(channel.name)
            if last is not None and now - last < self.config.group_interval:
                return (last + self.config.group_interval - now).total_seconds()
            self._send(channel, rows, now)
            self.last_group_sent[channel.name] = now
            return 0.0
        # Machine channel: strictly in order, one revision per message; a row waiting for its retry
        # holds back every later row of that channel.
        head = pending[0]
        if head.id != rows[0].id:
            return max(0.0, (head.next_at - now).total_seconds())
        for row in rows:
            if self.limiters[channel.name].wait(self.clock()) > 0:
                return self.limiters[channel.name].wait(self.clock())
            if not self._send(channel, [row], self.clock()):
                break
        return 0.0

    def _reroute_expired(self, channel: Channel, rows: list[OutboxRow], now: datetime) -> list[OutboxRow]:
        """A message still failing past its deadline moves on to the next channel instead of waiting here."""
        keep = []
        later = self.order[self.order.index(channel.name) + 1:]
        for row in rows:
            if row.deadline is not None and row.attempts > 0 and now > row.deadline and later:
                self.outbox.reroute(row, later[0], now)
                self.outbox.mark_dead([row.id], now, f"deadline passed; handed to channel {later[0]}")
                log.warning("channel %s could not deliver %s before its deadline; trying %s",
                            channel.name, row.message_id, later[0])
            else:
                keep.append(row)
        return keep

    def _send(self, channel: Channel, rows: list[OutboxRow], now: datetime) -> bool:
        ids = [r.id for r in rows]
        notice = self._notice(rows, now)
        message_id = rows[0].message_id if len(rows) == 1 else "digest." + ".".join(str(i) for i in ids[:8])
        self.outbox.claim(ids, now)
        try:
            outcome = channel.send(notice, message_id=message_id, now=now, sender=self.sender)
        except Exception as exc:  # an adapter bug is a retry, not a lost alert
            log.exception("channel %s raised", channel.name)
            outcome = Outcome.retry(None, f"adapter error: {exc}")
        if not hasattr(channel, "limiter"):
            self.limiters[channel.name].record(now)
        done = self.clock()
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
        delay = backoff_delay(attempts - 1, rng=self.rng, minimum=outcome.retry_after)
        self.outbox.mark_retry(ids, done, done + timedelta(seconds=delay), outcome.reason)
        log.warning("channel %s: %s (retry in %.1fs)", channel.name, outcome.reason, delay)
        return False

    def _notice(self, rows: list[OutboxRow], now: datetime) -> Notice:
        alerts: list[dict] = []
        for r in rows:
            if "alert" in r.payload:
                alerts.append(r.payload["alert"])
            alerts.extend(r.payload.get("alerts", ()))
        kind = _notice_kind(rows[0].kind) if len(rows) == 1 else "digest"
        deadline = min((r.deadline for r in rows if r.deadline), default=None)
        # The rows' own creation time, not the send time: a retried message must carry the same body.
        created = min(r.created for r in rows)
        return Notice(kind=kind, alerts=tuple(alerts), shop=self.shop, source=self.source, created=created,
                      deadline=deadline)


def _notice_kind(row_kind: str) -> str:
    return {"opened": "alert", "updated": "update", "voided": "resolution", "dismissed": "resolution",
            "escalated": "escalation", "expired": "resolution"}.get(row_kind, row_kind)
