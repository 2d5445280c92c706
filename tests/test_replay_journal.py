"""Replay's bulk load of the journal (agent/store/journal.py ``Journal.bulk_load``, issue 20): one commit per
many chunks, no fsync, the unread full-card index built at the end. The journal it leaves holds the same rows
and keys as event-by-event replay (each event its own transaction at the daemon's durability), and a replay
killed part-way and run again over the same ``--state`` ends as the event-by-event path would from there."""

from __future__ import annotations

import contextlib
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import replace
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from agent.config import parse_config
from agent.replay import CaptureError, decode_captures, replay
from agent.sim.day import build_day
from agent.sim.terminal import encode_day
from agent.store.journal import AFTER_LOAD, Journal
from agent.store.schema import journal_path
from tests.test_replay_batched import CONFIG

ROOT = Path(__file__).resolve().parents[1]
SHANGHAI = ZoneInfo("Asia/Shanghai")
FIRST = date(2026, 12, 14)

# Every table replay writes, with the columns compared (alert ids and short codes are random: the alert's
# rule and key identify it) and an order that does not depend on them.
TABLES = {
    "transactions": "SELECT * FROM transactions ORDER BY id",
    "txn_keys": "SELECT key, txn_id FROM txn_keys ORDER BY key",
    "sightings": "SELECT * FROM sightings ORDER BY id",
    "receipts": "SELECT * FROM receipts ORDER BY id",
    "settlements": "SELECT * FROM settlements ORDER BY id",
    "batches": "SELECT * FROM batches ORDER BY terminal_id, batch_no",
    "quarantine": "SELECT * FROM quarantine ORDER BY id",
    "meta": "SELECT k, v FROM meta ORDER BY k",
    "alerts": "SELECT rule, key, revision, state, severity, subject_terminal, subject_voucher, subject_receipt,"
              " subject_trace, subject_rrn, subject_batch, deadline, created, updated, last_notice FROM alerts"
              " ORDER BY rule, key",
    "alert_log": "SELECT a.rule, a.key, l.revision, l.state, l.at, l.actor, l.note FROM alert_log l"
                 " JOIN alerts a ON a.id = l.alert_id ORDER BY l.id",
    "outbox": "SELECT channel, kind, revision, state, next_at, created FROM outbox ORDER BY id",
    "indexes": "SELECT name, sql FROM sqlite_master WHERE type = 'index' ORDER BY name",
}


def _content(state: Path) -> dict[str, list[tuple[Any, ...]]]:
    conn = sqlite3.connect(journal_path(state))
    try:
        return {name: [tuple(r) for r in conn.execute(sql)] for name, sql in TABLES.items()}
    finally:
        conn.close()


def _month(tmp_path: Path, days: int = 31) -> Any:
    """A month of mixed days (every anomaly kind injected), one batch a day, on the cn_ecr wire."""
    out = []
    for i in range(days):
        events = build_day("mixed", seed=i + 1, day=FIRST + timedelta(days=i), tz=SHANGHAI, count=60)
        out.append([replace(e, event=replace(e.event, batch_no=f"{i + 1:06d}")) for e in events])
    capture = tmp_path / "month.cn_ecr"
    capture.write_bytes(b"".join(encode_day("cn_ecr", d) for d in out))
    end = datetime.combine(FIRST + timedelta(days=days), datetime.min.time(), SHANGHAI)
    events, _ = decode_captures([capture], "cn_ecr", SHANGHAI, received=end)
    return events


def test_a_bulk_loaded_journal_holds_the_same_rows_and_keys_as_event_by_event(tmp_path: Path) -> None:
    events = _month(tmp_path)
    loaded = parse_config(CONFIG, "<test>")
    replay(loaded, events, state=tmp_path / "batched")
    replay(loaded, events, state=tmp_path / "single", batched=False)
    batched, single = _content(tmp_path / "batched"), _content(tmp_path / "single")
    assert len(batched["transactions"]) > 1500 and len(batched["alerts"]) > 10 and batched["settlements"]
    for table in TABLES:
        assert batched[table] == single[table], table
    # The full-card index is dropped during the load and built again at its end, as migration 1 made it.
    assert {name for name, _ in batched["indexes"]} >= set(AFTER_LOAD)


def _broken(events: Any, after: int) -> Iterator[Any]:
    """The capture's items, then a decoding error part-way (as a capture damaged near its end)."""
    for i, item in enumerate(events):
        if i == after:
            raise CaptureError(Path("month.cn_ecr"), 1234, ValueError("bad frame"))
        yield item


@pytest.fixture
def per_chunk(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Replay as before the bulk load: each chunk its own transaction at the daemon's durability."""
    def run(*args: Any, **kwargs: Any) -> Any:
        with monkeypatch.context() as m:
            m.setattr(Journal, "bulk_load", lambda self, **_: contextlib.nullcontext())
            return replay(*args, **kwargs)
    return run


def _same_rows(a: dict[str, list[tuple[Any, ...]]], b: dict[str, list[tuple[Any, ...]]]) -> None:
    for table in TABLES:
        if table != "indexes":
            assert a[table] == b[table], table


def test_a_replay_broken_part_way_keeps_what_it_replayed_and_runs_again_over_the_same_state(
        tmp_path: Path, per_chunk: Any) -> None:
    """A capture failing part-way: what was replayed stays (committed at the failure, however many chunks
    the open bulk transaction held), as when each chunk was committed; replaying the whole capture again over
    that ``--state`` gives the journal it gave then, with the full-card index built."""
    events = _month(tmp_path, days=12)
    loaded = parse_config(CONFIG, "<test>")
    cut = 500
    with pytest.raises(CaptureError):
        replay(loaded, _broken(events, cut), state=tmp_path / "bulk", phones=False)
    with pytest.raises(CaptureError):
        per_chunk(loaded, _broken(events, cut), state=tmp_path / "before", phones=False)
    first = _content(tmp_path / "bulk")
    _same_rows(first, _content(tmp_path / "before"))
    assert len(first["transactions"]) > 300, "the part before the failure stays in the journal"
    replay(loaded, events, state=tmp_path / "bulk", phones=False)
    per_chunk(loaded, events, state=tmp_path / "before", phones=False)
    again = _content(tmp_path / "bulk")
    _same_rows(again, _content(tmp_path / "before"))
    assert len(again["sightings"]) > len(again["transactions"]), "the first part's events are seen twice"
    assert {name for name, _ in again["indexes"]} >= set(AFTER_LOAD)


KILLED = """
import os, signal, sys
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo
import agent.store.journal as journal
from agent.config import parse_config
from agent.replay import decode_captures, replay
from tests.test_replay_batched import CONFIG
journal.BULK_COMMIT_ROWS = 400          # several real commits before the kill, on a small capture
seen = []

def listener(item):
    seen.append(item)
    if len(seen) == int(sys.argv[3]):
        os.kill(os.getpid(), signal.SIGKILL)   # no clean-up of any kind: as a crash or `kill -9`

events, _ = decode_captures([Path(sys.argv[1])], "cn_ecr", ZoneInfo("Asia/Shanghai"),
                            received=datetime.fromisoformat(sys.argv[4]))
replay(parse_config(CONFIG, "<test>"), events, state=Path(sys.argv[2]), listener=listener)
"""


def test_a_replay_killed_part_way_leaves_a_sound_journal_and_a_second_run_completes_it(
        tmp_path: Path, per_chunk: Any) -> None:
    """``kill -9`` part-way: the journal is sound and holds whole units up to a real commit; replaying the
    capture again over it ends as replay did before the bulk load over the same leftover journal."""
    events = _month(tmp_path, days=12)
    end = datetime.combine(FIRST + timedelta(days=12), datetime.min.time(), SHANGHAI)
    loaded = parse_config(CONFIG, "<test>")
    clean = replay(loaded, events, state=tmp_path / "clean", phones=False)
    assert clean.counts["alerts_opened"] > 4
    killed = tmp_path / "killed"
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(KILLED), str(tmp_path / "month.cn_ecr"),
                           str(killed), str(len(clean.notifications) // 2), end.isoformat()],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    conn = sqlite3.connect(journal_path(killed))
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    left = conn.execute("SELECT count(*), COALESCE(sum(sightings), 0) FROM transactions").fetchone()
    # Whole units only: every transaction row's sighting count matches the sightings kept for it.
    assert left[1] == conn.execute("SELECT count(*) FROM sightings").fetchone()[0]
    conn.close()
    assert 0 < left[0] < len(_content(tmp_path / "clean")["transactions"]), "killed part-way, after commits"
    # Run again over what the kill left, both ways: the same journal, every transaction of the capture once.
    shutil.copytree(killed, tmp_path / "killed-before")
    replay(loaded, events, state=killed, phones=False)
    per_chunk(loaded, events, state=tmp_path / "killed-before", phones=False)
    again = _content(killed)
    _same_rows(again, _content(tmp_path / "killed-before"))
    assert [r[1] for r in again["transactions"]] == [r[1] for r in _content(tmp_path / "clean")["transactions"]]
    assert {name for name, _ in again["indexes"]} >= set(AFTER_LOAD)


def test_replay_refuses_the_running_daemons_state_directory(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """A bulk load into the daemon's own journal would hold its write lock for thousands of rows and
    checkpoint its pages without fsync: with something listening on the directory's control socket (as a
    running daemon does), replay says so and writes nothing there."""
    import socket

    from agent.cli import main
    from tests.test_replay import REPLAY_CONFIG

    day = build_day("clean", seed=3, day=date(2026, 7, 1), tz=ZoneInfo("Asia/Shanghai"), count=10)
    capture = tmp_path / "day.cn_ecr"
    capture.write_bytes(encode_day("cn_ecr", day))
    (tmp_path / "c.toml").write_text(REPLAY_CONFIG.format(protocol="cn_ecr"), encoding="utf-8")
    live = tmp_path / "live"
    live.mkdir()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as daemon:
        daemon.bind(str(live / "control.sock"))
        daemon.listen()
        code = main(["replay", "--config", str(tmp_path / "c.toml"), "--state", str(live), str(capture)])
    assert code == 2
    assert "running daemon" in capsys.readouterr().err
    assert not journal_path(live).exists()
    # Once nobody listens there (the daemon stopped), the directory is the replay's to use.
    assert main(["replay", "--config", str(tmp_path / "c.toml"), "--state", str(live), str(capture)]) == 0
    assert journal_path(live).exists()
