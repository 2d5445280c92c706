"""Terminal timestamps carry no year and no zone; this places them in time."""

from __future__ import annotations

from collections.abc import Sequence
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


def along_timeline(times: Sequence[datetime | None], tz: tzinfo, end: datetime) -> list[datetime | None]:
    """One capture's year-less terminal times placed on the capture's own timeline.

    A capture is read after the fact: its receive reference (the file's mtime, or what the caller
    gives) is when it ended, not when each frame was sent. Placing every frame near that one instant
    puts a month recorded across New Year, or a capture longer than half a year, partly in the wrong
    year. Walking back from the end, each time is placed in the year nearest to the time that
    follows it in the capture (never more than a day after it, as :func:`infer_datetime` allows a
    terminal clock slightly ahead): a capture's year changes only where its own dates wrap.
    ``times`` are the decoder's first placement, in capture order; None stays None, and a time that
    cannot be placed near its successor (Feb 29 with no leap year near) keeps the decoder's year.
    """
    out = list(times)
    following = end
    for i in range(len(out) - 1, -1, -1):
        t = out[i]
        if t is None:
            continue
        local = t.astimezone(tz)
        placed = infer_datetime(local.month, local.day, local.hour, local.minute, local.second, tz, following)
        if placed is None:
            following = t
            continue
        if local.microsecond:
            placed = placed.replace(microsecond=local.microsecond)
        if placed != t:
            out[i] = placed.astimezone(t.tzinfo)
        following = out[i] or following
    return out
