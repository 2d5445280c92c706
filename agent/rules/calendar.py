"""The shop's calendar: weekly opening hours, public holidays and closure days.

Everything here is local wall-clock time: a shop opens at 09:00 on the clock
on the wall, whatever the UTC offset that day (DST), so intervals are built
from naive local date-times and compared with ``local_dt.replace(tzinfo=None)``.

Holiday semantics (``[shop.hours]``):

* ``holidays = "cn"`` uses the official calendar of the State Council as
  packaged by ``chinesecalendar``, including make-up workdays (调休): a
  Sunday make-up workday is a workday. ``"none"`` knows no holidays.
* ``closed_on_holidays = false`` (the default) means the shop trades on
  holidays, so a holiday sale is normal and TIME-002 says nothing about it;
  only configured ``closures`` are flagged. ``true`` flags official holidays
  as well.
* ``makeup_workday_hours = "mon"`` (optional): on an official make-up workday
  use that weekday's hours instead of the date's own (an office-hours shop
  closed on Sundays opens on a make-up Sunday). Default: the date's own.
* A year the installed ``chinesecalendar`` does not cover is never guessed:
  :meth:`ShopCalendar.coverage_warning` returns a loud message and
  :meth:`ShopCalendar.is_holiday` raises :class:`HolidayDataMissing`.

Ranges are ``"HH:MM-HH:MM"``; an end at or before the start runs past
midnight (``"18:00-02:00"`` is open until 02:00 the next morning); ``"24:00"``
is the end of the day. When ``[shop.hours]`` is absent the shop is open every
day around the clock and the TIME rules are silent.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, tzinfo
from functools import lru_cache
from importlib import metadata
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, field_validator

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_RANGE = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")

# chinesecalendar names holidays in English only.
HOLIDAY_NAMES_ZH = {
    "New Year's Day": "元旦",
    "Spring Festival": "春节",
    "Tomb-sweeping Day": "清明节",
    "Labour Day": "劳动节",
    "Dragon Boat Festival": "端午节",
    "National Day": "国庆节",
    "Mid-autumn Festival": "中秋节",
    "Anti-Fascist 70th Day": "中国人民抗日战争胜利70周年纪念日",
}


def _clock(minutes: int) -> str:
    """Minutes after midnight as a clock face shows them; 1440 stays "24:00"."""
    if minutes == 1440:
        return "24:00"
    return f"{minutes // 60 % 24:02d}:{minutes % 60:02d}"


class HolidayDataMissing(LookupError):
    """The holiday calendar has no data for the year asked about."""


def _minutes(hh: str, mm: str, text: str) -> int:
    h, m = int(hh), int(mm)
    if m > 59 or h > 24 or (h == 24 and m != 0):
        raise ValueError(f"{text!r}: {hh}:{mm} is not a time of day (00:00 to 24:00)")
    return h * 60 + m


def parse_range(text: str) -> tuple[int, int]:
    """'09:00-21:30' -> (540, 1290) minutes after midnight; the end may be past midnight."""
    m = _RANGE.match(text)
    if not m:
        raise ValueError(f"{text!r} is not a range like \"09:00-21:30\" (or \"closed\")")
    start = _minutes(m.group(1), m.group(2), text)
    end = _minutes(m.group(3), m.group(4), text)
    if start == 1440:
        raise ValueError(f"{text!r}: a range cannot start at 24:00")
    if start == end:
        raise ValueError(f"{text!r}: start and end are equal; write \"00:00-24:00\" for all day")
    if end <= start:
        end += 1440  # past midnight
    return start, end


def _day_value(v: Any) -> list[str]:
    if isinstance(v, str):
        if v.strip().lower() == "closed":
            return []
        v = [v]
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise ValueError("must be \"closed\" or a list of ranges like [\"09:00-14:00\", \"17:00-22:00\"]")
    if any(x.strip().lower() == "closed" for x in v):
        if len(v) > 1:
            raise ValueError("\"closed\" cannot be mixed with opening ranges")
        return []
    for text in v:
        parse_range(text)
    return list(v)


class HoursConfig(BaseModel):
    """``[shop.hours]``: see the module docstring for the meaning of each key."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mon: list[str] = ["00:00-24:00"]
    tue: list[str] = ["00:00-24:00"]
    wed: list[str] = ["00:00-24:00"]
    thu: list[str] = ["00:00-24:00"]
    fri: list[str] = ["00:00-24:00"]
    sat: list[str] = ["00:00-24:00"]
    sun: list[str] = ["00:00-24:00"]
    holidays: Literal["cn", "none"] = "none"
    closed_on_holidays: bool = False
    closures: list[date] = []
    makeup_workday_hours: Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"] | None = None

    @field_validator("mon", "tue", "wed", "thu", "fri", "sat", "sun", mode="before")
    @classmethod
    def _ranges(cls, v: Any) -> list[str]:
        return _day_value(v)

    @field_validator("closures", mode="before")
    @classmethod
    def _dates(cls, v: Any) -> list[date]:
        if not isinstance(v, list):
            raise ValueError("must be a list of dates like [\"2026-12-25\"]")
        out = []
        for item in v:
            if isinstance(item, date) and not isinstance(item, datetime):
                out.append(item)
                continue
            try:
                out.append(date.fromisoformat(str(item)))
            except ValueError:
                raise ValueError(f"{item!r} is not a date like \"2026-12-25\"") from None
        return out

    def ranges_for(self, weekday: str) -> list[tuple[int, int]]:
        return [parse_range(r) for r in getattr(self, weekday)]

    @property
    def always_open(self) -> bool:
        return all(self.ranges_for(d) == [(0, 1440)] for d in WEEKDAYS)


@dataclass(frozen=True, slots=True)
class HolidayInfo:
    holiday: bool
    name: str | None          # English, as chinesecalendar names it (or "closure")
    name_zh: str | None


def _chinesecalendar_version() -> str:
    try:
        return metadata.version("chinesecalendar")
    except metadata.PackageNotFoundError:
        return "?"


@lru_cache(maxsize=4096)
def _cn_detail(day: date) -> tuple[bool, str | None, bool]:
    """(is holiday, holiday name, is workday) from chinesecalendar; raises HolidayDataMissing."""
    import chinese_calendar

    try:
        on_holiday, name = chinese_calendar.get_holiday_detail(day)
        workday = chinese_calendar.is_workday(day)
    except NotImplementedError as exc:
        raise HolidayDataMissing(str(exc)) from None
    return bool(on_holiday), name, bool(workday)


class ShopCalendar:
    """Opening hours and holidays of one shop, on local wall-clock time in ``tz``."""

    def __init__(self, hours: HoursConfig | None, tz: tzinfo) -> None:
        self.hours = hours or HoursConfig()
        self.tz = tz
        self.configured = hours is not None
        self._ranges = {d: self.hours.ranges_for(d) for d in WEEKDAYS}
        self._closures = frozenset(self.hours.closures)
        self.always_open = all(r == [(0, 1440)] for r in self._ranges.values())
        self._intervals: dict[date, list[tuple[datetime, datetime]]] = {}
        self._around: dict[tuple[date, timedelta], list[tuple[datetime, datetime]]] = {}

    # -- holidays ----------------------------------------------------------------------
    def coverage_warning(self, year: int) -> str | None:
        """A message for the operator when holiday data for ``year`` is missing, else None."""
        if self.hours.holidays != "cn":
            return None
        try:
            _cn_detail(date(year, 7, 1))
        except HolidayDataMissing as exc:
            return (f"shop.hours.holidays = \"cn\" but chinesecalendar {_chinesecalendar_version()} has no "
                    f"official holiday data for {year} ({exc}); holiday checks (TIME-002) are OFF for {year} "
                    f"until the package is upgraded (pip install -U chinesecalendar)")
        return None

    def is_holiday(self, day: date) -> tuple[bool, str | None]:
        """(True, name) on an official day off; make-up workdays are not holidays."""
        if self.hours.holidays != "cn":
            return False, None
        on_holiday, name, workday = _cn_detail(day)
        # chinesecalendar reports an ordinary weekend as a day off with no name: not a public holiday.
        if workday or not on_holiday or name is None:
            return False, None
        return True, name

    def holiday_info(self, day: date) -> HolidayInfo:
        on_holiday, name = self.is_holiday(day)
        return HolidayInfo(on_holiday, name, HOLIDAY_NAMES_ZH.get(name or "", name))

    def is_workday(self, day: date) -> bool:
        """Official workday: Mon-Fri unless a holiday, plus make-up weekend days (调休)."""
        if self.hours.holidays != "cn":
            return day.weekday() < 5
        return _cn_detail(day)[2]

    def is_makeup_workday(self, day: date) -> bool:
        if self.hours.holidays != "cn" or day.weekday() < 5:
            return False
        try:
            return _cn_detail(day)[2]
        except HolidayDataMissing:
            return False

    def is_closure(self, day: date) -> bool:
        return day in self._closures

    # -- opening hours -------------------------------------------------------------------
    def schedule_day(self, day: date) -> str:
        """Which weekday's hours apply on ``day`` (make-up workdays may borrow another's)."""
        own = WEEKDAYS[day.weekday()]
        borrowed = self.hours.makeup_workday_hours
        if borrowed is not None and self.is_makeup_workday(day):
            return borrowed
        return own

    def intervals(self, day: date) -> list[tuple[datetime, datetime]]:
        """Opening intervals that start on ``day``, as naive local wall-clock date-times."""
        cached = self._intervals.get(day)
        if cached is None:
            midnight = datetime.combine(day, time())
            cached = [(midnight + timedelta(minutes=s), midnight + timedelta(minutes=e))
                      for s, e in self._ranges[self.schedule_day(day)]]
            if len(self._intervals) > 400:   # a year of days; replay of old captures must not grow it
                self._intervals.clear()
            self._intervals[day] = cached
        return cached

    def is_open(self, local_dt: datetime, grace: timedelta = timedelta(0)) -> bool:
        """Open at this wall-clock time, allowing ``grace`` before opening and after closing.

        Both edges are inclusive: a sale at exactly closing time + grace is still "open".
        """
        if self.always_open:
            return True
        wall = local_dt.astimezone(self.tz).replace(tzinfo=None) if local_dt.tzinfo else local_dt
        return any(start <= wall <= end for start, end in self._open_around(wall.date(), grace))

    def _open_around(self, today: date, grace: timedelta) -> list[tuple[datetime, datetime]]:
        """Every interval (widened by grace) that can contain a time on ``today``; cached per day."""
        key = (today, grace)
        hit = self._around.get(key)
        if hit is None:
            hit = [(start - grace, end + grace)
                   for day in (today - timedelta(days=1), today, today + timedelta(days=1))
                   for start, end in self.intervals(day)]
            if len(self._around) > 400:
                self._around.clear()
            self._around[key] = hit
        return hit

    def describe_hours(self, day: date) -> str:
        ranges = self.hours.ranges_for(self.schedule_day(day)) if self.configured else [(0, 1440)]
        if not ranges:
            return "closed"
        return ", ".join(f"{_clock(s)}-{_clock(e)}" for s, e in ranges)
