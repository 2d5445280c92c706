"""The noise budget's clock: review times, quiet hours, what is critical (agent/alerts/budget.py)."""

from __future__ import annotations

import queue
from datetime import date, datetime, timedelta

import pytest

from agent.alerts.budget import NoiseBudget
from agent.alerts.lifecycle import NoticeKind
from agent.config import ConfigError
from agent.messages import Command
from agent.model import Alert, Suggestion
from agent.schedule import Scheduler, fire_times, plan
from drivers.clock import ManualClock
from tests.helpers import EXAMPLE_HOURS, SHANGHAI, config, sale

# The example shop: closes 21:30 Monday-Thursday, 22:00 Friday-Sunday, cutoff 23:00.
HOURS = EXAMPLE_HOURS


def at(d: int, hour: int, minute: int = 0) -> datetime:
    """November 2026: the 23rd is a Monday, the 29th a Sunday."""
    return datetime(2026, 11, d, hour, minute, tzinfo=SHANGHAI)


def test_a_shop_closing_2130_with_cutoff_2300_is_reviewed_before_it_closes() -> None:
    loaded = config(HOURS)
    budget = NoiseBudget(loaded)
    assert budget.review_times(date(2026, 11, 26)) == [at(26, 21, 0)], "Thursday: 30 min before 21:30"
    assert budget.review_times(date(2026, 11, 27)) == [at(27, 21, 30)], "Friday: 30 min before 22:00"
    # The daemon's scheduler posts it there (the old plan said 22:30: cutoff minus the lead).
    clock = ManualClock(at(26, 20, 59, ))
    inbox: queue.Queue[Command] = queue.Queue()
    scheduler = Scheduler(loaded, inbox, clock)
    clock.set(at(26, 21, 0))
    assert "review" in scheduler.run_due()
    clock.set(at(26, 22, 30))
    assert "review" not in scheduler.run_due()


def test_the_earlier_of_cutoff_and_closing_wins_and_extra_times_are_added() -> None:
    loaded = config(HOURS.replace('fri = ["09:00-22:00"]', 'fri = ["09:00-02:00"]')
                    + '\n[settlement]\ncutoff = "23:00"\nreview_lead = "45m"\nreview_times = ["14:30"]\n',
                    base='[shop]\nname = "x"\ntimezone = "Asia/Shanghai"\n')
    budget = NoiseBudget(loaded)
    # Open until 02:00: the 23:00 cutoff comes first.
    assert budget.review_times(date(2026, 11, 27)) == [at(27, 14, 30), at(27, 22, 15)]
    assert budget.review_times(date(2026, 11, 26)) == [at(26, 14, 30), at(26, 20, 45)]


def test_a_closed_day_has_no_review_and_no_all_clear() -> None:
    loaded = config(HOURS + '\nclosures = ["2026-11-25"]\n')
    budget = NoiseBudget(loaded)
    assert budget.review_times(date(2026, 11, 29)) == [], "Sunday is closed"
    assert budget.review_times(date(2026, 11, 25)) == [], "a configured closure"
    reviews = [t for t, name in fire_times(plan(loaded), at(23, 0), at(30, 23, 59)) if name == "review"]
    assert [t.date().day for t in reviews] == [23, 24, 26, 27, 28, 30]


def test_quiet_hours_run_from_closing_plus_grace_to_the_next_opening() -> None:
    budget = NoiseBudget(config(HOURS))
    assert budget.quiet_until(at(26, 21, 59)) is None, "within the 30 min grace after 21:30"
    assert budget.quiet_until(at(26, 22, 1)) == at(27, 9, 0)
    assert budget.quiet_until(at(27, 3, 0)) == at(27, 9, 0)
    assert budget.quiet_until(at(27, 12, 0)) is None
    # Saturday night to Monday morning: the closed Sunday is quiet throughout.
    assert budget.quiet_until(at(29, 15, 0)) == at(30, 9, 0)
    assert budget.quiet_until(at(28, 23, 0)) == at(30, 9, 0)


def test_fixed_and_no_quiet_hours() -> None:
    fixed = NoiseBudget(config(HOURS + '\n[notify]\nquiet_hours = "22:00-07:30"\n'))
    assert fixed.quiet_until(at(26, 23, 0)) == at(27, 7, 30)
    assert fixed.quiet_until(at(27, 7, 0)) == at(27, 7, 30)
    assert fixed.quiet_until(at(27, 8, 0)) is None
    off = NoiseBudget(config(HOURS + '\n[notify]\nquiet_hours = "off"\n'))
    assert off.quiet_until(at(27, 3, 0)) is None
    always_open = NoiseBudget(config())
    assert always_open.quiet_until(at(27, 3, 0)) is None, "no [shop.hours]: no quiet hours in auto"


def test_a_bad_quiet_hours_value_is_refused_with_its_field() -> None:
    with pytest.raises(ConfigError, match=r"notify\.quiet_hours"):
        config('\n[notify]\nquiet_hours = "night"\n')


def _alert(severity: str, action: str, deadline: datetime | None, state: str = "open") -> Alert:
    """A finding whose remedy is ``action``: a void is a likely error, a check something to verify."""
    txn = sale("000101", 12800, at(26, 21, 45))
    return Alert(id="01ABC", revision=1, rule="DUP-001", rule_version="1", severity=severity, state=state,
                 reason="", reason_zh="", evidence={}, transactions=(txn,),
                 suggestion=Suggestion(action, "000101", 12800, "", "", deadline), created=at(26, 21, 45),
                 updated=at(26, 21, 45), key="k", certainty="verify" if action == "check" else "error")


def test_critical_is_a_likely_error_of_high_severity_whose_void_deadline_falls_in_the_quiet_hours() -> None:
    budget = NoiseBudget(config(HOURS))
    night = at(26, 22, 10)
    cutoff = at(26, 23, 0)
    assert budget.is_critical(_alert("high", "void", cutoff), night)
    assert budget.release(NoticeKind.OPENED, _alert("high", "void", cutoff), night) is None, "pushed now"
    # Any one missing: it waits for the opening.
    assert budget.release(NoticeKind.OPENED, _alert("medium", "void", cutoff), night) == at(27, 9, 0)
    assert budget.release(NoticeKind.OPENED, _alert("high", "check", cutoff), night) == at(27, 9, 0)
    assert budget.release(NoticeKind.OPENED, _alert("high", "void", at(27, 23, 0)), night) == at(27, 9, 0)
    # Resolutions ask nothing of anyone: not sent to phones in quiet hours; expiries never.
    assert budget.release(NoticeKind.DISMISSED, _alert("high", "check", cutoff, "dismissed"), night) is False
    assert budget.release(NoticeKind.EXPIRED, _alert("low", "check", cutoff, "expired"), at(26, 12)) is False
    # Escalations come with the next opening's message.
    assert budget.release(NoticeKind.ESCALATED, _alert("high", "refund", None, "escalated"),
                          at(26, 23, 0)) == at(27, 9, 0)
    assert budget.release(NoticeKind.OPENED, _alert("high", "check", cutoff), at(26, 12, 0)) is None


def test_reminders_grow_stop_at_the_cap_and_leave_the_review_to_remind() -> None:
    loaded = config(HOURS + '\n[notify]\nreminders = 3\n')
    budget = NoiseBudget(loaded)
    a = _alert("high", "void", at(26, 23, 0))
    opened = at(26, 11, 0)
    assert budget.reminder_due(a, 0, opened, opened) == opened + timedelta(minutes=30)
    assert budget.reminder_due(a, 1, at(26, 11, 30), opened) == at(26, 12, 30)
    assert budget.reminder_due(a, 2, at(26, 12, 30), opened) == at(26, 14, 30)
    assert budget.reminder_due(a, 3, at(26, 14, 30), opened) is None, "the cap"
    # Due within an interval of the 21:00 review: the review reminds; the next one after opening.
    assert budget.reminder_due(a, 0, at(26, 20, 40), opened) == at(27, 9, 30)
    # A notice written in quiet hours reached the phone at opening: the interval counts from there.
    assert budget.reminder_due(a, 0, at(26, 23, 14), opened) == at(27, 9, 30)
    for state in ("voided", "refunded", "dismissed", "void_printed", "void_claimed", "expired"):
        assert budget.reminder_due(_alert("high", "void", None, state), 0, opened, opened) is None
