"""Terminal timestamps carry no year and no zone; this places them in time."""

from __future__ import annotations

from datetime import datetime, timedelta, tzinfo

_ONE_DAY = timedelta(days=1)
# Within half a year of the receive time the receive year always wins: skip the three-year search.
_CLEARLY_THIS_YEAR = timedelta(days=180)


def infer_datetime(month: int, day: int, hour: int, minute: int, second: int,
                   tz: tzinfo, received: datetime) -> datetime | None:
    """The aware datetime with this month/day/time in ``tz`` nearest to ``received``.

    The year is the one that puts the timestamp closest to the receive time,
    but never more than one day in the future (a terminal clock slightly ahead
    is tolerated; a Dec 31 slip read on Jan 1 lands in the old year).
    Returns None for an impossible date (Feb 30, or Feb 29 with no leap year
    near).
    """
    if received.tzinfo is None:
        raise ValueError("received must be timezone-aware")
    local_now = received.astimezone(tz)
    try:
        guess = datetime(local_now.year, month, day, hour, minute, second, tzinfo=tz)
    except ValueError:
        pass
    else:
        if -_CLEARLY_THIS_YEAR < guess - received <= _ONE_DAY:
            return guess
    best: datetime | None = None
    for year in (local_now.year - 1, local_now.year, local_now.year + 1):
        try:
            candidate = datetime(year, month, day, hour, minute, second, tzinfo=tz)
        except ValueError:
            continue
        if candidate - received > _ONE_DAY:
            continue
        if best is None or abs(candidate - received) < abs(best - received):
            best = candidate
    return best
