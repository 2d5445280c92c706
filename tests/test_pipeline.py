"""The pipeline on simulated time: merge by identity, alert once, resolve by void, outbox with the alert."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from agent.store.journal import Journal
from tests.helpers import SHANGHAI, Harness, sale


def at(hh: int, mm: int, ss: int = 0) -> datetime:
    return datetime(2026, 11, 27, hh, mm, ss, tzinfo=SHANGHAI)


def test_same_card_same_amount_twice_within_window_raises_one_dup_001(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.feed(sale("000122", 12800, at(14, 3)), sale("000123", 12800, at(14, 4, 30)))
    opened = h.opened("DUP-001")
    assert len(opened) == 1
    alert = opened[0].alert
    assert alert.suggestion is not None and alert.suggestion.voucher_no == "000123"
    assert alert.suggestion.deadline == at(23, 0)
    assert [t.voucher_no for t in alert.transactions] == ["000122", "000123"]
    assert "622576******6691" in alert.reason and "RMB 128.00" in alert.reason


def test_charges_further_apart_than_the_window_are_not_duplicates(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.feed(sale("000122", 12800, at(14, 3)), sale("000123", 12800, at(14, 13, 1)))
    assert h.opened("DUP-001") == []


def test_reprinted_receipt_is_not_a_duplicate_charge(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    first = sale("000122", 12800, at(14, 3))
    h.feed(first, first, first.with_(source="escpos"), first.with_(source="escpos"))
    assert h.opened() == []
    assert h.journal.count_transactions() == 1
    assert h.pipeline.counts["reprints"] == 3


def test_sightings_merge_fields_from_every_source(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    terminal = sale("000122", 12800, at(14, 3)).with_(auth_code=None, operator=None)
    slip = terminal.with_(source="escpos", auth_code="654321", operator="02", rrn=None)
    h.feed(terminal, slip)
    stored = h.journal.recent_transactions(at(0, 0))
    assert len(stored) == 1
    assert stored[0].txn.auth_code == "654321" and stored[0].txn.operator == "02"
    assert stored[0].sightings == 2


def test_void_of_the_flagged_voucher_resolves_the_alert(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.feed(sale("000122", 12800, at(14, 3)), sale("000123", 12800, at(14, 4)))
    h.feed(sale("000124", 12800, at(14, 20), kind="void", original="000123"))
    notices = [c.notice for c in h.changes]
    assert notices == ["opened", "voided"]
    voided = h.changes[-1].alert
    assert voided.revision == 2 and voided.state == "voided"
    assert h.journal.alerts(states=("open",)) == []


def test_outbox_row_is_written_with_the_alert(tmp_path: Path) -> None:
    h = Harness(tmp_path, channels=("hook", "robot"))
    h.feed(sale("000122", 12800, at(14, 3)), sale("000123", 12800, at(14, 4)))
    rows = h.journal.conn.execute("SELECT channel, message_id, state FROM outbox ORDER BY id").fetchall()
    alert = h.opened()[0].alert
    assert [tuple(r) for r in rows] == [("hook", f"{alert.id}.1", "pending"), ("robot", f"{alert.id}.1", "pending")]


def test_a_failed_batch_leaves_nothing_half_written(tmp_path: Path) -> None:
    h = Harness(tmp_path)

    def boom(change: object) -> None:
        raise AssertionError("listeners run after commit; this must not be reached")

    original = h.pipeline.alerts.open

    def failing_open(*args: object, **kw: object) -> None:
        original(*args, **kw)  # type: ignore[arg-type]
        raise RuntimeError("disk on fire")

    h.pipeline.alerts.open = failing_open  # type: ignore[method-assign,assignment]
    h.pipeline.listeners = [boom]
    h.feed(sale("000122", 12800, at(14, 3)))
    # The failing item is this item's problem, not the pipeline's: undone and quarantined, never raised.
    h.feed(sale("000123", 12800, at(14, 4)))
    j = h.journal
    assert j.count_transactions() == 1  # the second sale rolled back with its alert
    assert j.conn.execute("SELECT COUNT(*) FROM alerts").fetchone()[0] == 0
    assert j.conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] == 0
    [kept] = j.quarantined()
    assert kept["stage"] == "pipeline" and "disk on fire" in kept["reason"] and '"000123"' in kept["raw"]


def test_rules_memory_survives_a_restart(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.feed(sale("000122", 12800, at(14, 3)))
    h.journal.close()
    h2 = Harness(tmp_path, start=at(14, 3))
    h2.feed(sale("000123", 12800, at(14, 5)))
    assert len(h2.opened("DUP-001")) == 1


def test_journal_schema_is_versioned(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j.sqlite3")
    assert j.conn.execute("PRAGMA user_version").fetchone()[0] >= 1
    assert j.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert j.conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_rules_memory_stays_within_the_horizon_on_a_busy_till(tmp_path: Path) -> None:
    from agent.messages import EventBatch

    h = Harness(tmp_path)
    start = at(0, 0)
    # Three days at one sale a minute, never idle: pruning must happen as the transactions' time moves on.
    items = []
    for i in range(3 * 24 * 60):
        when = start + timedelta(minutes=i)
        items.append(EventBatch("terminal", (sale(f"{i:06d}", 1000 + i % 97, when, card=f"622576******{i % 500:04d}"),),
                                when))
    for k in range(0, len(items), 200):
        chunk = items[k:k + 200]
        h.clock.set(chunk[-1].received)  # the wall clock keeps up with the terminal, as on a till
        h.pipeline.process(chunk)
    horizon_minutes = h.pipeline.engine.state.horizon.total_seconds() / 60
    assert len(h.pipeline.engine.state) <= horizon_minutes + 200 + 60
