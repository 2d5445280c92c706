"""A large year-less capture is decoded once (issue 20): the first pass, which places the terminal times on
the capture's own timeline, spills its events to a temporary file and the replay reads them back instead of
decoding the capture a second time. The stream must be what decoding twice gave, event for event, including
around frames the decoder skips and events the boundary refuses."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

import agent.captures as captures
from agent.captures import decode_captures
from agent.sim.day import SimEvent
from agent.sim.terminal import encode_day, encode_event
from drivers.events import Settlement, Transaction
from drivers.protocols import build_decoder
from drivers.timeutil import along_timeline, timeline_shifts
from tests.test_replay_stream import _days as stream_days

SHANGHAI = ZoneInfo("Asia/Shanghai")
END = datetime(2027, 1, 4, 1, 30, tzinfo=SHANGHAI)


def _days(first: date, days: int) -> list[list[SimEvent]]:
    return stream_days(first, days, count=10, seed=5)


def _refused(at: datetime) -> bytes:
    """A well-framed sale the event boundary refuses (a terminal id over its 128 characters), stamped ``at``."""
    sale = Transaction(source="cn_ecr", kind="sale", result="approved", amount_minor=1234, time=at,
                       terminal_id="T" * 200, batch_no="000099", voucher_no="000001")
    return encode_event("cn_ecr", sale)


def _messy_capture(path: Path) -> tuple[Path, int]:
    """Two weeks across New Year with a corrupt frame (bad LRC) and refused events among them, one of them
    dated a few days after the capture's end (a terminal clock gone wrong): counted on the timeline, it
    would move the year of everything before it."""
    days = _days(date(2026, 12, 21), 14)
    parts: list[bytes] = []
    for i, day in enumerate(days):
        wire = encode_day("cn_ecr", day)
        if i == 4:
            cut = wire.index(b"\x02", len(wire) // 2)
            broken = bytearray(wire)
            broken[cut + 8] ^= 0x55          # the LRC no longer matches: the decoder skips this frame
            wire = bytes(broken)
        parts.append(wire)
        if i in (3, 9):
            parts.append(_refused(day[0].at + timedelta(minutes=1)))
    parts.append(_refused(datetime(2027, 1, 9, 12, tzinfo=SHANGHAI)))
    path.write_bytes(b"".join(parts))
    return path, sum(len(day) for day in days)


def _reference(path: Path) -> list[tuple[Any, datetime]]:
    """Independently of agent/captures.py: every admitted event decoded at once, its stamped times walked
    back along the timeline (drivers/timeutil.along_timeline), ordered by time as replay orders them."""
    decoder = build_decoder("cn_ecr", tz=SHANGHAI, source="cn_ecr")
    events = decoder.feed(path.read_bytes(), END) + decoder.flush(END)
    stamped = [ev.time if isinstance(ev, Transaction | Settlement) else None for ev in events]
    placed = along_timeline(stamped, SHANGHAI, END)
    moved = [ev if t is None or t == ev.time else replace(ev, time=t) for ev, t in zip(events, placed, strict=True)]
    return sorted(((ev, ev.time.astimezone(UTC)) for ev in moved), key=lambda item: item[1])


@pytest.mark.parametrize("block", [97, 1 << 16])
def test_spilled_replays_exactly_what_decoding_twice_gave(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           block: int) -> None:
    path, sent = _messy_capture(tmp_path / "nye.cn_ecr")
    monkeypatch.setattr(captures, "BLOCK", block)
    monkeypatch.setattr(captures, "KEEP", 10**9)
    kept, kept_stats = decode_captures([path], "cn_ecr", SHANGHAI, received=END)
    in_memory = list(kept)
    monkeypatch.setattr(captures, "KEEP", 0)          # everything through the spill file, in small chunks
    monkeypatch.setattr(captures, "SPILL_CHUNK", 7)
    spilled, spilled_stats = decode_captures([path], "cn_ecr", SHANGHAI, received=END)
    first, again = list(spilled), list(spilled)       # re-iterable: the file is read again
    assert first == again == in_memory == _reference(path)
    # Field for field, zones included: the very tzinfo object comes back (aware arithmetic depends on it).
    assert all(ev.time.tzinfo is SHANGHAI for ev, _ in first if isinstance(ev, Transaction) and ev.time)
    assert [type(ev) for ev, _ in first] == [type(ev) for ev, _ in in_memory]
    stats = spilled_stats[str(path)]
    assert stats == kept_stats[str(path)] and stats.bad_frames == 1
    assert stats.counters.get("quarantined") == 3
    txns = [ev for ev, _ in first if isinstance(ev, Transaction)]
    assert len(txns) == sent - 1 - sum(1 for ev, _ in first if isinstance(ev, Settlement))   # the corrupt one lost
    times = [ev.time for ev in txns if ev.time is not None]
    assert len(times) == len(txns) and {t.year for t in times} == {2026, 2027} and max(times) < END


def test_a_refused_time_counted_on_the_timeline_would_move_the_years_before_it() -> None:
    """Why the first pass cannot skip the boundary's checks: the timeline is walked back from the end, each
    time placed near the one after it, so a refused event dated past the end (a wrong terminal clock)
    would pull every earlier event a year back."""
    end = datetime(2027, 1, 1, 0, 30, tzinfo=SHANGHAI)
    accepted = [datetime(2026, 12, 30, 10, tzinfo=SHANGHAI), datetime(2026, 12, 31, 18, tzinfo=SHANGHAI)]
    refused = datetime(2027, 1, 5, 9, tzinfo=SHANGHAI)
    assert along_timeline(accepted, SHANGHAI, end) == accepted
    with_refused = along_timeline([*accepted, refused], SHANGHAI, end)
    assert [t.year for t in with_refused if t] == [2025, 2025, 2026]
    micros = [int(t.timestamp() * 1_000_000) for t in [*accepted, refused]]
    assert timeline_shifts(micros[:2], SHANGHAI, end) != timeline_shifts(micros, SHANGHAI, end)[:1]


def test_the_spill_file_is_gone_with_the_stream(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(captures, "KEEP", 0)
    path = tmp_path / "short.cn_ecr"
    path.write_bytes(b"".join(encode_day("cn_ecr", day) for day in _days(date(2026, 7, 1), 2)))
    stream, _ = decode_captures([path], "cn_ecr", SHANGHAI, received=datetime(2026, 7, 3, tzinfo=SHANGHAI))
    spill = stream._captures[0][0].kept
    assert isinstance(spill, captures._Spill)
    handle = spill._file
    assert sum(1 for _ in stream) > 0
    del stream, spill
    assert handle.closed


def test_a_full_temporary_directory_is_said_plainly_and_names_the_way_out(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """A large capture's events go to the system's temporary directory; when that disk is full the replay
    stops with what to do (free space, or TMPDIR), not a traceback. Needs root for the small tmpfs."""
    import tempfile

    from agent.cli import main
    from tests.faults.test_disk_full import fill, small_filesystem
    from tests.test_replay import REPLAY_CONFIG

    path = tmp_path / "month.cn_ecr"
    path.write_bytes(b"".join(encode_day("cn_ecr", day) for day in _days(date(2026, 7, 1), 3)))
    (tmp_path / "c.toml").write_text(REPLAY_CONFIG.format(protocol="cn_ecr"), encoding="utf-8")
    monkeypatch.setattr(captures, "KEEP", 0)
    with small_filesystem(tmp_path / "tmp") as full:
        fill(full)
        monkeypatch.setattr(tempfile, "tempdir", str(full))
        code = main(["replay", "--config", str(tmp_path / "c.toml"), "--state", str(tmp_path / "state"),
                     str(path)])
    err = capsys.readouterr().err
    assert code != 0
    assert "month.cn_ecr" in err and "TMPDIR" in err and str(full) in err, err
    assert "Traceback" not in err


def test_a_full_disk_under_the_replays_journal_is_said_plainly(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Without --state the replay's journal goes to the temporary directory too: a full disk there is said
    with the way out (--state elsewhere), not as SQLite's traceback. Needs root for the small tmpfs."""
    import tempfile

    from agent.cli import main
    from tests.faults.test_disk_full import fill, small_filesystem
    from tests.test_replay import REPLAY_CONFIG

    path = tmp_path / "month.cn_ecr"
    path.write_bytes(b"".join(encode_day("cn_ecr", day) for day in _days(date(2026, 7, 1), 3)))
    (tmp_path / "c.toml").write_text(REPLAY_CONFIG.format(protocol="cn_ecr"), encoding="utf-8")
    with small_filesystem(tmp_path / "tmp") as full:
        fill(full)
        monkeypatch.setattr(tempfile, "tempdir", str(full))
        code = main(["replay", "--config", str(tmp_path / "c.toml"), str(path)])
    err = capsys.readouterr().err
    assert code == 1
    assert "--state" in err and str(full) in err and "Traceback" not in err, err
