"""The journal answering the daemon's rule look-backs (agent/rules/lookback.py, issue 20).

Rows are found by the indexes of schema 6 (card tail, exact amount, voucher, RRN, the original a void names),
always inside what the rules hold: ids up to the newest they observed, times from their horizon's cutoff on.
A row comes back as ``(id, key, time)``; :meth:`LookbackRows.seen` gives the transaction as the rules saw it
when they observed it (the first sighting, or the sightings merged up to a mark), not as merged since.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime

from agent.model import Transaction
from agent.store.journal import _fill
from agent.store.schema import from_utc_text, utc_text

Row = tuple[int, str, datetime]

# Columns a reference is looked up by: the only names :meth:`LookbackRows.by_field` puts into its SQL.
REFERENCE_FIELDS = frozenset({"voucher_no", "rrn", "original_voucher_no", "original_rrn"})


class LookbackRows:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def row(self, key: str) -> tuple[int, datetime] | None:
        """(id, stored time) of the transaction with this identity key."""
        hit = self.conn.execute("SELECT id, time_utc FROM transactions WHERE key=?", (key,)).fetchone()
        return (int(hit[0]), from_utc_text(hit[1])) if hit else None

    def marks(self) -> tuple[int, int]:
        """The newest transaction id and the newest sighting id written so far (0 for none)."""
        t = self.conn.execute("SELECT coalesce(max(id), 0) FROM transactions").fetchone()[0]
        s = self.conn.execute("SELECT coalesce(max(id), 0) FROM sightings").fetchone()[0]
        return int(t), int(s)

    def by_tail(self, tail: str, since: datetime, until: datetime | None, upto: int) -> list[Row]:
        """Rows whose card ends in ``tail``, time in [since, until], id <= upto; oldest first."""
        return self._rows("substr(card, -4)=?", tail, since, until, upto)

    def by_amount(self, amount_minor: int, since: datetime, until: datetime, upto: int) -> list[Row]:
        return self._rows("amount_minor=?", amount_minor, since, until, upto)

    def by_field(self, field: str, value: str, since: datetime, upto: int) -> list[Row]:
        """Rows carrying ``value`` in one of :data:`REFERENCE_FIELDS` (as merged: a superset of what was seen)."""
        if field not in REFERENCE_FIELDS:
            raise ValueError(f"not a reference column: {field}")
        return self._rows(f"{field}=?", value, since, None, upto)

    def _rows(self, where: str, value: object, since: datetime, until: datetime | None, upto: int) -> list[Row]:
        args: list[object] = [value, utc_text(since), upto]
        bound = ""
        if until is not None:
            bound = " AND time_utc<=?"
            args.append(utc_text(until))
        rows = self.conn.execute(f"SELECT id, key, time_utc FROM transactions WHERE {where} AND time_utc>=?"
                                 f" AND id<=?{bound} ORDER BY time_utc, id", args).fetchall()
        return [(int(r[0]), r[1], from_utc_text(r[2])) for r in rows]

    def count(self, since: datetime, upto: int) -> int:
        return int(self.conn.execute("SELECT count(*) FROM transactions WHERE time_utc>=? AND id<=?",
                                     (utc_text(since), upto)).fetchone()[0])

    def seen(self, txn_id: int, sightings_upto: int | None) -> Transaction:
        """The transaction as first sighted (``sightings_upto`` None), or its sightings up to that id merged
        as the journal merged them (what a restart read back from the row)."""
        if sightings_upto is None:
            rows = self.conn.execute("SELECT data FROM sightings WHERE txn_id=? ORDER BY id LIMIT 1",
                                     (txn_id,)).fetchall()
        else:
            rows = self.conn.execute("SELECT data FROM sightings WHERE txn_id=? AND id<=? ORDER BY id",
                                     (txn_id, sightings_upto)).fetchall()
        if not rows:
            raise LookupError(f"transaction {txn_id} has no sighting")
        txn = Transaction.from_dict(json.loads(rows[0][0]))
        for r in rows[1:]:
            txn = _fill(txn, Transaction.from_dict(json.loads(r[0])))
        return txn
