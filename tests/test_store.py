"""The store on real SQLite files: migrations, the one outbox INSERT and the read-only queries."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agent.store.journal import Journal
from agent.store.outbox import Outbox, insert_message
from agent.store.queries import open_read_only
from agent.store.schema import SCHEMA_VERSION, StoreError, connect, migrate
from tests.helpers import SHANGHAI, Harness, sale

NOW = datetime(2026, 11, 27, 6, 0, tzinfo=UTC)
TABLES = {"transactions", "txn_keys", "sightings", "receipts", "settlements", "alerts", "alert_log", "outbox",
          "batches", "meta"}


def at(hh: int, mm: int) -> datetime:
    return datetime(2026, 11, 27, hh, mm, tzinfo=SHANGHAI)


def tables(conn: sqlite3.Connection) -> set[str]:
    return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def message(conn: sqlite3.Connection, message_id: str, channel: str, *, alert_id: str | None = "a1",
            created: datetime = NOW) -> None:
    insert_message(conn, message_id=message_id, channel=channel, kind="opened", alert_id=alert_id, revision=1,
                   payload={"id": message_id}, next_at=created, deadline=None, created=created, updated=created)


# -- schema and migrations ----------------------------------------------------------------------
def test_a_file_without_schema_is_migrated_to_the_current_version(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    sqlite3.connect(path).close()  # user_version 0: what a till had before its first start
    conn = connect(path)
    assert migrate(conn) == SCHEMA_VERSION
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert tables(conn) >= TABLES
    conn.close()


def test_a_journal_written_at_the_current_version_reopens_with_its_rows(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.feed(sale("000122", 12800, at(14, 3)), sale("000123", 12800, at(14, 4)))
    h.journal.close()
    again = Journal(tmp_path / "settleguard.sqlite3")
    assert again.count_transactions() == 2 and len(again.alerts()) == 1
    assert again.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    again.close()


def test_a_journal_from_a_newer_settleguard_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "new.sqlite3"
    raw = sqlite3.connect(path)
    raw.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    raw.close()
    with pytest.raises(StoreError, match="newer than this settleguard"):
        Journal(path)
    raw = sqlite3.connect(path)
    assert tables(raw) == set()
    raw.close()


# -- the one outbox INSERT ----------------------------------------------------------------------
def test_a_message_enters_a_channel_once(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j.sqlite3")
    j.enqueue(message_id="a1.1", channel="hook", kind="opened", alert_id="a1", revision=1, payload={"n": 1},
              now=NOW, not_before=NOW + timedelta(minutes=5))
    j.enqueue(message_id="a1.1", channel="hook", kind="opened", alert_id="a1", revision=1, payload={"n": 2},
              now=NOW)
    rows = j.conn.execute("SELECT payload, state, attempts, next_at, created FROM outbox").fetchall()
    assert [tuple(r) for r in rows] == [('{"n": 1}', "pending", 0, "2026-11-27T06:05:00.000000Z",
                                         "2026-11-27T06:00:00.000000Z")]
    j.close()


def test_a_rerouted_message_keeps_its_creation_time_and_deadline(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite3"
    j = Journal(path)
    j.enqueue(message_id="a1.1", channel="robot", kind="opened", alert_id="a1", revision=1, payload={},
              now=NOW, deadline=NOW + timedelta(minutes=2))
    out = Outbox(path)
    later = NOW + timedelta(minutes=3)
    assert out.reroute(out.pending("robot")[0], ["sms"], later) == "sms"
    moved = out.pending("sms")[0]
    assert moved.created == NOW and moved.deadline == NOW + timedelta(minutes=2) and moved.next_at == later
    assert out.outbox_stats(later)["rerouted"] == 1
    out.close()
    j.close()


# -- read-only queries ------------------------------------------------------------------------
def test_a_read_only_reader_cannot_write_or_create_the_file(tmp_path: Path) -> None:
    with pytest.raises(StoreError):
        open_read_only(tmp_path / "missing.sqlite3")
    assert not (tmp_path / "missing.sqlite3").exists()
    Journal(tmp_path / "j.sqlite3").close()
    with pytest.raises(StoreError, match="readonly"), open_read_only(tmp_path / "j.sqlite3") as reader:
        message(reader.conn, "a1.1", "hook")


def test_a_file_that_is_not_a_journal_is_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "settleguard.sqlite3"
    path.write_bytes(b"this is not a database, it is a shopping list" * 100)
    reader = open_read_only(path)
    with pytest.raises(StoreError, match="not a database"), reader:
        reader.integrity_check()


def test_an_empty_journal_answers_with_nothing(tmp_path: Path) -> None:
    Journal(tmp_path / "j.sqlite3").close()
    with open_read_only(tmp_path / "j.sqlite3") as reader:
        assert reader.integrity_check() == "ok"
        assert reader.earliest_transaction() is None and reader.latest_transaction() is None
        assert reader.alert_counts() == {} and reader.dead_letters() == []
        assert reader.outbox_counts_by_channel() == {} and reader.messages_for_alert("a1") == []
        assert reader.outbox_stats(NOW) == {"pending": 0, "sent": 0, "dead": 0, "rerouted": 0, "superseded": 0,
                                            "oldest_pending_seconds": 0.0}


def test_transaction_times_and_alert_counts(tmp_path: Path) -> None:
    h = Harness(tmp_path, channels=("hook", "robot"))
    h.feed(sale("000122", 12800, at(14, 3)), sale("000123", 12800, at(14, 4)), sale("000124", 990, at(15, 30)))
    with open_read_only(tmp_path / "settleguard.sqlite3") as reader:
        assert reader.earliest_transaction() == at(14, 3)
        assert reader.latest_transaction() == at(15, 30)
        assert reader.alert_counts() == {("DUP-001", "open"): 1}
        alert_id = h.opened("DUP-001")[0].alert.id
        assert [(m["channel"], m["kind"], m["state"], m["attempts"]) for m in reader.messages_for_alert(alert_id)] \
            == [("hook", "opened", "pending", 0), ("robot", "opened", "pending", 0)]
        assert reader.outbox_counts_by_channel() == {"hook": 1, "robot": 1}


def test_outbox_figures_and_dead_letters_in_both_orders(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite3"
    out = Outbox(path)
    for n in range(1, 5):
        message(out.conn, f"a{n}.1", "hook", alert_id=f"a{n}", created=NOW + timedelta(minutes=n))
    message(out.conn, "a9.1", "robot", alert_id="a9", created=NOW)
    rows = {r.message_id: r.id for r in out.pending("hook")}
    out.mark_dead([rows["a1.1"]], NOW + timedelta(minutes=10), "HTTP 401: bad signature")
    out.mark_dead([rows["a3.1"]], NOW + timedelta(minutes=11), "HTTP 410: gone")
    out.claim([rows["a2.1"]], NOW + timedelta(minutes=12))
    out.mark_sent([rows["a4.1"]], NOW + timedelta(minutes=12))
    out.close()
    with open_read_only(path) as reader:
        stats = reader.outbox_stats(NOW + timedelta(hours=1))
        # a2 is being sent and a9 (the oldest, created at NOW) waits: both count as pending.
        assert stats == {"pending": 2, "sent": 1, "dead": 2, "rerouted": 0, "superseded": 0,
                         "oldest_pending_seconds": 3600.0}
        newest = reader.dead_letters()
        assert [(d["message_id"], d["channel"], d["alert_id"], d["last_error"]) for d in newest] == [
            ("a3.1", "hook", "a3", "HTTP 410: gone"), ("a1.1", "hook", "a1", "HTTP 401: bad signature")]
        assert newest[0]["kind"] == "opened" and newest[0]["updated"] == "2026-11-27T06:11:00.000000Z"
        assert [d["message_id"] for d in reader.dead_letters(None, oldest_first=True)] == ["a1.1", "a3.1"]
        assert [d["message_id"] for d in reader.dead_letters(1)] == ["a3.1"]
        assert reader.outbox_counts_by_channel() == {"hook": 4, "robot": 1}
        assert [m["state"] for m in reader.messages_for_alert("a2")] == ["sending"]


def test_replay_counts_the_messages_it_would_have_sent_per_channel(tmp_path: Path) -> None:
    from agent.replay import replay
    from tests.helpers import config

    loaded = config('''
[[channel]]
name = "hq"
type = "webhook"
url = "http://127.0.0.1:9/never-called"

[[channel]]
name = "backup"
type = "webhook"
url = "http://127.0.0.1:9/never-called-either"
''')
    sales = [sale("000122", 12800, at(14, 3)), sale("000123", 12800, at(14, 4)), sale("000124", 990, at(15, 30))]
    result = replay(loaded, [(s, s.time.astimezone(UTC)) for s in sales if s.time], state=tmp_path / "state")
    with open_read_only(tmp_path / "state" / "settleguard.sqlite3") as reader:
        assert result.outbox == reader.outbox_counts_by_channel()
    # One alert (the duplicate at 14:03/14:04), announced once on each channel; the day ends before review.
    assert result.outbox == {"hq": 1, "backup": 1}
