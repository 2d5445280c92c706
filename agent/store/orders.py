"""The till's orders and what matching concluded (issue 17): the SQL behind agent/match.py.

Written by the pipeline thread on the journal's own connection, inside the transaction that handles the
order or the charge, so an order, a verdict and the alert it raised commit together.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from agent.store.schema import from_utc_text, utc_text
from drivers.events import Order


@dataclass(frozen=True, slots=True)
class StoredOrder:
    id: int
    key: str
    source: str
    order: Order
    utc: datetime          # the order's time, else when it was received
    received: datetime


@dataclass(frozen=True, slots=True)
class Verdict:
    txn_key: str
    order_id: int | None
    tender: int | None
    outcome: str
    at: datetime


class OrderStore:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def add(self, order: Order, *, key: str, instant: datetime, received: datetime,
            source: str) -> tuple[StoredOrder, bool]:
        """The stored order and whether it is new; a second sighting (a reprint) only counts."""
        row = self.conn.execute("SELECT * FROM orders WHERE key=?", (key,)).fetchone()
        if row is not None:
            self.conn.execute("UPDATE orders SET sightings=sightings+1 WHERE id=?", (row["id"],))
            return self._stored(row), False
        cur = self.conn.execute(
            "INSERT INTO orders(key, source, order_no, time_utc, total_minor, currency, data, received)"
            " VALUES(?,?,?,?,?,?,?,?)",
            (key, source, order.order_no, utc_text(instant), order.total_minor, order.currency,
             json.dumps(order.to_dict(), ensure_ascii=False), utc_text(received)))
        return StoredOrder(int(cur.lastrowid or 0), key, source, order, instant, received), True

    def recent(self, since: datetime) -> list[StoredOrder]:
        rows = self.conn.execute("SELECT * FROM orders WHERE time_utc>=? ORDER BY time_utc, id",
                                 (utc_text(since),)).fetchall()
        return [self._stored(r) for r in rows]

    def count(self) -> int:
        return int(self.conn.execute("SELECT count(*) FROM orders").fetchone()[0])

    def set_verdict(self, txn_key: str, *, order_id: int | None, tender: int | None, outcome: str,
                    at: datetime) -> None:
        self.conn.execute(
            "INSERT INTO order_matches(txn_key, order_id, tender, outcome, at) VALUES(?,?,?,?,?)"
            " ON CONFLICT(txn_key) DO UPDATE SET order_id=excluded.order_id, tender=excluded.tender,"
            " outcome=excluded.outcome, at=excluded.at",
            (txn_key, order_id, tender, outcome, utc_text(at)))

    def verdicts(self, txn_keys: Iterable[str]) -> list[Verdict]:
        keys = list(txn_keys)
        out: list[Verdict] = []
        for i in range(0, len(keys), 500):   # under SQLite's bound-parameter limit
            chunk = keys[i:i + 500]
            rows = self.conn.execute(
                f"SELECT * FROM order_matches WHERE txn_key IN ({','.join('?' * len(chunk))})", chunk).fetchall()
            out.extend(Verdict(r["txn_key"], r["order_id"], r["tender"], r["outcome"], from_utc_text(r["at"]))
                       for r in rows)
        return out

    def verdict(self, txn_key: str) -> Verdict | None:
        found = self.verdicts([txn_key])
        return found[0] if found else None

    @staticmethod
    def _stored(r: sqlite3.Row) -> StoredOrder:
        order = Order.from_dict(json.loads(r["data"]))
        return StoredOrder(int(r["id"]), r["key"], r["source"], order, from_utc_text(r["time_utc"]),
                           from_utc_text(r["received"]))
