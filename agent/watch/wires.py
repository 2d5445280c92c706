"""Dead wires and blind taps: a source that says nothing through opening hours is reported, not trusted.

A reader reports what it saw (agent/sources.py ``wire_command``: when bytes and transactions last
came, decoder trouble); the pipeline runs :class:`WireWatch` on those reports every half minute:

* **silent** (a dead wire): no bytes for ``silence`` of *opening-hours* time;
* **blind** (a blind tap): bytes, but no transaction for that long (receipts that match no
  template, a decoder that fails on every frame).

Each becomes ONE staff notice when it starts and one when it ends (bytes or transactions are back),
never one per check. The episode and today's counters are kept in journal meta (``wires``): they
survive a restart, and ``doctor`` and the metrics read them from the journal.

``silence`` per ``[[source]]``; absent, it comes from the shop's own history: over the last 28
days, each day's longest gap (opening-hours time) between two transactions from that source; the
threshold is twice the median of those, at least 30 minutes and at most 4 hours. With fewer than
7 such days it is 2 hours. Without configured opening hours there is no "should be busy" time, so
the check is off (doctor says so).
"""

from __future__ import annotations

import itertools
import json
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from agent.rules.calendar import ShopCalendar
from agent.store.queries import JournalReader
from agent.units import format_money

META_KEY = "wires"
FLOOR = timedelta(minutes=30)
CAP = timedelta(hours=4)
NO_HISTORY = timedelta(hours=2)
HISTORY_DAYS = 28
MIN_DAYS = 7
LOOK_BACK = timedelta(days=14)   # open time is counted at most this far back (a source dead for weeks)
COUNTERS = ("unmatched", "decoder_errors", "bad_frames", "quarantined")


def open_time(calendar: ShopCalendar, start: datetime, end: datetime) -> timedelta:
    """How much of [start, end) the shop was open."""
    if end <= start:
        return timedelta(0)
    start = max(start, end - LOOK_BACK)
    if calendar.always_open:
        return end - start
    tz = calendar.tz
    a = start.astimezone(tz).replace(tzinfo=None)
    b = end.astimezone(tz).replace(tzinfo=None)
    total = timedelta(0)
    day = a.date() - timedelta(days=1)   # an interval may start the evening before and run past midnight
    while day <= b.date():
        for lo, hi in calendar.intervals(day):
            overlap = min(hi, b) - max(lo, a)
            if overlap > timedelta(0):
                total += overlap
        day += timedelta(days=1)
    return total


def derive_silence(reader: JournalReader, calendar: ShopCalendar, source: str, now: datetime) -> timedelta:
    """The source's own quiet: twice the median longest daily gap, clamped (module docstring)."""
    times = reader.sighting_times(source, now - timedelta(days=HISTORY_DAYS))
    by_day: dict[date, list[datetime]] = {}
    for t in times:
        by_day.setdefault(t.astimezone(calendar.tz).date(), []).append(t)
    longest = [max(open_time(calendar, x, y) for x, y in itertools.pairwise(ts))
               for ts in by_day.values() if len(ts) >= 2]
    if len(longest) < MIN_DAYS:
        return NO_HISTORY
    typical = timedelta(seconds=statistics.median(g.total_seconds() for g in longest))
    return min(CAP, max(FLOOR, 2 * typical))


@dataclass
class Episode:
    kind: str            # silent | blind
    since: datetime      # the last byte / transaction seen before the quiet
    threshold: timedelta


class WireWatch:
    """The pipeline's side: decides episodes from reader reports; persists them for doctor and metrics."""

    def __init__(self, reader: JournalReader, calendar: ShopCalendar) -> None:
        self.reader = reader
        self.calendar = calendar
        self.episodes: dict[str, Episode] = {}
        self.thresholds: dict[str, timedelta] = {}
        self.today: dict[str, dict[str, int]] = {}       # source -> today's counters
        self.errors: dict[str, str] = {}                 # source -> its reader's last decoder/spool error
        self._base: dict[str, dict[str, int]] = {}       # source -> counters when the local day began
        self._day: date | None = None
        self._journal_last: dict[str, datetime] = {}
        self.checked: datetime | None = None
        self._thresholds_day: date | None = None
        self._load()

    def _load(self) -> None:
        try:
            raw = json.loads(self.reader.meta_value(META_KEY) or "{}")
            for name, ep in (raw.get("episodes") or {}).items():
                self.episodes[name] = Episode(ep["kind"], datetime.fromisoformat(ep["since"]),
                                              timedelta(seconds=float(ep["threshold"])))
        except (ValueError, KeyError, TypeError, AttributeError):
            self.episodes = {}  # unreadable: start afresh; the next check decides again
        self._journal_last = self.reader.last_sightings()

    def refresh_thresholds(self, configured: Mapping[str, timedelta | None], now: datetime) -> None:
        self.thresholds = {name: value if value is not None else derive_silence(self.reader, self.calendar, name, now)
                           for name, value in configured.items()}

    def check(self, reports: Sequence[Mapping[str, Any]], now: datetime,
              configured: Mapping[str, timedelta | None]) -> list[tuple[str, str, Episode]]:
        """Changes: (source, "started" | "ended", episode)."""
        day = now.astimezone(self.calendar.tz).date()
        if set(configured) != set(self.thresholds) or day != self._thresholds_day:
            self.refresh_thresholds(configured, now)   # the shop's history moves on: once a day
            self._thresholds_day = day
        self._roll_day(now)
        changes: list[tuple[str, str, Episode]] = []
        for report in reports:
            name = str(report["name"])
            self._count(name, report)
            if report.get("last_error"):
                self.errors[name] = str(report["last_error"])[:300]
            if name not in self.thresholds or not self.calendar.configured:
                continue
            threshold = self.thresholds[name]
            started = _time(report.get("started")) or now
            seen_txn = max(filter(None, (_time(report.get("txn_at")), self._journal_last.get(name))), default=None)
            seen_bytes = max(filter(None, (_time(report.get("bytes_at")), seen_txn)), default=None)
            before = self.episodes.get(name)
            if before is not None:
                back = seen_bytes if before.kind == "silent" else seen_txn
                if back is None or back <= before.since:
                    continue  # still quiet (also across a restart: the episode was kept in the journal)
                del self.episodes[name]
                changes.append((name, "ended", before))
            # Quiet counts from the last thing seen, also before a restart (the journal says when); a
            # source that never delivered anything counts from its reader's start.
            last_bytes = seen_bytes or started
            last_txn = seen_txn or started
            current: Episode | None = None
            if open_time(self.calendar, last_bytes, now) >= threshold:
                current = Episode("silent", last_bytes, threshold)
            elif open_time(self.calendar, last_txn, now) >= threshold:
                current = Episode("blind", last_txn, threshold)
            if current is not None:
                self.episodes[name] = current
                changes.append((name, "started", current))
        self.checked = now
        return changes

    def _roll_day(self, now: datetime) -> None:
        day = now.astimezone(self.calendar.tz).date()
        if day != self._day:
            if self._day is not None:
                # Counters restart from what they are now, so "today" starts at zero.
                self._base = {name: {k: self._base.get(name, {}).get(k, 0) + v for k, v in counts.items()}
                              for name, counts in self.today.items()}
            self._day = day

    def _count(self, name: str, report: Mapping[str, Any]) -> None:
        base = self._base.setdefault(name, {})
        totals = {k: int(report.get(k) or 0) for k in COUNTERS}
        for k, v in totals.items():
            if v < base.get(k, 0):
                base[k] = 0  # the reader was restarted (a reload): its counters began again
        self.today[name] = {k: v - base.get(k, 0) for k, v in totals.items()}

    def to_meta(self) -> str:
        return json.dumps({
            "episodes": {n: {"kind": e.kind, "since": e.since.isoformat(), "threshold": e.threshold.total_seconds()}
                         for n, e in sorted(self.episodes.items())},
            "thresholds": {n: t.total_seconds() for n, t in sorted(self.thresholds.items())},
            "today": self.today, "hours": self.calendar.configured, "errors": self.errors,
        }, ensure_ascii=False, sort_keys=True)


def _time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str) and value:
        parsed = datetime.fromisoformat(value)
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return None


def _span(delta: timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} 小时 {minutes} 分" if hours else f"{minutes} 分钟"


def episode_notice(source: str, change: str, ep: Episode, now: datetime, calendar: ShopCalendar
                   ) -> tuple[tuple[str, str], list[str]]:
    """(headline zh/en, lines): what staff read. Chinese, short: a cashier reads it on a phone."""
    since = ep.since.astimezone(calendar.tz).strftime("%m-%d %H:%M")
    if change == "ended":
        what = "有数据" if ep.kind == "silent" else "读到交易"
        return ("线路已恢复", "Line is back"), [f"{source}：又{what}了（自 {since} 中断）"]
    quiet = _span(open_time(calendar, ep.since, now))
    if ep.kind == "silent":
        return (("线路无数据", "Line is silent"),
                [f"{source}：自 {since} 起没有任何数据（营业时间内 {quiet}）",
                 "请检查刷卡机/打印机的连线和电源；在此之前重复扣款无法被发现"])
    return (("收到数据但读不出交易", "Data but no transactions"),
            [f"{source}：自 {since} 起有数据但没有一笔交易（营业时间内 {quiet}）",
             "可能是小票格式变了或接错了线；请联系维护人员"])


def day_lines(reader: JournalReader, watch: WireWatch | None, now: datetime, tz: Any,
              quarantined: int = 0) -> tuple[list[str], bool]:
    """The all-clear's facts: (lines, saw_nothing). Today's count and total tell "clear" from "blind"."""
    local = now.astimezone(tz)
    midnight = datetime.combine(local.date(), datetime.min.time(), tzinfo=tz)
    sales = reader.approved_sales(midnight, midnight + timedelta(days=1))
    count = sum(c for c, _ in sales.values())
    if count:
        totals = "，".join(format_money(total, cur or None) for cur, (_, total) in sorted(sales.items()))
        lines = [f"今日交易 {count} 笔，合计 {totals}"]
    else:
        lines = ["今日没有收到任何交易，请确认刷卡机和打印机连线正常"]
    problems: dict[str, int] = {k: 0 for k in COUNTERS}
    for counts in (watch.today.values() if watch else ()):
        for k in COUNTERS:
            problems[k] += counts.get(k, 0)
    problems["quarantined"] = max(problems["quarantined"], quarantined)
    for name, ep in sorted((watch.episodes if watch else {}).items()):
        since = ep.since.astimezone(tz).strftime("%H:%M")
        lines.append(f"{name}：自 {since} 起{'无数据' if ep.kind == 'silent' else '读不出交易'}")
    labels = {"unmatched": "未识别的小票 {} 张", "decoder_errors": "解码出错 {} 次",
              "bad_frames": "损坏的报文 {} 条", "quarantined": "隔离的异常数据 {} 条"}
    for key, label in labels.items():
        if problems[key]:
            lines.append(label.format(problems[key]))
    return lines, count == 0
