"""Replay's bulk load with the key table and the card-tail look-ups held in memory (agent/store/bulk.py, issue 20):
the journal it leaves is the event-by-event one, also when keys come back after they were written to ``txn_keys``
and dropped from memory, when the Bloom filter says "maybe" for everything, and when the rules look further back
than memory holds; a failing unit forgets its keys; the deferred card-tail index is there after the load, after a
failure and at the next open after a kill."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import agent.replay as replay_module
import agent.store.journal as journal_module
from agent.config import parse_config
from agent.model import SHARED_FIELDS, Transaction
from agent.replay import CaptureError, replay
from agent.store.bulk import BulkKeys, BulkTails
from agent.store.journal import AFTER_LOAD, CARD_TAIL, Journal
from agent.store.schema import journal_path
from tests.helpers import sale
from tests.test_replay_batched import CONFIG
from tests.test_replay_journal import SHANGHAI, TABLES, _broken, _content, _month

DEFERRED = set(AFTER_LOAD) | set(CARD_TAIL)


def _indexes(path: Path) -> set[str]:
    conn = sqlite3.connect(path)
    try:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    finally:
        conn.close()


class _Spy:
    """Counts calls of a method (and what a predicate says of its result) without changing it."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, cls: type, name: str) -> None:
        self.calls, self.results = 0, []
        real = getattr(cls, name)

        def spied(*args: Any, **kwargs: Any) -> Any:
            out = real(*args, **kwargs)
            self.calls += 1
            self.results.append(out)
            return out
        monkeypatch.setattr(cls, name, spied)


@pytest.mark.parametrize("bloom_bits", [BulkKeys.BLOOM_BITS, 8], ids=["bloom", "bloom-says-maybe-always"])
def test_keys_seen_again_after_commits_and_dropped_generations_give_the_event_by_event_journal(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bloom_bits: int) -> None:
    """Small commits and generations: reprints find their transaction in memory, or in ``txn_keys`` once it
    was written there and its generation dropped; the card look-ups of REF-001/AMT-001 come from memory, pruned
    as the load moves on. Every table equals the event-by-event journal's."""
    events = _again(_month(tmp_path, days=16))
    loaded = parse_config(CONFIG, "<test>")
    replay(loaded, events, state=tmp_path / "single", batched=False)
    monkeypatch.setattr(journal_module, "BULK_COMMIT_ROWS", 150)
    monkeypatch.setattr(BulkKeys, "GENERATION", 40)
    monkeypatch.setattr(BulkKeys, "BLOOM_BITS", bloom_bits)
    monkeypatch.setattr(BulkTails, "PRUNE_EVERY", 30)
    flushes, rotations = _Spy(monkeypatch, BulkKeys, "flush"), _Spy(monkeypatch, BulkKeys, "rotate")
    covered = _Spy(monkeypatch, BulkTails, "covers")
    cards = _Spy(monkeypatch, Journal, "sales_for_card")
    from_table = 0
    lookup = BulkKeys.lookup

    def counted(self: BulkKeys, conn: sqlite3.Connection, keys: Any) -> dict[str, int]:
        nonlocal from_table
        found = lookup(self, conn, keys)
        from_table += sum(1 for k in found if k not in self.young and k not in self.old)
        return found
    monkeypatch.setattr(BulkKeys, "lookup", counted)
    replay(loaded, events, state=tmp_path / "bulk")
    bulk, single = _content(tmp_path / "bulk"), _content(tmp_path / "single")
    for table in TABLES:
        assert bulk[table] == single[table], table
    assert sum(1 for r in single["sightings"] if r[-1] == 1) > 5, "reprints in the capture"
    assert sum(1 for n in flushes.results if n) > 10 and sum(rotations.results) > 10
    assert from_table > 50, "sightings of transactions whose keys had left memory, found in txn_keys"
    assert covered.calls > 10 and all(covered.results), "the rules' look-back is held in memory"
    assert sum(1 for found in cards.results if found) > 5, "card look-ups that found sales"
    assert set(_indexes(journal_path(tmp_path / "bulk"))) >= DEFERRED


def _again(events: Any, count: int = 150) -> list[Any]:
    """The capture, then its first ``count`` events once more at its end (a terminal's journal read again
    days later): transactions seen again long after their keys were written."""
    items = list(events)
    last = items[-1][1]
    return items + [(item[0], last + timedelta(minutes=i + 1), *item[2:]) for i, item in enumerate(items[:count])]


def test_card_look_ups_reaching_past_what_memory_holds_are_answered_by_sqlite(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A look-back longer than replay held (here an hour against REF-001's 30 days): SQLite answers, same rows."""
    events = _month(tmp_path, days=16)
    loaded = parse_config(CONFIG, "<test>")
    replay(loaded, events, state=tmp_path / "single", batched=False)
    monkeypatch.setattr(replay_module, "_card_lookback", lambda _: timedelta(hours=1))
    monkeypatch.setattr(BulkTails, "PRUNE_EVERY", 20)
    covered = _Spy(monkeypatch, BulkTails, "covers")
    replay(loaded, events, state=tmp_path / "bulk")
    bulk, single = _content(tmp_path / "bulk"), _content(tmp_path / "single")
    for table in TABLES:
        assert bulk[table] == single[table], table
    assert covered.results.count(False) > 5, "look-ups SQLite answered"


def _txn(voucher: str, minute: int, **kw: Any) -> Transaction:
    return sale(voucher, 1000 + minute, datetime(2026, 3, 2, 10, minute, tzinfo=SHANGHAI), **kw)


def _merge(j: Journal, t: Transaction) -> Any:
    assert t.time is not None
    return j.merge_transaction(t, key=f"v:{t.terminal_id}:{t.batch_no}:{t.voucher_no}", instant=t.time,
                               received=t.time, source="terminal")


def test_a_unit_or_item_rolled_back_forgets_the_keys_it_added(tmp_path: Path) -> None:
    """The keys written in a unit (or an item's savepoint) that fails are gone with its rows: the same sale seen
    again is new, and ``txn_keys`` ends as one clean pass would leave it."""
    j = Journal(tmp_path / "j.sqlite3")
    with j.bulk_load(card_lookback=timedelta(days=30)):
        with j.transaction():
            assert _merge(j, _txn("000001", 1)).is_new
        with pytest.raises(ValueError), j.transaction():
            assert _merge(j, _txn("000002", 2)).is_new
            raise ValueError("this unit fails")
        with j.transaction():
            with pytest.raises(ValueError), j.savepoint():
                assert _merge(j, _txn("000003", 3)).is_new
                raise ValueError("this item fails")
            second = _merge(j, _txn("000002", 2))
            third = _merge(j, _txn("000003", 3))
            assert second.is_new and third.is_new
            assert not _merge(j, _txn("000001", 1)).is_new            # a reprint still finds the first
            assert j.txn_id_for_key("v:15221155:000128:000002") == second.stored.id   # held, not yet written
        hour = datetime(2026, 3, 2, 10, tzinfo=SHANGHAI)
        found = j.sales_for_card("622576******6691", hour, hour + timedelta(hours=1))
        assert [s.txn.voucher_no for s in found] == ["000001", "000002", "000003"]   # not the rolled-back pairs'
        assert j.sales_for_card("622576******6691", hour + timedelta(minutes=2), hour + timedelta(minutes=2)) \
            == found[1:2]
    keys = j.conn.execute("SELECT key, txn_id FROM txn_keys ORDER BY txn_id, key").fetchall()
    ids = [r[0] for r in j.conn.execute("SELECT id FROM transactions ORDER BY id")]
    j.close()
    assert len(ids) == 3 and sorted({r[1] for r in keys}) == ids
    assert len(keys) == 6   # voucher and RRN keys of each, none of the rolled-back attempts'


def test_the_deferred_card_tail_index_is_there_after_the_load_after_a_failure_and_at_the_next_open(
        tmp_path: Path) -> None:
    events = _month(tmp_path, days=6)
    loaded = parse_config(CONFIG, "<test>")
    replay(loaded, events, state=tmp_path / "whole", phones=False)
    assert _indexes(journal_path(tmp_path / "whole")) >= DEFERRED
    with pytest.raises(CaptureError):
        replay(loaded, _broken(events, 200), state=tmp_path / "broken", phones=False)
    assert _indexes(journal_path(tmp_path / "broken")) >= DEFERRED
    # During a load on an empty table the index is not kept; on a table with rows it stays (memory would not
    # hold the rows from before the load).
    path = tmp_path / "j.sqlite3"
    j = Journal(path)
    with j.bulk_load(card_lookback=timedelta(days=30)):
        assert not _indexes(path) & DEFERRED
        with j.transaction():
            _merge(j, _txn("000001", 1))
    with j.bulk_load(card_lookback=timedelta(days=30)):
        assert _indexes(path) & DEFERRED == set(CARD_TAIL)
    # What a kill part-way leaves (the indexes dropped, nothing built): the next open builds them.
    for name in DEFERRED:
        j.conn.execute(f"DROP INDEX {name}")
    j.close()
    assert not _indexes(path) & DEFERRED
    Journal(path).close()
    assert _indexes(path) >= DEFERRED


def test_a_transaction_shares_its_few_valued_strings_from_the_moment_it_is_built() -> None:
    """Interned where it is built (drivers/events.py): no second Transaction per view for the rules."""
    a, b = ("".join(["150", "01"]) for _ in range(2))   # equal, distinct objects, as a decoder makes them
    assert a is not b
    one, two = _txn("000001", 1, terminal=a, batch="".join(["0001", "28"])), _txn("000002", 2, terminal=b)
    for name in SHARED_FIELDS:
        assert getattr(one, name) is getattr(two, name), name
    assert one.voucher_no is not None and one.voucher_no == "000001"
