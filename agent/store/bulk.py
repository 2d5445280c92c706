"""What replay's bulk load (:meth:`agent.store.journal.Journal.bulk_load`) holds in memory instead of asking SQLite.

Two random-keyed B-trees cost most of replay's SQLite time per transaction and grow with the journal (issue 20,
BENCHMARKS.md 9i): the key table ``txn_keys`` (looked up and written for every sighting) and the card-tail index
(kept sorted at every insert, read by REF-001 and AMT-001 a few times in a hundred transactions). During a bulk
load the journal answers both from here: the keys written recently in two generations of dicts (a key older than
that is in ``txn_keys`` already, which a Bloom filter of every key tells apart from a new key without a
look-up), the new keys written to ``txn_keys`` sorted, at each real commit; approved sales per card tail for
the rules' look-back, while the card-tail index is built once after the load. Same answers as the tables'
(tests/test_replay_journal.py). The daemon never uses this: its journal keeps every statement as it was.
"""

from __future__ import annotations

import sqlite3
from array import array
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)


def micros(instant: datetime) -> int:
    """An instant as integer microseconds (the journal's ``time_utc`` text has the same precision and order)."""
    return (instant - _EPOCH) // _MICRO


class BulkKeys:
    """``txn_keys`` during a bulk load: key -> transaction row id.

    Every key written in this load is in ``young`` or ``old`` until it has reached the table (``pending`` is
    written before a generation is dropped and before each real commit); the Bloom filter holds every key of
    the table and of this load, so a key it has never seen (nearly every key: most sightings are new) needs
    no look-up at all. A false positive costs the one SELECT every key used to cost.
    """

    GENERATION = 20_000          # keys per generation (two held: ~5 MiB at most)
    BLOOM_BITS = 1 << 25         # 4 MiB; ~3 % false positives at 3 million keys, two probes per key

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.young: dict[str, int] = {}
        self.old: dict[str, int] = {}
        self.pending: list[tuple[str, int]] = []
        self._mask = self.BLOOM_BITS - 1   # a power of two
        self._bloom = bytearray(max(1, self.BLOOM_BITS // 8))
        for (key,) in conn.execute("SELECT key FROM txn_keys"):
            self._mark(key)

    def _mark(self, key: str) -> None:
        h = hash(key)
        i, j = h & self._mask, (h >> 25) & self._mask
        bloom = self._bloom
        bloom[i >> 3] |= 1 << (i & 7)
        bloom[j >> 3] |= 1 << (j & 7)

    def _maybe(self, key: str) -> bool:
        h = hash(key)
        i, j = h & self._mask, (h >> 25) & self._mask
        bloom = self._bloom
        return bool(bloom[i >> 3] & (1 << (i & 7))) and bool(bloom[j >> 3] & (1 << (j & 7)))

    def lookup(self, conn: sqlite3.Connection, keys: Sequence[str]) -> dict[str, int]:
        """The keys already known, with their row ids (as ``SELECT key, txn_id FROM txn_keys WHERE key IN``)."""
        hits: dict[str, int] = {}
        ask: list[str] = []
        for k in keys:
            v = self.young.get(k)
            if v is None:
                v = self.old.get(k)
            if v is not None:
                hits[k] = v
            elif self._maybe(k):
                ask.append(k)
        if ask:
            marks = ",".join("?" * len(ask))
            hits.update(conn.execute(f"SELECT key, txn_id FROM txn_keys WHERE key IN ({marks})", ask).fetchall())
        return hits

    def get(self, conn: sqlite3.Connection, key: str) -> int | None:
        return self.lookup(conn, (key,)).get(key)

    def add(self, keys: Iterable[str], txn_id: int) -> None:
        """New keys (none known yet: the caller looked them up) of row ``txn_id``; reach the table later."""
        for k in keys:
            self.young[k] = txn_id
            self.pending.append((k, txn_id))
            self._mark(k)

    def mark(self) -> int:
        return len(self.pending)

    def undo(self, mark: int) -> None:
        """A savepoint rolled back: forget the keys added since ``mark`` (their rows are gone)."""
        for k, _ in self.pending[mark:]:
            self.young.pop(k, None)   # added after the last rotation (rotations only between units): in young
        del self.pending[mark:]

    def forget(self) -> None:
        """SQLite rolled the whole load's transaction back (disk, I/O): only what is in the table is known."""
        self.young, self.old, self.pending = {}, {}, []

    def flush(self, conn: sqlite3.Connection) -> int:
        """Write the pending keys (sorted: neighbouring leaves of the B-tree one after the other)."""
        rows = len(self.pending)
        if rows:
            self.pending.sort()
            conn.executemany("INSERT OR IGNORE INTO txn_keys(key, txn_id) VALUES(?,?)", self.pending)
            self.pending = []
        return rows

    def rotate(self, conn: sqlite3.Connection) -> bool:
        """Between units: once a generation is full, the older one goes (its keys are in the table by then)."""
        if len(self.young) < self.GENERATION:
            return False
        self.flush(conn)
        self.old, self.young = self.young, {}
        return True


class BulkTails:
    """Approved sales per card tail (last four characters of the masked card) written during this load, as
    (instant in microseconds, row id) pairs in one ``array('q')`` per tail (16 bytes a sale), for the rules'
    look-back ``lookback``; older pairs are dropped as the load moves on. Only used when the load began on an
    empty ``transactions`` table, so every row that can match has a pair here, or is older than ``held_since``:
    a query reaching before that (a look-back longer than the one given) is answered by SQLite alone.

    The pairs are candidates, a superset: the journal asks SQLite for the candidates that still match (a
    savepoint rolled back leaves a pair whose row is gone or whose id a later row took; a card changed by a
    merge leaves its old pair), so nothing here needs undoing.
    """

    PRUNE_EVERY = 20_000   # sales added between prunes

    def __init__(self, lookback: timedelta) -> None:
        self.lookback = lookback
        self.by_tail: dict[str, array[int]] = {}
        self.held_since: int | None = None   # pairs before this instant were dropped (None: nothing dropped)
        self._newest = 0
        self._added = 0

    def add(self, card: str | None, instant: datetime, txn_id: int) -> None:
        if not card:
            return
        t = micros(instant)
        arr = self.by_tail.get(card[-4:])
        if arr is None:
            arr = self.by_tail[card[-4:]] = array("q")
        arr.append(t)
        arr.append(txn_id)
        if t > self._newest:
            self._newest = t
        self._added += 1
        if self._added >= self.PRUNE_EVERY:
            self._prune()

    def changed(self, old_card: str | None, new_card: str | None, instant: datetime, txn_id: int) -> None:
        """A merge changed the row's card (a 6+4 mask learnt, or a card where there was none)."""
        if new_card and (not old_card or old_card[-4:] != new_card[-4:]):
            self.add(new_card, instant, txn_id)

    def covers(self, since: datetime) -> bool:
        return self.held_since is None or micros(since) >= self.held_since

    def ids(self, tail: str, since: datetime, until: datetime) -> list[int]:
        """Row ids that may be approved sales on this tail in [since, until] (each once)."""
        arr = self.by_tail.get(tail)
        if arr is None:
            return []
        lo, hi = micros(since), micros(until)
        return list(dict.fromkeys(arr[i + 1] for i in range(0, len(arr), 2) if lo <= arr[i] <= hi))

    def _prune(self) -> None:
        self._added = 0
        cut = self._newest - self.lookback // _MICRO
        for tail, arr in list(self.by_tail.items()):
            kept = array("q")
            for i in range(0, len(arr), 2):
                if arr[i] >= cut:
                    kept.append(arr[i])
                    kept.append(arr[i + 1])
            if kept:
                self.by_tail[tail] = kept
            else:
                del self.by_tail[tail]
        self.held_since = cut if self.held_since is None else max(self.held_since, cut)
