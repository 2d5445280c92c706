"""Read-only questions about the journal, for the CLI, doctor, metrics, evidence and replay.

:class:`JournalReader` answers them over whichever connection the caller
holds: the pipeline's :class:`~agent.store.journal.Journal` and the delivery
thread's :class:`~agent.store.outbox.Outbox` are readers too, and
:func:`open_read_only` gives one to a process that must not write (doctor, a
metrics scrape in another thread). Used as a context manager, a reader closes
its connection and turns SQLite's errors into :class:`StoreError`, so callers
outside the store need not know it is SQLite.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Collection
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from agent.store.schema import StoreError, connect_read_only, from_utc_text, user_version, utc_text


class JournalReader:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> JournalReader:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
        if isinstance(exc, sqlite3.Error):
            raise StoreError(str(exc)) from exc

    # -- the file ----------------------------------------------------------------------------
    def integrity_check(self) -> str:
        """SQLite's verdict on the file: ``"ok"``, or the first problem it found."""
        return str(self.conn.execute("PRAGMA integrity_check").fetchone()[0])

    # -- transactions ------------------------------------------------------------------------
    def earliest_transaction(self) -> datetime | None:
        row = self.conn.execute("SELECT MIN(time_utc) FROM transactions").fetchone()
        return from_utc_text(row[0]) if row and row[0] else None

    def latest_transaction(self) -> datetime | None:
        row = self.conn.execute("SELECT MAX(time_utc) FROM transactions").fetchone()
        return from_utc_text(row[0]) if row and row[0] else None

    # -- what each source saw (dead-wire detection, the all-clear) ------------------------------
    def last_sightings(self) -> dict[str, datetime]:
        """Source name -> when it last delivered a transaction."""
        rows = self.conn.execute("SELECT source, MAX(received) FROM sightings GROUP BY source").fetchall()
        return {str(r[0]): from_utc_text(r[1]) for r in rows if r[1]}

    def sighting_times(self, source: str, since: datetime) -> list[datetime]:
        rows = self.conn.execute("SELECT received FROM sightings WHERE source=? AND received>=? ORDER BY received",
                                 (source, utc_text(since))).fetchall()
        return [from_utc_text(r[0]) for r in rows]

    def approved_sales(self, since: datetime, until: datetime) -> dict[str, tuple[int, int]]:
        """Currency -> (count, total minor units) of approved sales in [since, until)."""
        rows = self.conn.execute(
            "SELECT COALESCE(currency, ''), COUNT(*), COALESCE(SUM(amount_minor), 0) FROM transactions"
            " WHERE time_utc>=? AND time_utc<? AND kind='sale' AND result='approved' GROUP BY currency",
            (utc_text(since), utc_text(until))).fetchall()
        return {str(r[0]): (int(r[1]), int(r[2])) for r in rows}

    def batch_totals(self, terminal_id: str | None, batch_no: str | None, since: datetime,
                     until: datetime) -> dict[str, tuple[int, int]]:
        """Kind -> (count, total minor units) of approved transactions in one terminal's batch; without a
        batch number (wallet payments, printer-only installs), in [since, until) on that terminal."""
        if batch_no:
            rows = self.conn.execute(
                "SELECT kind, COUNT(*), COALESCE(SUM(amount_minor), 0) FROM transactions"
                " WHERE result='approved' AND terminal_id IS ? AND batch_no=? GROUP BY kind",
                (terminal_id, batch_no)).fetchall()
        else:
            rows = self.conn.execute(
                "SELECT kind, COUNT(*), COALESCE(SUM(amount_minor), 0) FROM transactions"
                " WHERE result='approved' AND terminal_id IS ? AND time_utc>=? AND time_utc<? GROUP BY kind",
                (terminal_id, utc_text(since), utc_text(until))).fetchall()
        return {str(r[0]): (int(r[1]), int(r[2])) for r in rows}

    def journal_events(self, since: datetime, until: datetime, source: str | None = None
                       ) -> list[tuple[datetime, str, str]]:
        """(received, source, Event JSON) of every event the journal kept from ``since`` up to ``until``:
        each transaction sighting as it was seen (not the merged row), receipts, the till's ECR requests,
        settlements and orders, in the order received (a receipt before what it printed for, a request
        before its answer, then transactions, orders, settlements). The timeouts settleguard inferred
        itself (source ``settleguard``) are left out: a replay infers them again."""
        where = "received >= ? AND received < ?" + (" AND source = ?" if source is not None else "")
        args: list[Any] = [utc_text(since), utc_text(until)] + ([source] if source is not None else [])
        mine = " AND json_extract(data, '$.source') <> 'settleguard'"
        tables = (("receipts", 0, ""), ("ecr_requests", 1, mine), ("sightings", 2, ""), ("orders", 3, ""),
                  ("settlements", 4, ""))
        parts = [f"SELECT received, {rank} AS rank, id, source, data FROM {table} WHERE {where}{extra}"
                 for table, rank, extra in tables]
        rows = self.conn.execute(" UNION ALL ".join(parts) + " ORDER BY received, rank, id",
                                 args * len(tables)).fetchall()
        return [(from_utc_text(r[0]), str(r[3]), str(r[4])) for r in rows]

    def schema_version(self) -> int:
        """The journal's schema: older than SCHEMA_VERSION until the daemon upgrades it."""
        return user_version(self.conn)

    def meta_value(self, k: str) -> str | None:
        row = self.conn.execute("SELECT v FROM meta WHERE k=?", (k,)).fetchone()
        return str(row[0]) if row else None

    # -- alerts ------------------------------------------------------------------------------
    def alerts_with_code(self, code: str, *, states: Collection[str] | None = None) -> list[tuple[str, str, str]]:
        """(id, code, state) of the alerts carrying this short code, newest first (``states``: only those)."""
        where, args = "WHERE code = ?", [code]
        if states is not None:
            where += f" AND state IN ({','.join('?' for _ in states)})"
            args += list(states)
        rows = self.conn.execute(f"SELECT id, code, state FROM alerts {where} ORDER BY created DESC, rowid DESC",
                                 args).fetchall()
        return [(str(r[0]), str(r[1]), str(r[2])) for r in rows]

    def alerts_starting(self, text: str, *, limit: int = 20) -> tuple[list[tuple[str, str, str]], int]:
        """(up to ``limit`` (id, code, state), how many in all) whose id or short code starts with ``text``.

        Compared literally (``substr``, not ``LIKE``): ``%`` and ``_`` are characters, so a prefix can only
        ever name alerts that really begin with it. Newest first.
        """
        where = "WHERE substr(id, 1, ?) = ? OR substr(code, 1, ?) = ?"
        args = (len(text), text, len(text), text)
        total = int(self.conn.execute(f"SELECT COUNT(*) FROM alerts {where}", args).fetchone()[0])
        rows = self.conn.execute(f"SELECT id, code, state FROM alerts {where} ORDER BY created DESC, rowid DESC"
                                 " LIMIT ?", (*args, limit)).fetchall()
        return [(str(r[0]), str(r[1] or ""), str(r[2])) for r in rows], total

    def alert_data(self, alert_id: str) -> dict[str, Any] | None:
        """One alert's JSON (ARCHITECTURE.md "Alert JSON") by its exact id."""
        row = self.conn.execute("SELECT data FROM alerts WHERE id=?", (alert_id,)).fetchone()
        return dict(json.loads(row[0])) if row else None

    def alerts_data(self, states: Collection[str], *, updated_since: datetime | None = None,
                    limit: int = 200) -> list[dict[str, Any]]:
        """The JSON of alerts in ``states`` (changed since ``updated_since``), the most recently changed first."""
        if not states:
            return []
        where = f"state IN ({','.join('?' * len(states))})"
        args: list[Any] = list(states)
        if updated_since is not None:
            where += " AND updated>=?"
            args.append(utc_text(updated_since))
        rows = self.conn.execute(f"SELECT data FROM alerts WHERE {where} ORDER BY updated DESC, rowid DESC LIMIT ?",
                                 (*args, limit)).fetchall()
        return [dict(json.loads(r[0])) for r in rows]

    def alert_history(self, alert_id: str) -> list[dict[str, Any]]:
        """Every revision's row in the alert log (state, when, who, note), oldest first."""
        rows = self.conn.execute("SELECT revision, state, at, actor, note FROM alert_log WHERE alert_id=?"
                                 " ORDER BY id", (alert_id,)).fetchall()
        return [{**dict(r), "at": from_utc_text(r["at"])} for r in rows]

    def last_batch_close(self) -> datetime | None:
        """When a batch was last closed (settled, or the cutoff passed)."""
        row = self.conn.execute("SELECT MAX(closed) FROM batches").fetchone()
        return from_utc_text(row[0]) if row and row[0] else None

    def alert_counts(self) -> dict[tuple[str, str], int]:
        """(rule, state) -> number of alerts."""
        rows = self.conn.execute("SELECT rule, state, COUNT(*) FROM alerts GROUP BY rule, state").fetchall()
        return {(str(r[0]), str(r[1])): int(r[2]) for r in rows}

    # -- quarantine --------------------------------------------------------------------------
    def quarantine_total(self) -> int:
        """Inputs ever quarantined (the table keeps only the newest rows)."""
        row = self.conn.execute("SELECT v FROM meta WHERE k='quarantine_total'").fetchone()
        return int(row[0]) if row else 0

    def quarantined(self, limit: int = 20) -> list[dict[str, Any]]:
        """The newest quarantined inputs, newest first: received (UTC), source, stage, reason, raw."""
        if not self._has_table("quarantine"):
            return []  # a journal the daemon has not migrated yet (doctor reads it read-only)
        rows = self.conn.execute("SELECT id, received, source, stage, reason, raw FROM quarantine"
                                 " ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        return [{**dict(r), "received": from_utc_text(r["received"])} for r in rows]

    def _has_table(self, name: str) -> bool:
        return self.conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?",
                                 (name,)).fetchone() is not None

    # -- outbox ------------------------------------------------------------------------------
    def outbox_stats(self, now: datetime) -> dict[str, Any]:
        """Messages by delivery state; ``pending`` includes those being sent right now."""
        counts = dict(self.conn.execute("SELECT state, COUNT(*) FROM outbox GROUP BY state").fetchall())
        oldest = self.conn.execute("SELECT MIN(created) FROM outbox WHERE state IN ('pending','sending')").fetchone()
        age = (now - from_utc_text(oldest[0])).total_seconds() if oldest and oldest[0] else 0.0
        return {"pending": counts.get("pending", 0) + counts.get("sending", 0), "sent": counts.get("sent", 0),
                "dead": counts.get("dead", 0), "rerouted": counts.get("rerouted", 0),
                "superseded": counts.get("superseded", 0), "oldest_pending_seconds": max(age, 0.0)}

    def outbox_due(self, now: datetime) -> tuple[int, int]:
        """(messages due now and not yet sent, messages held for later: quiet hours, a retry's wait)."""
        row = self.conn.execute("SELECT SUM(next_at <= ?), SUM(next_at > ?) FROM outbox WHERE state IN"
                                " ('pending','sending')", (utc_text(now), utc_text(now))).fetchone()
        return int(row[0] or 0), int(row[1] or 0)

    def failing_channels(self) -> list[dict[str, Any]]:
        """Per channel with messages still waiting after failed tries: how many, the most tries, the newest
        error. A channel locked out (a wrong password, a revoked token) retries for ever and never makes dead
        letters: this is where it shows."""
        rows = self.conn.execute(
            "SELECT channel, COUNT(*) AS waiting, MAX(attempts) AS attempts,"
            " (SELECT o2.last_error FROM outbox o2 WHERE o2.channel = o.channel AND o2.state IN ('pending','sending')"
            "  AND o2.last_error IS NOT NULL ORDER BY o2.updated DESC LIMIT 1) AS last_error"
            " FROM outbox o WHERE state IN ('pending','sending') AND attempts > 0 AND last_error IS NOT NULL"
            " GROUP BY channel ORDER BY channel").fetchall()
        return [dict(r) for r in rows]

    def dead_letters(self, limit: int | None = 50, *, oldest_first: bool = False) -> list[dict[str, Any]]:
        """Messages no channel will ever deliver, newest first unless ``oldest_first``; all when no limit."""
        order = "ASC" if oldest_first else "DESC"
        rows = self.conn.execute(
            "SELECT id, channel, message_id, kind, alert_id, last_error, updated FROM outbox WHERE state='dead'"
            f" ORDER BY id {order} LIMIT ?", (-1 if limit is None else limit,)).fetchall()
        return [dict(r) for r in rows]

    def messages_for_alert(self, alert_id: str) -> list[dict[str, Any]]:
        """Every outbox row written for one alert, in the order written, on every channel."""
        rows = self.conn.execute(
            "SELECT channel, kind, state, attempts, created, updated, last_error FROM outbox WHERE alert_id=?"
            " ORDER BY id", (alert_id,)).fetchall()
        return [dict(r) for r in rows]

    def outbox_rows(self, channel: str) -> list[dict[str, Any]]:
        """Every row ever written for ``channel``, in the order written: what a channel was asked to carry
        and from when (``next_at`` is the not-before of a held row until it is tried)."""
        rows = self.conn.execute(
            "SELECT message_id, kind, alert_id, revision, payload, state, created, next_at FROM outbox"
            " WHERE channel=? ORDER BY id", (channel,)).fetchall()
        return [dict(r) for r in rows]

    def outbox_counts_by_channel(self) -> dict[str, int]:
        """Messages ever written per channel, whatever became of them."""
        rows = self.conn.execute("SELECT channel, COUNT(*) FROM outbox GROUP BY channel").fetchall()
        return {str(r[0]): int(r[1]) for r in rows}


def open_read_only(path: Path | str) -> JournalReader:
    """A reader on its own read-only connection; raises :class:`StoreError` if the file cannot be opened."""
    return JournalReader(connect_read_only(path))
