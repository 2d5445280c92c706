"""Schema 6 (issue 20): a schema-5 journal opens, its returning transactions get their originals' columns
filled from what they recorded, and the look-up indexes the daemon's rules read exist and are used."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

from agent.store.journal import Journal
from agent.store.lookback import LookbackRows
from agent.store.schema import MIGRATIONS, SCHEMA_VERSION, utc_text
from tests.helpers import sale

T0 = datetime(2026, 3, 10, 2, 0, tzinfo=UTC)


def _schema5(path: Path) -> None:
    """A journal as settleguard with schema 5 wrote it: a sale, its void (by voucher) and a refund (by RRN)."""
    conn = sqlite3.connect(path, isolation_level=None)
    for version in range(1, 6):
        for statement in MIGRATIONS[version].split(";"):
            if statement.strip():
                conn.execute(statement)
    conn.execute("PRAGMA user_version=5")
    rows = [sale("000001", 5000, T0, rrn="925400000101"),
            sale("000002", 5000, T0 + timedelta(minutes=1), kind="void", original="000001"),
            sale("000003", 2000, T0 + timedelta(minutes=2), kind="refund").with_(original_rrn="925400000101")]
    for n, t in enumerate(rows, 1):
        data = json.dumps(t.to_dict(), ensure_ascii=False)
        assert t.time is not None
        conn.execute("INSERT INTO transactions(key, terminal_id, batch_no, voucher_no, receipt_no, trace_no, rrn,"
                     " kind, result, amount_minor, currency, card, time_utc, data, first_seen, last_seen)"
                     " VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                     (f"v:{t.terminal_id}:{t.batch_no}:{t.voucher_no}", t.terminal_id, t.batch_no, t.voucher_no,
                      t.receipt_no, t.trace_no, t.rrn, t.kind, t.result, t.amount_minor, t.currency, t.card,
                      utc_text(t.time), data, utc_text(t.time), utc_text(t.time)))
        conn.execute("INSERT INTO sightings(txn_id, source, received, data, reprint) VALUES(?,?,?,?,0)",
                     (n, "jsonl", utc_text(t.time), data))
    conn.close()


def test_a_schema_5_journal_opens_with_the_originals_filled_in(tmp_path: Path) -> None:
    path = tmp_path / "settleguard.sqlite3"
    _schema5(path)
    journal = Journal(path)
    assert SCHEMA_VERSION == 6
    assert journal.conn.execute("PRAGMA user_version").fetchone()[0] == 6
    got = [tuple(r) for r in journal.conn.execute(
        "SELECT voucher_no, original_voucher_no, original_rrn FROM transactions ORDER BY id")]
    assert got == [("000001", None, None), ("000002", "000001", None), ("000003", None, "925400000101")]
    rows = LookbackRows(journal.conn)
    since = T0 - timedelta(days=1)
    assert [r[0] for r in rows.by_field("original_voucher_no", "000001", since, 10)] == [2]
    assert [r[0] for r in rows.by_field("original_rrn", "925400000101", since, 10)] == [3]
    assert [r[0] for r in rows.by_amount(5000, since, T0 + timedelta(hours=1), 10)] == [1, 2]
    assert [r[0] for r in rows.by_amount(5000, since, T0 + timedelta(hours=1), 1)] == [1]   # not past upto
    journal.close()


def test_new_rows_carry_their_originals_and_the_look_ups_use_indexes(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "settleguard.sqlite3")
    void = sale("000009", 800, T0, kind="void", original="000008")
    journal.merge_transaction(void, key="v:15221155:000128:000009", instant=T0, received=T0, source="jsonl")
    assert tuple(journal.conn.execute("SELECT original_voucher_no, original_rrn FROM transactions").fetchone()) \
        == ("000008", None)
    # A second sighting that names the original by RRN too fills the column in, as it fills the row's JSON.
    journal.merge_transaction(void.with_(original_rrn="925400000808"), key="v:15221155:000128:000009", instant=T0,
                              received=T0, source="escpos")
    assert tuple(journal.conn.execute("SELECT original_voucher_no, original_rrn FROM transactions").fetchone()) \
        == ("000008", "925400000808")
    where = {"transactions_amount": "amount_minor=?", "transactions_card_tail": "substr(card, -4)=?",
             "transactions_voucher": "voucher_no=?", "transactions_rrn": "rrn=?",
             "transactions_original_voucher": "original_voucher_no=?", "transactions_original_rrn": "original_rrn=?"}
    plans = {index: f"SELECT id, key, time_utc FROM transactions WHERE {w} AND time_utc>=? AND id<=?"
             for index, w in where.items()}
    for index, sql in plans.items():
        plan = " ".join(r[3] for r in journal.conn.execute("EXPLAIN QUERY PLAN " + sql, (1, "x", 1)))
        assert f"INDEX {index} (" in plan, (index, plan)
    # The seen transaction is the first sighting, not the row as merged since.
    assert LookbackRows(journal.conn).seen(1, None).original_rrn is None
    assert LookbackRows(journal.conn).seen(1, 10).original_rrn == "925400000808"
    journal.close()
