"""Replay decodes captures as a stream (issue 20: a million transactions held as one sorted list peaked at
1.6 GiB): the year-less timeline, the merge of several captures and the errors stay as they were when the
whole capture was decoded at once."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

import agent.captures as replay_mod
from agent.captures import CaptureError, Wire, decode_captures, decode_wires
from agent.replay import _Firings
from agent.schedule import fire_times
from agent.sim.day import SimEvent, build_day
from agent.sim.terminal import encode_day
from drivers.events import Settlement, Transaction
from drivers.timeutil import along_timeline, timeline_shifts

SHANGHAI = ZoneInfo("Asia/Shanghai")


@pytest.fixture
def streamed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing kept from the first pass and odd-sized blocks: frames cut across reads, the capture decoded twice."""
    monkeypatch.setattr(replay_mod, "KEEP", 0)
    monkeypatch.setattr(replay_mod, "BLOCK", 97)


def _days(first: date, days: int, count: int = 12, seed: int = 3) -> list[list[SimEvent]]:
    out = []
    for i in range(days):
        events = build_day("clean", seed=i + seed, day=first + timedelta(days=i), tz=SHANGHAI, count=count)
        out.append([replace(e, event=replace(e.event, batch_no=f"{i + 1:06d}")) for e in events])
    return out


def _write(path: Path, protocol: str, days: list[list[SimEvent]]) -> Path:
    path.write_bytes(b"".join(encode_day(protocol, day) for day in days))
    return path


def _truth(days: list[list[SimEvent]]) -> list[datetime]:
    return [e.event.time.replace(microsecond=0) for day in days for e in day if e.event.time is not None]


@pytest.mark.usefixtures("streamed")
@pytest.mark.parametrize("protocol", ["cn_ecr", "zvt"])
def test_a_streamed_capture_across_new_year_keeps_its_years(tmp_path: Path, protocol: str) -> None:
    days = _days(date(2026, 12, 24), 14)
    capture = _write(tmp_path / f"nye.{protocol}", protocol, days)
    stream, stats = decode_captures([capture], protocol, SHANGHAI, received=datetime(2027, 1, 7, 3, tzinfo=SHANGHAI))
    items = list(stream)
    stamped = [ev.time for ev, _ in items if isinstance(ev, Transaction | Settlement) and ev.time is not None]
    assert stamped == sorted(_truth(days))   # replayed in time order
    assert {t.astimezone(SHANGHAI).year for t in stamped} == {2026, 2027}
    assert [at for _, at in items] == sorted(at for _, at in items)
    assert stats[str(capture)].bytes_in == capture.stat().st_size   # complete once the stream is read


def test_timeline_shifts_are_the_list_walk_in_runs() -> None:
    truth = [datetime(2026, 3, 1, 10, tzinfo=SHANGHAI) + timedelta(days=5 * w) for w in range(150)]
    end = truth[-1] + timedelta(hours=3)
    first = [t.replace(year=2028) for t in truth]   # a decoder's placement, all in one wrong year
    micros = [int(t.timestamp() * 1_000_000) for t in first]
    runs = timeline_shifts(micros, SHANGHAI, end)
    assert 1 < len(runs) < 5                          # the shift changes only where the dates wrap
    assert along_timeline(first, SHANGHAI, end) == truth


def test_the_stream_does_not_hold_the_capture(tmp_path: Path, streamed: None, monkeypatch: pytest.MonkeyPatch
                                              ) -> None:
    monkeypatch.setattr(replay_mod, "REORDER", 5)
    capture = _write(tmp_path / "long.jsonl", "jsonl", _days(date(2026, 5, 1), 20))
    stream, stats = decode_captures([capture], "jsonl", SHANGHAI, received=datetime(2026, 6, 1, tzinfo=SHANGHAI))
    it = iter(stream)
    next(it)
    # The first event is out after a few blocks were read, not the whole capture.
    assert stats[str(capture)].bytes_in < capture.stat().st_size / 10
    assert sum(1 for _ in it) + 1 == stats[str(capture)].events


@pytest.mark.usefixtures("streamed")
def test_several_captures_merge_by_time_like_one_stable_sort(tmp_path: Path) -> None:
    # Two tills' terminals, same days: interleaved in time, equal instants ordered by the order named.
    a = _write(tmp_path / "a.cn_ecr", "cn_ecr", _days(date(2026, 12, 29), 5))
    b_days = _days(date(2026, 12, 30), 4, count=9)
    b = _write(tmp_path / "b.jsonl", "jsonl", b_days)
    end = datetime(2027, 1, 4, 2, tzinfo=SHANGHAI)
    merged = list(decode_wires([Wire("t1", "cn_ecr", a), Wire("t2", "jsonl", b)], SHANGHAI, received=end)[0])
    one = [(ev, at, "t1") for ev, at in decode_captures([a], "cn_ecr", SHANGHAI, received=end)[0]]
    two = [(ev, at, "t2") for ev, at in decode_captures([b], "jsonl", SHANGHAI, received=end)[0]]
    assert merged == sorted(one + two, key=lambda item: item[1])
    assert {name for _, _, name in merged[:10]} == {"t1"}       # t1 starts a day earlier
    assert {name for _, _, name in merged} == {"t1", "t2"}


def test_a_bad_frame_in_the_middle_is_reported_with_where_it_was(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                                 ) -> None:
    monkeypatch.setattr(replay_mod, "KEEP", 0)
    monkeypatch.setattr(replay_mod, "BLOCK", 512)   # more than a frame: found in its block or the next
    days = _days(date(2026, 7, 1), 3)
    good = b"".join(encode_day("cn_ecr", day) for day in days)
    middle = len(good) // 2
    cut = good.index(b"\x02", middle)            # the start of a frame in the middle
    bad = bytearray(good)
    bad[cut + 8] ^= 0x55                          # its body changed: the LRC no longer matches
    capture = tmp_path / "bad.cn_ecr"
    capture.write_bytes(bytes(bad))
    stream, stats = decode_captures([capture], "cn_ecr", SHANGHAI, received=datetime(2026, 7, 4, tzinfo=SHANGHAI))
    items = list(stream)
    st = stats[str(capture)]
    assert st.bad_frames == 1
    assert st.last_error is not None and "bad.cn_ecr" in st.last_error
    lo, hi = (int(x) for x in st.last_error.rsplit("(bytes ", 1)[1].split(" ")[0].split("-"))
    assert lo <= cut < hi and hi - lo <= 2 * 512
    assert len([ev for ev, _ in items if isinstance(ev, Transaction)]) == len(
        [e for day in days for e in day if isinstance(e.event, Transaction)]) - 1   # only that frame lost


def test_a_decoder_failing_part_way_names_the_file_and_offset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                              ) -> None:
    monkeypatch.setattr(replay_mod, "BLOCK", 1000)
    capture = _write(tmp_path / "day.jsonl", "jsonl", _days(date(2026, 7, 1), 2))
    real = replay_mod.build_decoder

    class Failing:
        def __init__(self, inner: object) -> None:
            self.inner, self.fed = inner, 0

        def __getattr__(self, name: str) -> object:
            return getattr(self.inner, name)

        def feed(self, data: bytes, received: datetime | None = None) -> list[object]:
            if self.fed >= 3000:
                raise ValueError("the decoder gave up")
            self.fed += len(data)
            return self.inner.feed(data, received)   # type: ignore[attr-defined,no-any-return]

    monkeypatch.setattr(replay_mod, "build_decoder", lambda *a, **k: Failing(real(*a, **k)))
    stream, _ = decode_captures([capture], "jsonl", SHANGHAI, received=datetime(2026, 7, 3, tzinfo=SHANGHAI))
    with pytest.raises(CaptureError) as info:
        list(stream)
    assert info.value.offset == 3000 and "day.jsonl: near byte 3000: the decoder gave up" in str(info.value)


def test_replay_cli_reports_a_bad_frame_with_its_position(tmp_path: Path) -> None:
    from tests.test_replay import REPLAY_CONFIG

    days = _days(date(2026, 7, 1), 2)
    good = b"".join(encode_day("cn_ecr", day) for day in days)
    cut = good.index(b"\x02", len(good) // 2)
    bad = bytearray(good)
    bad[cut + 8] ^= 0x55
    (tmp_path / "bad.cn_ecr").write_bytes(bytes(bad))
    (tmp_path / "c.toml").write_text(REPLAY_CONFIG.format(protocol="cn_ecr"), encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "agent.cli", "replay", "--config", str(tmp_path / "c.toml"),
                           str(tmp_path / "bad.cn_ecr")], capture_output=True, text=True, timeout=120,
                          env={"COLUMNS": "400", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    assert "1 bad frames" in proc.stdout and "(bytes " in proc.stdout


def test_firings_a_day_at_a_time_are_fire_times_at_once() -> None:
    from agent.config import parse_config
    from agent.schedule import Scheduler
    from tests.test_replay import REPLAY_CONFIG

    loaded = parse_config(REPLAY_CONFIG.format(protocol="jsonl"), "<test>")
    import queue

    from drivers.clock import ManualClock

    start = datetime(2026, 12, 28, 7, 13, tzinfo=SHANGHAI)
    jobs = Scheduler(loaded, queue.Queue(), ManualClock(start), since=start).jobs
    end = start + timedelta(days=9, hours=5)
    want = [at for at, name in fire_times(jobs, start, end, anchor=start) if name != "reminders"]
    firings = _Firings(jobs, start, None)
    got = []
    t = start
    while t < end:                                   # asked as a replay asks: up to each event's time
        t += timedelta(minutes=47)
        while (nxt := firings.next_until(min(t, end))) is not None:
            got.append(nxt)
            firings.pop()
    firings.cap(end)
    while (nxt := firings.next_until(end)) is not None:
        got.append(nxt)
        firings.pop()
    assert got == want and len(want) > 9


def test_events_handed_to_replay_by_hand_are_still_held_to_the_limits(tmp_path: Path) -> None:
    """Decoded captures skip the pipeline's second limits check (their decoder's boundary made it); events
    from anywhere else keep it: one outside the limits goes to quarantine, not into the journal."""
    import sqlite3
    from dataclasses import replace as dc_replace

    from agent.replay import replay
    from agent.store.schema import journal_path
    from tests.helpers import config, sale

    at = datetime(2026, 7, 1, 10, tzinfo=SHANGHAI)
    good = sale("000001", 12800, at)
    bad = dc_replace(sale("000002", 12800, at + timedelta(minutes=1)), amount_minor=10**15)
    result = replay(config(), [(good, at), (bad, at + timedelta(minutes=1))], state=tmp_path / "s", phones=False)
    conn = sqlite3.connect(journal_path(tmp_path / "s"))
    assert conn.execute("SELECT count(*) FROM transactions").fetchone()[0] == 1
    assert conn.execute("SELECT count(*) FROM quarantine WHERE stage = 'limits'").fetchone()[0] == 1
    assert result.counts["events"] == 1
