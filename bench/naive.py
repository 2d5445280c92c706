"""The naive reference detector (issue 21): the yardstick every evaluation figure stands beside.

What anyone would write in an afternoon, scored on exactly the days the rules are (agent/sim/evaluate.py):

* DUP: the same card charged the same amount again within ``DUP_WINDOW``;
* AMT: ln(amount) more than ``Z_CUT`` robust spreads (1.4826 x MAD) above the history's median;
* TIME: a sale outside the shop's weekly hours (``GRACE`` either side), on a day the official holiday
  calendar (chinesecalendar) or the shop's closures say is shut; make-up workdays (调休) open with the
  configured hours. It does not share code with the rules on purpose.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from datetime import date, datetime, time, timedelta
from statistics import median

import chinese_calendar

from agent.model import Transaction
from agent.sim.shops import ShopProfile

DUP_WINDOW = timedelta(minutes=10)
Z_CUT = 3.5
GRACE = timedelta(minutes=15)
WEEKDAY_INDEX = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def naive_alerts(history: Sequence[int], txns: Iterable[Transaction], shop: ShopProfile,
                 closures: Sequence[date] = ()) -> list[tuple[str, Transaction]]:
    """(family, transaction) for each alert the naive detector raises, in time order of the charges."""
    logs = [math.log(a) for a in history if a > 0]
    med = median(logs)
    spread = 1.4826 * median(abs(x - med) for x in logs) or 1e-9
    seen: dict[tuple[str | None, int], datetime] = {}
    alerts: list[tuple[str, Transaction]] = []
    for t in sorted(txns, key=lambda t: t.time or datetime.min):
        if t.kind != "sale" or t.result != "approved" or t.time is None:
            continue
        last = seen.get((t.card, t.amount_minor))
        if last is not None and t.time - last <= DUP_WINDOW:
            alerts.append(("DUP", t))
        seen[(t.card, t.amount_minor)] = t.time
        if (math.log(t.amount_minor) - med) / spread > Z_CUT:
            alerts.append(("AMT", t))
        if not _open(t.time, shop, closures):
            alerts.append(("TIME", t))
    return alerts


def _open(when: datetime, shop: ShopProfile, closures: Sequence[date]) -> bool:
    day = when.date()
    if day in closures:
        return False
    # A public holiday (named in the calendar), not an ordinary weekend.
    holiday = chinese_calendar.is_holiday(day) and chinese_calendar.get_holiday_detail(day)[1] is not None
    if holiday and shop.closed_on_holidays:
        return False
    ranges = shop.hours[day.weekday()]
    if day.weekday() >= 5 and chinese_calendar.is_workday(day) and shop.makeup_workday_hours:
        ranges = shop.hours[WEEKDAY_INDEX.index(shop.makeup_workday_hours)]
    for r in ranges:
        start, end = (time.fromisoformat(x) for x in r.split("-"))
        lo = datetime.combine(day, start, tzinfo=when.tzinfo) - GRACE
        hi = datetime.combine(day, end, tzinfo=when.tzinfo) + GRACE
        if lo <= when <= hi:
            return True
    return False
