"""The noise budget: when a phone may hear from settleguard, and how often about one alert.

One object answers every "when" question for people channels (chat robots, the printer), so the
daemon's scheduler and ``replay`` ask the same thing (they run the same code on different clocks):

* **Shop days.** A shop day runs from its first opening to its last closing (``[shop.hours]``; a
  range past midnight belongs to the day it starts on). A day that is closed (no ranges, a configured
  closure, a public holiday when ``closed_on_holidays``) has no shop day: no review, no all-clear.
* **Quiet hours** (``[notify] quiet_hours``): "auto" is from the last closing + ``quiet_grace`` to
  the next opening, a closed day quiet throughout; a shop without ``[shop.hours]`` has none. A fixed
  "22:00-08:00" is quiet every day in that range.
* **Critical** (what may push in quiet hours): a likely error (the remedy is a void) of severity
  ``high`` whose void deadline comes before the quiet hours end. It cannot wait for opening: by then
  the batch has settled and a void became a refund. Everything else waits.
* **Held, not sent**: a non-critical finding or escalation for people in quiet hours is queued with
  ``not_before`` = the end of the quiet hours. The delivery loop groups what falls due together, so
  the night's findings arrive as one message at opening, and a finding resolved meanwhile is
  superseded and never sent. Resolutions themselves (voided, dismissed, expired) are not sent to
  phones in quiet hours: they ask nothing of anyone, and machine endpoints still get them at once.
* **Reviews**: ``settlement.review_lead`` before the earlier of the day's closing and the cutoff
  (a cutoff before the day's opening is the next day's), plus ``settlement.review_times``.
* **Reminders**: an open finding is reminded at most ``[notify] reminders`` times, the first
  ``delivery.repeat_interval`` after its last notice, each next one ``reminder_growth`` times longer;
  an escalated one at most ``escalated_reminders`` times, ``settlement.follow_up_days`` apart, then
  only in the review's lines until ``refund_window`` after the escalation. A notice sent while quiet
  counts from the end of the quiet hours (that is when it reached a phone); a reminder that would
  fall due in quiet hours waits until one interval after they end, so it never joins the opening's
  message as a second one. Any other state (answered, voided, void printed or claimed) gets none.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, tzinfo
from typing import Any

from agent.alerts.lifecycle import RESOLUTION_NOTICES, AlertState, NoticeKind
from agent.rules.calendar import HolidayDataMissing, ShopCalendar

# How far ahead the next opening is looked for: a shop shut for longer releases held notices at once.
LOOKAHEAD_DAYS = 21
# Alert states that are reminded, and how (the rest: never).
REMINDED = frozenset({AlertState.OPEN, AlertState.ESCALATED})


class NoiseBudget:
    def __init__(self, loaded: Any) -> None:
        cfg = loaded.config
        self.tz: tzinfo = loaded.tz
        self.calendar = ShopCalendar(loaded.hours, self.tz)
        self.notify = cfg.notify
        self.settlement = cfg.settlement
        self.cutoff: time | None = cfg.settlement.cutoff_time
        self.first_interval: timedelta = cfg.delivery.repeat_interval
        self.follow_up = timedelta(days=cfg.settlement.follow_up_days)
        self._has_hours = self.calendar.configured and not self.calendar.always_open
        self._spans: dict[date, tuple[datetime, datetime] | None] = {}

    # -- the shop's days ------------------------------------------------------------------------
    def is_closed(self, day: date) -> bool:
        """No trading at all on ``day`` (only meaningful with [shop.hours])."""
        return self._has_hours and self.span(day) is None

    def span(self, day: date) -> tuple[datetime, datetime] | None:
        """(first opening, last closing) of the shop day starting on ``day``, aware; None when closed.

        Without [shop.hours] (or open around the clock) every day is 00:00-24:00.
        """
        if day in self._spans:
            return self._spans[day]
        found: tuple[datetime, datetime] | None
        if not self._has_hours:
            found = (self._aware(datetime.combine(day, time())),
                     self._aware(datetime.combine(day + timedelta(days=1), time())))
        elif self._closed_by_calendar(day):
            found = None
        else:
            intervals = self.calendar.intervals(day)
            found = ((self._aware(min(s for s, _ in intervals)), self._aware(max(e for _, e in intervals)))
                     if intervals else None)
        if len(self._spans) > 800:
            self._spans.clear()
        self._spans[day] = found
        return found

    def _closed_by_calendar(self, day: date) -> bool:
        if self.calendar.is_closure(day):
            return True
        if self.calendar.hours.closed_on_holidays:
            try:
                return self.calendar.is_holiday(day)[0]
            except HolidayDataMissing:
                return False   # never guess a closure: the calendar's own warning says the data is missing
        return False

    def _aware(self, wall: datetime) -> datetime:
        return wall.replace(tzinfo=self.tz)

    # -- quiet hours ----------------------------------------------------------------------------
    def quiet_until(self, now: datetime) -> datetime | None:
        """When the quiet hours around ``now`` end; None when ``now`` is not quiet."""
        mode = self.notify.quiet_hours
        if mode == "off":
            return None
        fixed = self.notify.fixed_quiet()
        local = now.astimezone(self.tz)
        if fixed is not None:
            return self._fixed_until(local, *fixed)
        if not self._has_hours:
            return None
        grace = self.notify.quiet_grace
        today = local.date()
        for back in (2, 1, 0):
            s = self.span(today - timedelta(days=back))
            if s is not None and s[0] <= local <= s[1] + grace:
                return None
        for ahead in range(0, LOOKAHEAD_DAYS):
            s = self.span(today + timedelta(days=ahead))
            if s is not None and s[0] > local:
                return s[0]
        return None   # shut for weeks: holding a notice that long would lose it

    def _fixed_until(self, local: datetime, start: time, end: time) -> datetime | None:
        day = local.date()
        for d in (day - timedelta(days=1), day):
            begin = self._aware(datetime.combine(d, start))
            finish = self._aware(datetime.combine(d if end > start else d + timedelta(days=1), end))
            if begin <= local < finish:
                return finish
        return None

    def is_critical(self, alert: Any, now: datetime) -> bool:
        """A likely error, high severity, whose void deadline falls before the quiet hours end."""
        until = self.quiet_until(now)
        if until is None:
            return False
        suggestion = getattr(alert, "suggestion", None)
        deadline = suggestion.deadline if suggestion is not None else None
        return (_likely_error(alert) and alert.severity == "high" and deadline is not None
                and now <= deadline < until)

    def release(self, kind: NoticeKind, alert: Any, now: datetime) -> datetime | bool | None:
        """For one people-channel notice at ``now``: None = send now, a datetime = hold until then,
        False = not for phones at all (a resolution in quiet hours)."""
        if kind == NoticeKind.EXPIRED:
            return False   # nobody acted and nothing is left to do: the journal and machines have it
        if kind == NoticeKind.ESCALATED and self._has_quiet():
            # A refund is not urgent (its window is days): it comes with the next opening's message.
            return self.next_opening(now)
        until = self.quiet_until(now)
        if until is None:
            return None
        if alert is not None and self.is_critical(alert, now):
            return None
        if kind in RESOLUTION_NOTICES:
            return False
        return until

    # -- reviews --------------------------------------------------------------------------------
    @property
    def has_review(self) -> bool:
        """Whether any day can have a review: a closing time, a cutoff or an extra time to anchor it."""
        return self._has_hours or self.cutoff is not None or bool(self.settlement.review_times)

    def review_times(self, day: date) -> list[datetime]:
        """The reviews of the shop day starting on ``day``; none on a closed day."""
        span = self.span(day)
        if span is None:
            return []
        out: set[datetime] = set()
        anchors = []
        if self._has_hours:
            anchors.append(span[1])
        if self.cutoff is not None:
            cut = self._aware(datetime.combine(day, self.cutoff))
            if cut <= span[0]:
                cut += timedelta(days=1)   # a cutoff before opening settles the day that is opening
            anchors.append(cut)
        if anchors:
            out.add(min(anchors) - self.settlement.review_lead)
        for text in self.settlement.review_times:
            hh, mm = text.split(":")
            out.add(self._aware(datetime.combine(day, time(int(hh), int(mm)))))
        return sorted(out)

    # -- reminders ------------------------------------------------------------------------------
    def reached_phone(self, at: datetime) -> datetime:
        """When a notice written at ``at`` reached a phone: held through quiet hours, or at once."""
        return self.quiet_until(at) or at

    def reminder_due(self, alert: Any, sent: int, last_notice: datetime, now: datetime) -> datetime | None:
        """When the next reminder of ``alert`` is due, ``sent`` reminders of its revision already out;
        None for never.

        An open finding is not reminded within one interval of the day's review (the review brings it
        up) nor after it that shop day: it resumes one interval after the next opening. An escalated
        one is reminded just before an opening, so it is queued with the night's held notices and
        reaches the phone in the same message.
        """
        state = alert.state
        reached = self.reached_phone(last_notice)
        if state == AlertState.OPEN:
            if sent >= (self.notify.reminders if _likely_error(alert) else self.notify.verify_reminders):
                return None
            interval = self.first_interval * (self.notify.reminder_growth ** sent)
            due = reached + interval
            review = self.next_review(reached)
            if review is not None and due > review - self.first_interval:
                after = self.next_opening(review)
                if after is None:
                    return None
                due = after + interval
        elif state == AlertState.ESCALATED:
            if sent >= self.notify.escalated_reminders or now - alert.updated > self.notify.refund_window:
                return None
            interval = self.follow_up
            due = reached + interval
            opening = self.next_opening(due, at_or_after=True) if self._has_quiet() else None
            if opening is not None:
                return opening - timedelta(minutes=1)
            return due
        else:
            return None
        until = self.quiet_until(due)
        if until is not None:
            due = until + interval
        return due

    def _has_quiet(self) -> bool:
        return self.notify.quiet_hours == "auto" and self._has_hours

    def next_review(self, after: datetime) -> datetime | None:
        day = after.astimezone(self.tz).date() - timedelta(days=1)
        for offset in range(0, 4):
            for at in self.review_times(day + timedelta(days=offset)):
                if at > after:
                    return at
        return None

    def next_opening(self, after: datetime, *, at_or_after: bool = False) -> datetime | None:
        """The first opening of a shop day after ``after`` (None without opening hours)."""
        if not self._has_hours:
            return None
        day = after.astimezone(self.tz).date()
        for offset in range(0, LOOKAHEAD_DAYS):
            s = self.span(day + timedelta(days=offset))
            if s is not None and (s[0] > after or (at_or_after and s[0] == after)):
                return s[0]
        return None

    def reminder_horizon(self, now: datetime) -> dict[str, datetime]:
        """Per state, the oldest last change that can still be reminded (escalated: the refund window)."""
        return {AlertState.ESCALATED.value: now - self.notify.refund_window}

    def in_refund_window(self, alert: Any, now: datetime) -> bool:
        return alert.state == AlertState.ESCALATED and now - alert.updated <= self.notify.refund_window


def _likely_error(alert: Any) -> bool:
    certainty = getattr(alert, "certainty", None)
    if certainty is not None:
        return bool(certainty == "error")
    suggestion = getattr(alert, "suggestion", None)
    return suggestion is not None and suggestion.action == "void"
