"""Year-less terminal timestamps land nearest the receive time, never more than a day ahead."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.timeutil import infer_datetime

SHANGHAI = ZoneInfo("Asia/Shanghai")
BERLIN = ZoneInfo("Europe/Berlin")


def reference(month: int, day: int, hh: int, mm: int, ss: int, tz: ZoneInfo, received: datetime) -> datetime | None:
    """The definition, searched the slow way."""
    best = None
    for year in range(received.year - 1, received.year + 2):
        try:
            c = datetime(year, month, day, hh, mm, ss, tzinfo=tz)
        except ValueError:
            continue
        if c - received > timedelta(days=1):
            continue
        if best is None or abs(c - received) < abs(best - received):
            best = c
    return best


def test_new_years_eve_slip_read_on_new_years_day_is_last_year() -> None:
    got = infer_datetime(12, 31, 23, 50, 0, SHANGHAI, datetime(2027, 1, 1, 0, 5, tzinfo=SHANGHAI))
    assert got == datetime(2026, 12, 31, 23, 50, tzinfo=SHANGHAI)


def test_a_terminal_clock_slightly_ahead_is_tolerated() -> None:
    got = infer_datetime(11, 28, 0, 10, 0, SHANGHAI, datetime(2026, 11, 27, 23, 55, tzinfo=SHANGHAI))
    assert got == datetime(2026, 11, 28, 0, 10, tzinfo=SHANGHAI)


def test_february_29_without_a_leap_year_nearby_is_impossible() -> None:
    # No leap year within a year of the receive time: the date cannot be placed.
    assert infer_datetime(2, 29, 12, 0, 0, SHANGHAI, datetime(2026, 3, 1, tzinfo=UTC)) is None
    assert infer_datetime(2, 29, 12, 0, 0, SHANGHAI, datetime(2028, 3, 1, tzinfo=UTC)) == datetime(
        2028, 2, 29, 12, 0, tzinfo=SHANGHAI)
    assert infer_datetime(2, 30, 12, 0, 0, SHANGHAI, datetime(2026, 3, 1, tzinfo=UTC)) is None


@settings(max_examples=400)
@given(st.datetimes(min_value=datetime(2001, 1, 1), max_value=datetime(2098, 12, 31), timezones=st.just(UTC)),
       st.integers(1, 12), st.integers(1, 31), st.integers(0, 23), st.integers(0, 59), st.integers(0, 59),
       st.sampled_from([SHANGHAI, BERLIN, ZoneInfo("America/New_York")]))
def test_fast_path_agrees_with_the_definition(received: datetime, month: int, day: int, hh: int, mm: int, ss: int,
                                              tz: ZoneInfo) -> None:
    assert infer_datetime(month, day, hh, mm, ss, tz, received) == reference(month, day, hh, mm, ss, tz, received)
