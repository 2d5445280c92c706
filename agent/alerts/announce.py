"""Announcing a change: outbox rows now, inside the caller's transaction; listeners after the commit.

An alert change and the rows telling the channels about it become durable
together or not at all, because both are written in the pipeline's (or the
offline ``ack``'s) one journal transaction. The listeners (demo console,
replay printer, metrics) must hear only of what was committed, so the changes
wait here until the owner of the transaction takes them.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from agent.alerts.budget import NoiseBudget
from agent.alerts.lifecycle import TILL_NOTICES, NoticeKind
from agent.messages import AlertChange
from agent.model import Alert
from agent.store.journal import Journal


class Announcer:
    """Alert revisions go to every channel; channels people read also get reviews and reminders."""

    def __init__(self, journal: Journal, *, channels: Sequence[str] = (),
                 people_channels: Sequence[str] | None = None, budget: NoiseBudget | None = None,
                 event_channels: Sequence[str] = ()) -> None:
        self.journal = journal
        # Machine channels that asked for the till's own events too (a NATS stream with events on).
        self.event_channels = list(event_channels)
        # Quiet hours for people channels (agent/alerts/budget.py); None: everything goes at once.
        self.budget = budget
        self.channels = list(channels)
        self.people_channels = list(people_channels) if people_channels is not None else list(channels)
        self.changes: list[Any] = []
        self.enqueued = 0

    def route(self, channels: Sequence[str] | None, people_channels: Sequence[str] | None,
              event_channels: Sequence[str] | None = None) -> None:
        """New channel names after a reload; None keeps that list as it was."""
        if channels is not None:
            self.channels = list(channels)
        if people_channels is not None:
            self.people_channels = list(people_channels)
        if event_channels is not None:
            self.event_channels = list(event_channels)

    @property
    def machine_channels(self) -> list[str]:
        """The primary channels no person reads (webhooks, NATS): they get heartbeats, reviews as data."""
        people = set(self.people_channels)
        return [c for c in self.channels if c not in people]

    def alert(self, alert: Alert, notice: NoticeKind, now: datetime, *, message_id: str | None = None,
              channels: Sequence[str] | None = None) -> None:
        payload = {"notice": notice.value, "alert": alert.to_dict()}
        deadline = alert.suggestion.deadline if alert.suggestion else None
        release = self.budget.release(notice, alert, now) if self.budget is not None else None
        for channel in self.channels if channels is None else channels:
            held = channel in self.people_channels and release is not None
            if held and release is False:
                continue   # a resolution in quiet hours: nothing for a phone to do (machines still get it)
            self.journal.enqueue(message_id=message_id or f"{alert.id}.{alert.revision}", channel=channel,
                                 kind=notice.value, alert_id=alert.id, revision=alert.revision, payload=payload,
                                 now=now, deadline=deadline,
                                 not_before=release if held and isinstance(release, datetime) else None)
            self.enqueued += 1
        self.changes.append(AlertChange(alert, notice, now))

    def to_people(self, notice: NoticeKind, payload: dict[str, Any], now: datetime, *, message_id: str,
                  deadline: datetime | None, not_before: datetime | None = None) -> None:
        # Reviews come at their scheduled times (the review itself decides about quiet hours and passes
        # ``not_before``); a device notice in quiet hours waits for opening.
        held = (self.budget.release(notice, None, now)
                if self.budget is not None and notice == NoticeKind.DEVICE else not_before)
        for channel in self.people_channels:
            self.journal.enqueue(message_id=message_id, channel=channel, kind=notice.value, alert_id=None,
                                 revision=None, payload=payload, now=now, deadline=deadline,
                                 not_before=held if isinstance(held, datetime) else None)
            self.enqueued += 1

    def to_machines(self, notice: NoticeKind, data: dict[str, Any], now: datetime, *, message_id: str,
                    channels: Sequence[str] | None = None, deadline: datetime | None = None) -> None:
        """A notice about no alert for machine channels: ``data`` becomes the CloudEvent's data.

        Heartbeats, reviews and all-clears go to every machine channel (or to ``channels``, e.g. the one
        whose heartbeat is due); the till's own events (NoticeKind.EVENT) only to channels that asked.
        Quiet hours are for people: machines get everything at once.
        """
        if notice not in TILL_NOTICES:
            raise ValueError(f"{notice} is not a till notice for machines ({', '.join(sorted(TILL_NOTICES))})")
        targets = self.machine_channels if channels is None else list(channels)
        if notice == NoticeKind.EVENT:
            wanted = set(self.event_channels)
            targets = [c for c in targets if c in wanted]
        for channel in targets:
            self.journal.enqueue(message_id=message_id, channel=channel, kind=notice.value, alert_id=None,
                                 revision=None, payload={"notice": notice.value, "data": data}, now=now,
                                 deadline=deadline, not_before=None)
            self.enqueued += 1

    def note(self, change: Any) -> None:
        """A change for the listeners that writes no outbox row of its own (a batch closing)."""
        self.changes.append(change)

    def take(self) -> tuple[list[Any], int]:
        """What the committed transaction announced: (changes for the listeners, outbox rows written)."""
        taken = self.changes, self.enqueued
        self.changes, self.enqueued = [], 0
        return taken

    def mark(self) -> tuple[int, int]:
        """Where the announcements stand, for :meth:`rewind` when one item's writes are undone."""
        return len(self.changes), self.enqueued

    def rewind(self, mark: tuple[int, int]) -> None:
        """One item rolled back (a savepoint): forget what it announced, keep the rest."""
        del self.changes[mark[0]:]
        self.enqueued = mark[1]

    def discard(self) -> None:
        """The transaction rolled back: nothing it announced happened."""
        self.changes, self.enqueued = [], 0
