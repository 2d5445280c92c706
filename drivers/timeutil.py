"""Terminal timestamps carry no year and no zone; this places them in time."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, tzinfo

_ONE_DAY = timedelta(days=1)
# Within half a year of the receive time the receive year always wins: skip the three-year search.
_CLEARLY_THIS_YEAR = timedelta(days=180)
# (received, tz, received in tz) of the last call: identity-checked (the tuple holds both, so their ids
# cannot be reused), so a new reference is never mistaken for it.
_EPOCH_UTC = datetime(1970, 1, 1, tzinfo=UTC)
_LAST_LOCAL: tuple[datetime | None, tzinfo | None, datetime] = (None, None, _EPOCH_UTC)


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
    # A replay places every frame of a capture against one reference: its local form is worked out once.
    # One tuple read and one rebinding, so a reader thread never sees another's half-updated entry.
    global _LAST_LOCAL
    last_received, last_tz, local_now = _LAST_LOCAL
    if last_received is not received or last_tz is not tz:
        local_now = received.astimezone(tz)
        _LAST_LOCAL = (received, tz, local_now)
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
    stamped = [i for i, t in enumerate(times) if t is not None]
    micros = [_micros(times[i]) for i in stamped]   # type: ignore[arg-type]
    out = list(times)
    for (i, shift) in zip(stamped, expand_shifts(timeline_shifts(micros, tz, end), len(micros)), strict=True):
        if shift:
            out[i] = shifted(times[i], shift)   # type: ignore[arg-type]
    return out


def timeline_shifts(micros: Sequence[int], tz: tzinfo, end: datetime) -> list[tuple[int, int]]:
    """:func:`along_timeline` for a stream: ``micros`` are the decoder's placements (microseconds since
    the epoch, a compact array holds a million for 8 MB), the answer is how far each moves, as runs
    ``(first index, shift in microseconds)`` in increasing index order (a run lasts until the next one).
    A capture's shift changes only where its dates wrap, so a month across New Year is two runs and a
    replay can re-decode the capture as a stream and move each time by its run's shift."""
    runs: list[tuple[int, int]] = []
    following = end
    current: int | None = None
    for i in range(len(micros) - 1, -1, -1):
        t = _EPOCH + timedelta(microseconds=micros[i])
        local = t.astimezone(tz)
        placed = infer_datetime(local.month, local.day, local.hour, local.minute, local.second, tz, following)
        if placed is None:
            shift = 0
        else:
            if local.microsecond:
                placed = placed.replace(microsecond=local.microsecond)
            shift = _micros(placed) - micros[i]
        if shift != current:
            if current is not None:
                runs.append((i + 1, current))
            current = shift
        following = t + timedelta(microseconds=shift) if placed is not None else t
    if current is not None:
        runs.append((0, current))
    runs.reverse()
    return runs


def expand_shifts(runs: Sequence[tuple[int, int]], n: int) -> list[int]:
    """Each index's shift from :func:`timeline_shifts`' runs (for a list already in memory)."""
    out = [0] * n
    for k, (first, shift) in enumerate(runs):
        last = runs[k + 1][0] if k + 1 < len(runs) else n
        out[first:last] = [shift] * (last - first)
    return out


def shifted(t: datetime, shift_us: int) -> datetime:
    """``t`` moved by ``shift_us`` of real time (not wall time: a shift across a DST change stays exact),
    in ``t``'s own zone."""
    return (t.astimezone(UTC) + timedelta(microseconds=shift_us)).astimezone(t.tzinfo)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _micros(t: datetime) -> int:
    d = t - _EPOCH
    return (d.days * 86_400 + d.seconds) * 1_000_000 + d.microseconds


def aware_time(value: object) -> datetime | None:
    """An ISO 8601 time with its offset, as settleguard writes them in JSON; None for anything else (a time
    without an offset is not guessed into a zone)."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None
