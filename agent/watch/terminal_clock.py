"""Terminal clock sanity: how far each terminal's clock is off, and the time rules should use instead.

A terminal stamps its own date and time; rules measure windows on it and forget what is older than
their horizon. A terminal whose clock is days behind would have every charge forgotten on arrival,
and a duplicate charge would never be seen. So each terminal's clock offset is estimated from
(receive time - terminal time) over its last few transactions, taking the smallest: transport delay
only ever adds to it, so the smallest lag is the one closest to the clock's own error (a backlog read
late makes lags larger, never smaller). Beyond the source's ``clock_skew`` the clock is judged wrong:
staff get one notice per terminal (not one per transaction), and the rules get the terminal's time
shifted by that offset, which keeps the spacing between its charges -- what duplicate windows measure.

Limit, stated: the very first transactions after a start whose transport held a backlog (a spool
filled while settleguard was down) look late by the downtime; beyond the threshold that reads as a
wrong clock until a live transaction arrives and the estimate drops back.
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo

# Lags remembered per terminal; the estimate is their minimum.
WINDOW = 8
META_KEY = "terminal_clocks"
# A new offset is applied only when the old one would leave transactions this far from their receive
# time: half the rules' day-long memory, so corrected times always stay inside it.
RESYNC = timedelta(hours=12)


@dataclass(frozen=True, slots=True)
class ClockWrong:
    """A terminal newly judged to have a wrong clock (what the staff notice says)."""

    terminal: str
    offset: timedelta       # receive time - terminal time: positive when the terminal is behind
    seen: datetime          # the terminal's own stamp on the transaction that showed it
    received: datetime


class TerminalClocks:
    def __init__(self, wrong: dict[str, timedelta] | None = None) -> None:
        self._lags: dict[str, deque[timedelta]] = {}
        self.wrong: dict[str, timedelta] = dict(wrong or {})   # terminal -> offset applied to its times

    # -- persistence (a journal meta value: the correction survives a restart, for warm-up) --------
    @classmethod
    def from_meta(cls, text: str | None) -> TerminalClocks:
        try:
            raw = json.loads(text) if text else {}
            return cls({str(k): timedelta(seconds=float(v)) for k, v in raw.items()})
        except (ValueError, TypeError, AttributeError):
            return cls()  # an unreadable value only costs the warm-up correction

    def to_meta(self) -> str:
        return json.dumps({k: v.total_seconds() for k, v in sorted(self.wrong.items())})

    # -- the check ---------------------------------------------------------------------------
    def observe(self, terminal: str, stamped: datetime, received: datetime,
                threshold: timedelta) -> tuple[datetime, ClockWrong | None, bool]:
        """One transaction: (the time rules should use, a newly wrong clock or None, state changed)."""
        if threshold <= timedelta(0):
            return stamped, None, False
        lags = self._lags.get(terminal)
        if lags is None:
            if len(self._lags) >= 10_000:  # a flood of invented terminal ids must not grow this forever
                self._lags.clear()
            lags = self._lags[terminal] = deque(maxlen=WINDOW)
        lags.append(received - stamped)
        # Smallest in time order: for a clock ahead the lags are negative and the smallest is the most
        # negative one -- the same rule, the sign says which way the clock is off.
        estimate = min(lags)
        if abs(estimate) <= threshold:
            changed = self.wrong.pop(terminal, None) is not None
            return stamped, None, changed
        before = self.wrong.get(terminal)
        if before is not None and abs(estimate - before) <= max(threshold, RESYNC):
            # The estimate settles over the first transactions and wobbles with transport delay; the
            # offset applied stays put, so the spacing between this terminal's charges (what duplicate
            # windows measure) is kept exactly.
            return stamped + before, None, False
        self.wrong[terminal] = estimate
        news = ClockWrong(terminal, estimate, stamped, received) if before is None else None
        return stamped + estimate, news, True

    def corrected(self, terminal: str | None, stamped: datetime) -> datetime:
        """A stored transaction's time as the rules saw it (after a restart, from the saved offsets)."""
        offset = self.wrong.get(terminal or "")
        return stamped + offset if offset is not None else stamped


def describe(news: ClockWrong, tz: tzinfo) -> tuple[tuple[str, str], list[str]]:
    """(headline zh/en, lines) of the staff notice. Chinese only below the headline: a cashier reads it."""
    seconds = abs(int(news.offset.total_seconds()))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    amount = "".join(part for part in (f"{days} 天" if days else "", f"{hours} 小时" if hours else "",
                                       f"{minutes} 分" if minutes and not days else "")) or "不到 1 分钟"
    way = "慢" if news.offset > timedelta(0) else "快"
    return (("终端时钟不准", "Terminal clock is wrong"),
            [f"终端 {news.terminal} 的时钟{way}了约 {amount}（终端时间 {news.seen.astimezone(tz):%m-%d %H:%M}）",
             "请在终端上校正日期和时间；在此之前按收到时间检查重复扣款"])
