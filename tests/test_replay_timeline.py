"""A replayed capture's year-less terminal times (cn_ecr, ZVT) are placed on the capture's own timeline
(issue 20): a month recorded across New Year, or a month replayed after its middle, lands in its own years."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from agent.replay import decode_captures
from agent.sim.day import SimEvent, build_day
from agent.sim.terminal import encode_day
from drivers.events import Settlement, Transaction
from drivers.timeutil import along_timeline, infer_datetime

SHANGHAI = ZoneInfo("Asia/Shanghai")


def _month(first: date, days: int) -> list[list[SimEvent]]:
    out = []
    for i in range(days):
        events = build_day("clean", seed=i + 1, day=first + timedelta(days=i), tz=SHANGHAI, count=20)
        out.append([replace(e, event=replace(e.event, batch_no=f"{i + 1:06d}")) for e in events])
    return out


def _capture(tmp_path: Path, protocol: str, days: list[list[SimEvent]]) -> Path:
    path = tmp_path / f"month.{protocol}"
    path.write_bytes(b"".join(encode_day(protocol, day) for day in days))
    return path


def _stamped(events: Iterable[tuple[object, datetime]]) -> list[datetime]:
    # Sorted: replay orders events by time; only where each lands matters here.
    return sorted(ev.time for ev, _ in events if isinstance(ev, Transaction | Settlement) and ev.time is not None)


def _expected(days: list[list[SimEvent]]) -> list[datetime]:
    return sorted(e.event.time.replace(microsecond=0) for day in days for e in day if e.event.time is not None)


def test_along_timeline_wraps_at_new_year_only() -> None:
    wall = [datetime(2027, 12, 30, 20, 0, tzinfo=SHANGHAI), datetime(2027, 12, 31, 23, 0, tzinfo=SHANGHAI),
            datetime(2027, 1, 1, 9, 0, tzinfo=SHANGHAI), datetime(2027, 1, 2, 9, 0, tzinfo=SHANGHAI)]
    placed = along_timeline(wall, SHANGHAI, datetime(2027, 1, 3, tzinfo=SHANGHAI))
    assert [p.year for p in placed if p] == [2026, 2026, 2027, 2027]


def test_along_timeline_follows_a_capture_longer_than_a_year() -> None:
    # Two years of one sale a week, each first placed near the end as a decoder does: the first year's
    # sales land a year late (on top of the second year's); along the timeline each is where it was.
    truth = [datetime(2026, 3, 1, 10, tzinfo=SHANGHAI) + timedelta(weeks=w) for w in range(104)]
    end = truth[-1] + timedelta(hours=5)
    first_guess = [infer_datetime(t.month, t.day, t.hour, t.minute, t.second, SHANGHAI, end) for t in truth]
    assert first_guess != truth
    assert along_timeline(first_guess, SHANGHAI, end) == truth
    assert along_timeline([None, truth[0]], SHANGHAI, end)[0] is None


def test_a_month_across_new_year_replays_in_its_own_years(tmp_path: Path) -> None:
    days = _month(date(2026, 12, 17), 30)
    capture = _capture(tmp_path, "cn_ecr", days)
    end = datetime(2027, 1, 16, 2, 0, tzinfo=SHANGHAI)
    events, _ = decode_captures([capture], "cn_ecr", SHANGHAI, received=end)
    assert _stamped(events) == _expected(days)


def test_a_month_after_the_reference_stays_one_month_long(tmp_path: Path) -> None:
    """The benchmark's old fixed reference (20 January) in the middle of a month from 5 January: the days
    after 21 January used to be placed a year back, so the replay spanned a year."""
    days = _month(date(2026, 1, 5), 31)
    capture = _capture(tmp_path, "cn_ecr", days)
    events, _ = decode_captures([capture], "cn_ecr", SHANGHAI, received=datetime(2026, 1, 20, 12, tzinfo=UTC))
    stamped = _stamped(events)
    assert max(stamped) - min(stamped) < timedelta(days=31)
    # Placed back from the end it was given, each day keeps its month and day, one year earlier as a whole.
    assert sorted(t.replace(year=2026) for t in stamped) == _expected(days)
    # The capture's real end as reference (its mtime, live): exactly the simulated instants.
    events, _ = decode_captures([capture], "cn_ecr", SHANGHAI, received=datetime(2026, 2, 5, tzinfo=SHANGHAI))
    assert _stamped(events) == _expected(days)


def test_zvt_capture_across_new_year(tmp_path: Path) -> None:
    days = _month(date(2026, 12, 28), 6)
    capture = _capture(tmp_path, "zvt", days)
    events, _ = decode_captures([capture], "zvt", SHANGHAI, received=datetime(2027, 1, 3, 1, tzinfo=SHANGHAI))
    stamped = _stamped(events)
    assert [t.astimezone(SHANGHAI).date() for t in stamped] == [t.date() for t in _expected(days)]
