"""Approved sales in a time window, grouped by SQLite for the daemon's baseline refresh
(agent/rules/grouped_baseline.py): distinct amounts with their counts, sales per UTC quarter-hour, and the
few largest sales one by one. Rows are read from a cursor as they come, never all at once."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime

from agent.store.schema import from_utc_text, utc_text

_SALES = "FROM transactions WHERE time_utc>=? AND time_utc<=? AND kind='sale' AND result='approved'"
# "YYYY-MM-DDTHH:" and the quarter of the hour (0-3) of utc_text's fixed-width form.
_QUARTER = "substr(time_utc, 1, 14) || (CAST(substr(time_utc, 15, 2) AS INTEGER) / 15)"


class JournalSaleWindow:
    """The approved sales with ``since <= time <= until``."""

    def __init__(self, conn: sqlite3.Connection, since: datetime, until: datetime) -> None:
        self.conn = conn
        self.bounds = (utc_text(since), utc_text(until))

    def _rows(self, sql: str, params: tuple[object, ...]) -> sqlite3.Cursor:
        cursor = self.conn.cursor()
        cursor.row_factory = None   # plain tuples: no Row object per distinct amount
        return cursor.execute(sql, params)

    def amount_counts(self) -> Iterator[tuple[int, int]]:
        yield from self._rows(f"SELECT amount_minor, COUNT(*) {_SALES} GROUP BY amount_minor ORDER BY amount_minor",
                              self.bounds)

    def quarter_counts(self, above: int) -> Iterator[tuple[datetime, int]]:
        for key, count in self._rows(
                f"SELECT {_QUARTER} AS q, COUNT(*) {_SALES} AND amount_minor>? GROUP BY q ORDER BY q",
                (*self.bounds, above)):
            yield quarter_start(key), count

    def sales_in(self, start: datetime, end: datetime, above: int) -> Iterator[tuple[datetime, int]]:
        for at, amount in self._rows(
                f"SELECT time_utc, amount_minor {_SALES} AND amount_minor>? AND time_utc>=? AND time_utc<?",
                (*self.bounds, above, utc_text(start), utc_text(end))):
            yield from_utc_text(at), amount

    def sales_at_least(self, amount: int) -> Iterator[tuple[datetime, int]]:
        for at, value in self._rows(f"SELECT time_utc, amount_minor {_SALES} AND amount_minor>=?",
                                    (*self.bounds, amount)):
            yield from_utc_text(at), value


def quarter_start(key: str) -> datetime:
    """The UTC instant a quarter-hour key (``_QUARTER``: "YYYY-MM-DDTHH:" and the quarter digit) starts at."""
    return datetime(int(key[0:4]), int(key[5:7]), int(key[8:10]), int(key[11:13]), 15 * int(key[14:]), tzinfo=UTC)
