"""The pipeline's side of the journal: transactions, sightings, receipts, settlements, alerts, batches.

(Over 500 lines: every statement the pipeline writes is here, and replay's bulk load, which changes how
some of them run, belongs beside the savepoints and merges it changes.)

The pipeline is the only writer of everything except the outbox's delivery
columns, which the delivery thread updates on its own connection
(:mod:`agent.store.outbox`). Every read-only question that doctor, metrics,
the CLI or evidence also ask lives in :mod:`agent.store.queries`, which
:class:`Journal` inherits.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from agent.model import Alert, Settlement, Transaction, all_identity_keys
from agent.store.bulk import BulkKeys, BulkTails
from agent.store.outbox import insert_message
from agent.store.queries import JournalReader
from agent.store.schema import OnUpgrade, connect, from_utc_text, migrate, utc_text
from agent.store.turns import WriterTurns, taking
from drivers.pan import same_card


@dataclass(frozen=True, slots=True)
class StoredTxn:
    id: int
    key: str
    txn: Transaction
    first_seen: datetime
    sightings: int
    reprints: int


@dataclass(frozen=True, slots=True)
class MergeResult:
    stored: StoredTxn
    is_new: bool
    conflicts: dict[str, tuple[Any, Any]]
    reprint: bool


# Quarantine rows kept (the newest); a few KiB each at most, so a few hundred MiB in the worst case.
QUARANTINE_CAP = 100_000

# Fields whose disagreement between two sightings of one identity is a finding (DUP-002), not a merge.
CONFLICT_FIELDS = ("kind", "amount_minor", "card", "result")

# Replay's bulk load (Journal.bulk_load): rows written per real commit (~5,000 transactions), and the
# indexes no query reads (nothing looks transactions up by full card since the card-tail index, migration 2),
# built after the load instead of kept sorted at every insert: one random-keyed B-tree fewer while loading.
BULK_COMMIT_ROWS = 20_000
AFTER_LOAD = {"transactions_card": "CREATE INDEX IF NOT EXISTS transactions_card ON transactions(card, time_utc)",
              # Replay's rules look back in memory; only the daemon's read these (schema 6, agent/rules/lookback.py).
              "transactions_amount": "CREATE INDEX IF NOT EXISTS transactions_amount"
                                     " ON transactions(amount_minor, time_utc)",
              "transactions_voucher": "CREATE INDEX IF NOT EXISTS transactions_voucher ON transactions(voucher_no)"
                                      " WHERE voucher_no IS NOT NULL",
              "transactions_rrn": "CREATE INDEX IF NOT EXISTS transactions_rrn ON transactions(rrn)"
                                  " WHERE rrn IS NOT NULL"}
# Read during replay (sales_for_card: REF-001, AMT-001), so answered from memory while loading (store/bulk.py
# BulkTails) when the load starts on an empty table, and built after it like the above.
CARD_TAIL = {"transactions_card_tail":
             "CREATE INDEX IF NOT EXISTS transactions_card_tail ON transactions(substr(card, -4), time_utc)"}
_SALES_FOR_CARD = ("SELECT * FROM transactions WHERE substr(card, -4)=? AND time_utc>=? AND time_utc<=?"
                   " AND kind='sale' AND result='approved'")


class Journal(JournalReader):
    """Opened by the pipeline thread; every method runs on that thread."""

    def __init__(self, path: Path | str, *, synchronous: str = "FULL", quarantine_cap: int = QUARANTINE_CAP,
                 on_upgrade: OnUpgrade | None = None, turns: WriterTurns | None = None) -> None:
        """``on_upgrade``: how far an upgrade of an older journal is, while it runs (agent/store/schema.py).
        ``turns``: shared with the daemon's outbox, so each transaction waits its turn (agent/store/turns.py)."""
        self.path = Path(path)
        self._turns = turns
        self.quarantine_cap = quarantine_cap
        self._quarantined = 0
        super().__init__(connect(self.path, synchronous=synchronous))
        try:
            migrate(self.conn, on_upgrade=on_upgrade)
        except BaseException:
            self.conn.close()
            raise
        self._in_tx = False
        # Batches already recorded: the pipeline announces one per transaction, the row is needed once.
        self._known_batches: set[tuple[str, str]] = set()
        self._bulk_every: int | None = None   # replay's bulk load (bulk_load below): rows per real commit
        self._bulk_mark = 0                   # total_changes at its last real commit
        self._keys: BulkKeys | None = None    # during a bulk load: the key table in memory (store/bulk.py)
        self._tails: BulkTails | None = None  # ... and the card-tail index, when the load began on an empty table
        # A bulk load killed part-way (or a journal replayed without building them) lacks its deferred indexes:
        # built at the next open, whoever opens it (a no-op when they are there).
        for sql in (*AFTER_LOAD.values(), *CARD_TAIL.values()):
            self.conn.execute(sql)

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One atomic unit: nothing half-written reaches the journal."""
        if self._in_tx:
            yield self.conn
            return
        if self._bulk_every is not None:
            with self._bulk_unit():
                yield self.conn
            return
        with taking(self._turns):
            self.conn.execute("BEGIN IMMEDIATE")
            self._in_tx = True
            try:
                yield self.conn
            except BaseException:
                # SQLITE_FULL and some I/O errors roll back by themselves; a second ROLLBACK would raise
                # "no transaction is active" and hide the real cause from the log and the status.
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                self._known_batches.clear()  # rows written in this transaction are gone
                raise
            else:
                self.conn.execute("COMMIT")
            finally:
                self._in_tx = False

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        """One item inside the transaction: on an exception only its writes are undone, then it re-raises."""
        self.conn.execute("SAVEPOINT item")
        keys = self._keys
        mark = keys.mark() if keys is not None else 0
        try:
            yield
        except BaseException:
            try:
                self.conn.execute("ROLLBACK TO item")
                self.conn.execute("RELEASE item")
            except sqlite3.Error:
                pass  # the whole transaction is failing (disk, I/O): its own rollback follows
            if keys is not None:
                keys.undo(mark)
            self._known_batches.clear()
            raise
        else:
            self.conn.execute("RELEASE item")

    # -- replay's bulk load (the daemon never calls this) -------------------------------------------
    @contextmanager
    def bulk_load(self, *, commit_every: int | None = None, build_after: bool = True,
                  card_lookback: timedelta | None = None) -> Iterator[None]:
        """Replay's journal: one SQLite transaction per ``commit_every`` rows written (default
        :data:`BULK_COMMIT_ROWS`), not per
        :meth:`transaction` (each of those becomes a savepoint inside it, so a failing unit still undoes
        exactly its own writes), ``synchronous=OFF``, and the indexes nothing reads during a replay
        (:data:`AFTER_LOAD`) dropped and built once at the end (``build_after``; not worth it for a journal
        about to be deleted). The key table is held in memory and written sorted at each real commit
        (:class:`~agent.store.bulk.BulkKeys`); with ``card_lookback`` (the rules' longest look-back by card) and
        an empty ``transactions`` table, the card-tail index is deferred too and ``sales_for_card`` answered
        from memory (:class:`~agent.store.bulk.BulkTails`).

        The durability contract (README, replay): a replay killed part-way leaves a consistent journal
        holding every unit up to its last real commit, as before; a power cut during a replay may leave
        the file unusable (no fsync): delete the ``--state`` directory and replay again. Replaying again
        over a kept ``--state`` builds a missing after-load index too.
        """
        c = self.conn
        c.execute("PRAGMA synchronous=OFF")
        try:   # from here on the finally below restores the index and the durability, whatever fails
            deferred = dict(AFTER_LOAD)
            if card_lookback is not None and c.execute("SELECT 1 FROM transactions LIMIT 1").fetchone() is None:
                deferred.update(CARD_TAIL)
                self._tails = BulkTails(card_lookback)
            for name in deferred:
                c.execute(f"DROP INDEX IF EXISTS {name}")
            self._keys = BulkKeys(c)
            c.execute("BEGIN IMMEDIATE")
            self._bulk_every, self._bulk_mark = commit_every or BULK_COMMIT_ROWS, c.total_changes
            yield
        finally:
            self._bulk_every = None
            # Every unit released so far is whole: what was replayed stays, also when a capture breaks
            # part-way (unless SQLite itself rolled back, after a disk or I/O error; then the keys held are
            # of rows that are gone, and only the table's count).
            try:
                if c.in_transaction:
                    if self._keys is not None:
                        self._keys.flush(c)
                    c.execute("COMMIT")
            finally:
                self._keys = self._tails = None
            if build_after:
                for sql in (*AFTER_LOAD.values(), *CARD_TAIL.values()):
                    c.execute(sql)
            c.execute("PRAGMA synchronous=FULL")

    @contextmanager
    def _bulk_unit(self) -> Iterator[None]:
        """One :meth:`transaction` during a bulk load: a savepoint, and a real commit once enough rows."""
        c = self.conn
        keys = self._keys
        if not c.in_transaction:   # SQLite rolled the load's transaction back (disk full, I/O): a new one
            if keys is not None:
                keys.forget()
            c.execute("BEGIN IMMEDIATE")
            self._bulk_mark = c.total_changes
        c.execute("SAVEPOINT unit")
        self._in_tx = True
        mark = keys.mark() if keys is not None else 0
        try:
            yield
        except BaseException:
            try:
                c.execute("ROLLBACK TO unit")
                c.execute("RELEASE unit")
            except sqlite3.Error:
                pass  # SQLITE_FULL and some I/O errors roll the whole transaction back: bulk_load's exit says so
            if keys is not None:
                if c.in_transaction:
                    keys.undo(mark)
                else:
                    keys.forget()
            self._known_batches.clear()
            raise
        else:
            c.execute("RELEASE unit")
            if keys is not None:
                keys.rotate(c)
            held = len(keys.pending) if keys is not None else 0
            if c.total_changes + held - self._bulk_mark >= (self._bulk_every or 0):
                if keys is not None:
                    keys.flush(c)
                c.execute("COMMIT")
                c.execute("BEGIN IMMEDIATE")
                self._bulk_mark = c.total_changes
        finally:
            self._in_tx = False

    # -- quarantine ----------------------------------------------------------------------
    def quarantine(self, *, received: datetime, source: str, stage: str, reason: str, raw: str) -> None:
        """Keep an input that did not become an event (texts already scrubbed and bounded by the boundary)."""
        c = self.conn
        c.execute("INSERT INTO quarantine(received, source, stage, reason, raw) VALUES(?,?,?,?,?)",
                  (utc_text(received), source, stage, reason, raw))
        c.execute("INSERT INTO meta(k, v) VALUES('quarantine_total', '1') ON CONFLICT(k) DO UPDATE"
                  " SET v=CAST(CAST(v AS INTEGER) + 1 AS TEXT)")
        self._quarantined += 1
        if self._quarantined % 1000 == 0:
            # A noisy wire must not fill the disk: keep the newest rows, the total stays in meta.
            c.execute("DELETE FROM quarantine WHERE id <= (SELECT MAX(id) FROM quarantine) - ?",
                      (self.quarantine_cap,))

    # -- transactions ----------------------------------------------------------------
    def merge_transaction(self, txn: Transaction, *, key: str, instant: datetime, received: datetime,
                          source: str) -> MergeResult:
        """Record one sighting; merge with an earlier sighting of the same identity."""
        c = self.conn
        keys = [key, *[k for k in all_identity_keys(txn) if k != key]]
        # One look-up for every key this sighting could be known by; the most specific key wins.
        bulk, tails = self._keys, self._tails
        if bulk is not None:
            hits = bulk.lookup(c, keys)
        else:
            marks = ",".join("?" * len(keys))
            hits = dict(c.execute(f"SELECT key, txn_id FROM txn_keys WHERE key IN ({marks})", keys).fetchall())
        row = None
        for k in keys:
            if k in hits:
                row = c.execute("SELECT * FROM transactions WHERE id=?", (hits[k],)).fetchone()
                break
        now_text = utc_text(received)
        data = json.dumps(txn.to_dict(), ensure_ascii=False)
        if row is None:
            cur = c.execute(
                "INSERT INTO transactions(key, terminal_id, batch_no, voucher_no, receipt_no, trace_no, rrn,"
                " kind, result, amount_minor, currency, card, time_utc, data, first_seen, last_seen,"
                " original_voucher_no, original_rrn) VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (key, txn.terminal_id, txn.batch_no, txn.voucher_no, txn.receipt_no, txn.trace_no, txn.rrn,
                 txn.kind, txn.result, txn.amount_minor, txn.currency, txn.card, utc_text(instant), data,
                 now_text, now_text, txn.original_voucher_no, txn.original_rrn),
            )
            txn_id = int(cur.lastrowid or 0)
            if bulk is not None:
                bulk.add([k for k in keys if k not in hits], txn_id)   # as INSERT OR IGNORE: the first row wins
                if tails is not None and txn.kind == "sale" and txn.result == "approved":
                    tails.add(txn.card, instant, txn_id)
            else:
                c.executemany("INSERT OR IGNORE INTO txn_keys(key, txn_id) VALUES(?,?)",
                              [(k, txn_id) for k in keys])
            c.execute("INSERT INTO sightings(txn_id, source, received, data, reprint) VALUES(?,?,?,?,0)",
                      (txn_id, source, now_text, data))
            return MergeResult(StoredTxn(txn_id, key, txn, received, 1, 0), True, {}, False)

        stored = Transaction.from_dict(json.loads(row["data"]))
        conflicts = {
            f: (getattr(stored, f), getattr(txn, f)) for f in CONFLICT_FIELDS
            if getattr(stored, f) is not None and getattr(txn, f) is not None
            and getattr(stored, f) != getattr(txn, f)
            # A masked card seen two ways (6+4 vs last-4 only) is the same card.
            and not (f == "card" and same_card(getattr(stored, f), getattr(txn, f)))
        }
        merged = _fill(stored, txn)
        reprint = not conflicts
        c.execute(
            "UPDATE transactions SET terminal_id=?, batch_no=?, voucher_no=?, receipt_no=?, trace_no=?, rrn=?,"
            " currency=?, card=?, data=?, last_seen=?, sightings=sightings+1, reprints=reprints+?,"
            " original_voucher_no=?, original_rrn=? WHERE id=?",
            (merged.terminal_id, merged.batch_no, merged.voucher_no, merged.receipt_no, merged.trace_no,
             merged.rrn, merged.currency, merged.card, json.dumps(merged.to_dict(), ensure_ascii=False),
             now_text, 1 if reprint else 0, merged.original_voucher_no, merged.original_rrn, row["id"]),
        )
        if bulk is not None:
            bulk.add([k for k in keys if k not in hits], row["id"])
            if tails is not None and merged.card != row["card"] and row["kind"] == "sale" \
                    and row["result"] == "approved":
                tails.changed(row["card"], merged.card, from_utc_text(row["time_utc"]), row["id"])
        else:
            c.executemany("INSERT OR IGNORE INTO txn_keys(key, txn_id) VALUES(?,?)",
                          [(k, row["id"]) for k in keys])
        c.execute("INSERT INTO sightings(txn_id, source, received, data, reprint) VALUES(?,?,?,?,?)",
                  (row["id"], source, now_text, data, 1 if reprint else 0))
        result = StoredTxn(row["id"], row["key"], merged, from_utc_text(row["first_seen"]),
                           row["sightings"] + 1, row["reprints"] + (1 if reprint else 0))
        return MergeResult(result, False, conflicts, reprint)

    def _stored(self, r: sqlite3.Row) -> StoredTxn:
        return StoredTxn(r["id"], r["key"], Transaction.from_dict(json.loads(r["data"])),
                         from_utc_text(r["first_seen"]), r["sightings"], r["reprints"])

    def sales_for_card(self, card: str, since: datetime, until: datetime) -> list[StoredTxn]:
        """Approved sales that may be on this card: a 6+4 and a last-4 mask of one card both match."""
        args = (card[-4:], utc_text(since), utc_text(until))
        tails = self._tails
        if tails is not None and tails.covers(since):
            # A bulk load without the card-tail index: the candidates it holds, filtered as the index would be.
            ids = tails.ids(card[-4:], since, until)
            rows = []
            for i in range(0, len(ids), 500):
                part = ids[i:i + 500]
                rows += self.conn.execute(f"{_SALES_FOR_CARD} AND id IN ({_marks(part)})", (*args, *part)).fetchall()
            rows.sort(key=lambda r: (r["time_utc"], r["id"]))
        else:
            rows = self.conn.execute(f"{_SALES_FOR_CARD} ORDER BY time_utc", args).fetchall()
        return [s for s in map(self._stored, rows) if s.txn.card and same_card(s.txn.card, card)]

    def approved_sale_amounts(self, since: datetime, until: datetime) -> list[int]:
        rows = self.conn.execute(
            "SELECT amount_minor FROM transactions WHERE time_utc>=? AND time_utc<=? AND kind='sale'"
            " AND result='approved'", (utc_text(since), utc_text(until))).fetchall()
        return [r[0] for r in rows]

    def approved_sales_since(self, since: datetime) -> list[tuple[datetime, int]]:
        """(instant, amount) of approved sales at or after ``since``: the baseline supply's start-up read."""
        rows = self.conn.execute(
            "SELECT time_utc, amount_minor FROM transactions WHERE time_utc>=? AND kind='sale'"
            " AND result='approved'", (utc_text(since),)).fetchall()
        return [(from_utc_text(r[0]), r[1]) for r in rows]

    def recent_transactions(self, since: datetime) -> list[StoredTxn]:
        rows = self.conn.execute("SELECT * FROM transactions WHERE time_utc>=? ORDER BY time_utc",
                                 (utc_text(since),)).fetchall()
        return [self._stored(r) for r in rows]

    def count_transactions(self) -> int:
        return int(self.conn.execute("SELECT COUNT(*) FROM transactions").fetchone()[0])

    def sightings_of(self, txn_id: int) -> list[dict[str, Any]]:
        rows = self.conn.execute("SELECT source, received, reprint FROM sightings WHERE txn_id=? ORDER BY id",
                                 (txn_id,)).fetchall()
        return [dict(r) for r in rows]

    def txn_id_for_key(self, key: str) -> int | None:
        if self._keys is not None:   # a bulk load: keys not yet in the table are held in memory
            return self._keys.get(self.conn, key)
        hit = self.conn.execute("SELECT txn_id FROM txn_keys WHERE key=?", (key,)).fetchone()
        return int(hit[0]) if hit else None

    # -- receipts and settlements ---------------------------------------------------------
    def add_receipt(self, *, txn_id: int | None, source: str, received: datetime, terminal_id: str | None,
                    data: dict[str, Any]) -> None:
        self.conn.execute("INSERT INTO receipts(txn_id, source, received, terminal_id, data) VALUES(?,?,?,?,?)",
                          (txn_id, source, utc_text(received), terminal_id, json.dumps(data, ensure_ascii=False)))

    def receipts_of(self, txn_id: int) -> list[dict[str, Any]]:
        rows = self.conn.execute("SELECT data FROM receipts WHERE txn_id=? ORDER BY id", (txn_id,)).fetchall()
        return [json.loads(r[0]) for r in rows]

    def add_settlement(self, s: Settlement, *, received: datetime, source: str) -> int:
        cur = self.conn.execute(
            "INSERT INTO settlements(terminal_id, batch_no, time_utc, received, source, data) VALUES(?,?,?,?,?,?)",
            (s.terminal_id, s.batch_no, utc_text(s.time) if s.time else None, utc_text(received), source,
             json.dumps(s.to_dict(), ensure_ascii=False)),
        )
        return int(cur.lastrowid or 0)

    # -- alerts ------------------------------------------------------------------------------
    def alert_for(self, rule: str, key: str) -> Alert | None:
        row = self.conn.execute("SELECT data, key FROM alerts WHERE rule=? AND key=?", (rule, key)).fetchone()
        return Alert.from_dict(json.loads(row[0]), key=row[1]) if row else None

    def get_alert(self, alert_id: str) -> Alert | None:
        # Exactly this id; short codes and prefixes are resolved by AlertBook.find.
        row = self.conn.execute("SELECT data, key FROM alerts WHERE id=?", (alert_id,)).fetchone()
        return Alert.from_dict(json.loads(row[0]), key=row[1]) if row else None

    def save_alert(self, alert: Alert, *, actor: str, note: str | None = None) -> None:
        subject = alert.transactions[-1] if alert.transactions else None
        deadline = alert.suggestion.deadline if alert.suggestion else None
        values = (
            alert.rule, alert.key, alert.revision, alert.state, alert.severity,
            subject.terminal_id if subject else None, subject.voucher_no if subject else None,
            subject.receipt_no if subject else None, subject.trace_no if subject else None,
            subject.rrn if subject else None, subject.batch_no if subject else None,
            utc_text(deadline) if deadline else None,
            json.dumps(alert.to_dict(), ensure_ascii=False), utc_text(alert.created), utc_text(alert.updated),
            alert.code or None,
        )
        self.conn.execute(
            "INSERT INTO alerts(rule, key, revision, state, severity, subject_terminal, subject_voucher,"
            " subject_receipt, subject_trace, subject_rrn, subject_batch, deadline, data, created, updated, code, id)"
            " VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
            " ON CONFLICT(id) DO UPDATE SET revision=excluded.revision, state=excluded.state,"
            " severity=excluded.severity, deadline=excluded.deadline, data=excluded.data,"
            " updated=excluded.updated",
            (*values, alert.id),
        )
        self.conn.execute("UPDATE alerts SET last_notice=? WHERE id=?", (utc_text(alert.updated), alert.id))
        self.conn.execute("INSERT INTO alert_log(alert_id, revision, state, at, actor, note) VALUES(?,?,?,?,?,?)",
                          (alert.id, alert.revision, alert.state, utc_text(alert.updated), actor, note))

    def alerts_referencing(self, terminal_id: str | None, ref: str | None, rrn: str | None, *,
                           states: Collection[str]) -> list[Alert]:
        """Alerts in one of ``states`` whose flagged transaction a returning one points at."""
        clauses, args = [], []
        if ref:
            clauses.append("((subject_terminal IS ? OR ? IS NULL) AND"
                           " (subject_voucher=? OR subject_receipt=? OR subject_trace=?))")
            args += [terminal_id, terminal_id, ref, ref, ref]
        if rrn:
            clauses.append("subject_rrn=?")
            args.append(rrn)
        if not clauses or not states:
            return []
        rows = self.conn.execute(
            f"SELECT data, key FROM alerts WHERE state IN ({_marks(states)}) AND ({' OR '.join(clauses)})",
            [*states, *args]).fetchall()
        return [Alert.from_dict(json.loads(r[0]), key=r[1]) for r in rows]

    def alerts(self, *, states: Collection[str] | None = None, limit: int | None = 1000,
               newest: bool = False) -> list[Alert]:
        """Oldest first; ``limit`` None for all; ``newest`` keeps the newest ``limit`` (still oldest first)."""
        where = f"WHERE state IN ({_marks(states)})" if states else ""
        order = "DESC" if newest else "ASC"
        rows = self.conn.execute(f"SELECT data, key FROM alerts {where} ORDER BY created {order}, rowid {order}"
                                 " LIMIT ?", (*(states or ()), -1 if limit is None else limit)).fetchall()
        if newest:
            rows.reverse()
        return [Alert.from_dict(json.loads(r[0]), key=r[1]) for r in rows]

    def count_alerts(self, *, states: Collection[str] | None = None) -> int:
        where = f"WHERE state IN ({_marks(states)})" if states else ""
        return int(self.conn.execute(f"SELECT count(*) FROM alerts {where}", tuple(states or ())).fetchone()[0])

    def alert_log(self, alert_id: str) -> list[dict[str, Any]]:
        rows = self.conn.execute("SELECT revision, state, at, actor, note FROM alert_log WHERE alert_id=?"
                                 " ORDER BY id", (alert_id,)).fetchall()
        return [dict(r) for r in rows]

    # -- outbox (rows are written here, inside the alert's transaction) ---------------------
    def enqueue(self, *, message_id: str, channel: str, kind: str, alert_id: str | None, revision: int | None,
                payload: dict[str, Any], now: datetime, not_before: datetime | None = None,
                deadline: datetime | None = None) -> None:
        insert_message(self.conn, message_id=message_id, channel=channel, kind=kind, alert_id=alert_id,
                       revision=revision, payload=payload, next_at=not_before or now, deadline=deadline,
                       created=now, updated=now)

    def alerts_due_reminder(self, last_notice_before: Mapping[str, datetime]) -> list[Alert]:
        """Alerts whose last notice is older than the limit given for their state (other states: never)."""
        if not last_notice_before:
            return []
        clauses = " OR ".join("(state=? AND last_notice<=?)" for _ in last_notice_before)
        args = [v for state, before in last_notice_before.items() for v in (state, utc_text(before))]
        rows = self.conn.execute(f"SELECT data, key FROM alerts WHERE {clauses} ORDER BY created", args).fetchall()
        return [Alert.from_dict(json.loads(r[0]), key=r[1]) for r in rows]

    def alerts_to_remind(self, states: Collection[str], *, changed_since: Mapping[str, datetime] | None = None,
                         ) -> list[tuple[Alert, datetime | None, int]]:
        """(alert, its last notice, reminders of its current revision already queued) for ``states``;
        ``changed_since`` leaves out alerts of a state last changed before the instant given for it
        (escalated findings past their refund window: months of them must not be read every minute).

        A reminder is counted once however many people channels it went to (one message id).
        """
        if not states:
            return []
        bounds = changed_since or {}
        old = "".join(" AND NOT (a.state=? AND a.updated<?)" for _ in bounds)
        args = [v for state, since in bounds.items() for v in (state, utc_text(since))]
        rows = self.conn.execute(
            "SELECT a.data, a.key, a.last_notice, (SELECT count(DISTINCT o.message_id) FROM outbox o"
            " WHERE o.alert_id=a.id AND o.revision=a.revision AND o.kind='reminder') AS reminded"
            f" FROM alerts a WHERE a.state IN ({_marks(states)}){old} ORDER BY a.created",
            (*states, *args)).fetchall()
        return [(Alert.from_dict(json.loads(r[0]), key=r[1]), from_utc_text(r[2]) if r[2] else None, int(r[3]))
                for r in rows]

    def touch_alert(self, alert_id: str, now: datetime) -> None:
        self.conn.execute("UPDATE alerts SET last_notice=? WHERE id=?", (utc_text(now), alert_id))

    def alerts_in_batch(self, terminal_id: str | None, batch_no: str | None, *,
                        states: Collection[str]) -> list[Alert]:
        """Alerts in one of ``states`` whose transaction is in this batch (any batch of the terminal if unknown)."""
        if not states:
            return []
        rows = self.conn.execute(
            f"SELECT data, key FROM alerts WHERE state IN ({_marks(states)}) AND (subject_terminal IS ? OR ? IS NULL)"
            " AND (subject_batch IS ? OR ? IS NULL OR subject_batch IS NULL) ORDER BY created",
            (*states, terminal_id, terminal_id, batch_no, batch_no)).fetchall()
        return [Alert.from_dict(json.loads(r[0]), key=r[1]) for r in rows]

    def open_batch(self, terminal_id: str, batch_no: str, now: datetime) -> None:
        if (terminal_id, batch_no) in self._known_batches:
            return
        self.conn.execute("INSERT OR IGNORE INTO batches(terminal_id, batch_no, opened) VALUES(?,?,?)",
                          (terminal_id, batch_no, utc_text(now)))
        if len(self._known_batches) > 1000:
            self._known_batches.clear()
        self._known_batches.add((terminal_id, batch_no))

    def close_batches(self, terminal_id: str | None, batch_no: str | None, now: datetime) -> list[tuple[str, str]]:
        rows = self.conn.execute(
            "SELECT terminal_id, batch_no FROM batches WHERE closed IS NULL AND (terminal_id IS ? OR ? IS NULL)"
            " AND (batch_no IS ? OR ? IS NULL)", (terminal_id, terminal_id, batch_no, batch_no)).fetchall()
        self.conn.executemany("UPDATE batches SET closed=? WHERE terminal_id=? AND batch_no=?",
                              [(utc_text(now), r[0], r[1]) for r in rows])
        return [(r[0], r[1]) for r in rows]

    # -- meta ----------------------------------------------------------------------------------
    def get_meta(self, k: str) -> str | None:
        row = self.conn.execute("SELECT v FROM meta WHERE k=?", (k,)).fetchone()
        return row[0] if row else None

    def set_meta(self, k: str, v: str) -> None:
        self.conn.execute("INSERT INTO meta(k, v) VALUES(?,?) ON CONFLICT(k) DO UPDATE SET v=excluded.v", (k, v))


def _marks(values: Collection[Any]) -> str:
    """``?,?,?``: one parameter per value of an IN (...) list."""
    return ",".join("?" for _ in values)


def _fill(stored: Transaction, new: Transaction) -> Transaction:
    """Fill fields the stored record lacks from a later sighting; never overwrite what we had."""
    changes = {}
    for name in Transaction.SCHEMA:
        if name in ("source", "kind", "result", "amount_minor"):
            continue
        if getattr(stored, name) is None and getattr(new, name) is not None:
            changes[name] = getattr(new, name)
    if stored.card and new.card and "*" in stored.card[:6] and "*" not in new.card[:6]:
        changes["card"] = new.card  # a 6+4 mask is better than last-4 only
    return stored.with_(**changes) if changes else stored
