"""Telling people again: the pre-close review of open findings, and reminders of unanswered ones.

Both are for people (chat robots, the printer); machine endpoints already got
every alert revision. Neither changes an alert's state: they only note when
it was last brought up, so reminders keep their interval.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, time, timedelta, tzinfo
from typing import Any

from agent.alerts.announce import Announcer
from agent.alerts.lifecycle import AWAITING_VOID, AlertState, NoticeKind
from agent.alerts.remedy import next_cutoff
from agent.messages import ReviewNotice
from agent.store.journal import Journal


def review(journal: Journal, announcer: Announcer, now: datetime, *, cutoff: time | None, tz: tzinfo,
           all_clear: bool, lines: Sequence[str] = (), saw_nothing: bool = False) -> dict[str, Any]:
    """One message listing every finding still awaiting its void, with the steps and the time left.

    ``lines`` are the day's facts (agent/watch/wires.py ``day_lines``: today's count and total, quiet
    sources, unreadable input), so "all clear" can be told from "saw nothing"; with ``saw_nothing``
    the all-clear's headline says that instead.
    """
    alerts = tuple(journal.alerts(states=AWAITING_VOID))
    deadline = next_cutoff(now, cutoff, tz)
    journal.set_meta("last_review", now.isoformat())
    if not alerts and not all_clear:
        return {"ok": True, "listed": 0}
    notice = NoticeKind.REVIEW if alerts else NoticeKind.ALL_CLEAR
    payload: dict[str, Any] = {"notice": notice.value, "alerts": [a.to_dict() for a in alerts], "lines": list(lines)}
    if saw_nothing and not alerts:
        payload["title"] = ["今日未收到任何交易", "No transactions seen today"]
    announcer.to_people(notice, payload, now, message_id=f"{notice}.{now.strftime('%Y%m%dT%H%M%S')}",
                        deadline=deadline)
    for a in alerts:
        journal.touch_alert(a.id, now)
    announcer.note(ReviewNotice(now, alerts, deadline))
    return {"ok": True, "listed": len(alerts)}


def reminders(journal: Journal, announcer: Announcer, now: datetime, *, repeat_interval: timedelta,
              follow_up: timedelta) -> dict[str, Any]:
    """Unanswered findings repeat at a long interval; escalated ones (a refund to do) every few days."""
    if not announcer.people_channels:
        return {"ok": True, "reminded": 0}  # machines got every revision already; reminders are for people
    due = journal.alerts_due_reminder({AlertState.OPEN: now - repeat_interval,
                                       AlertState.ESCALATED: now - follow_up})
    for alert in due:
        journal.touch_alert(alert.id, now)
        announcer.alert(alert, NoticeKind.REMINDER, now, channels=announcer.people_channels,
                        message_id=f"{alert.id}.{alert.revision}.reminder.{now.strftime('%Y%m%dT%H%M')}")
    return {"ok": True, "reminded": len(due)}
