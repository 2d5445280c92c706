"""The durable outbox: rows written with the alert, drained by the delivery thread.

States: ``pending`` -> ``sending`` -> ``sent``; failures go back to
``pending`` with a later ``next_at`` (full-jitter backoff), or to ``dead``
(permanent: bad key, bad signature, 4xx). Two more end states keep the
history readable: ``rerouted`` (the deadline passed; the message now belongs
to a later channel) and ``superseded`` (a people-channel announcement or
reminder whose alert has a newer revision by the time it is due). Rows are
never deleted. The delivery thread owns its own connection, writes only the
outbox, and reads the alerts table only to learn an alert's current revision.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from agent.store.queries import JournalReader
from agent.store.schema import connect, from_utc_text, migrate, utc_text
from agent.store.turns import WriterTurns, taking


def insert_message(conn: sqlite3.Connection, *, message_id: str, channel: str, kind: str, alert_id: str | None,
                   revision: int | None, payload: dict[str, Any], next_at: datetime, deadline: datetime | None,
                   created: datetime, updated: datetime) -> None:
    """The one way a message enters the outbox; a channel that already holds ``message_id`` keeps its row."""
    conn.execute(
        "INSERT OR IGNORE INTO outbox(message_id, channel, kind, alert_id, revision, payload, state,"
        " attempts, next_at, deadline, created, updated) VALUES(?,?,?,?,?,?,'pending',0,?,?,?,?)",
        (message_id, channel, kind, alert_id, revision, json.dumps(payload, ensure_ascii=False),
         utc_text(next_at), utc_text(deadline) if deadline else None, utc_text(created), utc_text(updated)),
    )


@dataclass(frozen=True, slots=True)
class OutboxRow:
    id: int
    message_id: str
    channel: str
    kind: str
    alert_id: str | None
    revision: int | None
    payload: dict[str, Any]
    attempts: int
    created: datetime
    next_at: datetime
    deadline: datetime | None

    @classmethod
    def from_row(cls, r: sqlite3.Row) -> OutboxRow:
        return cls(id=r["id"], message_id=r["message_id"], channel=r["channel"], kind=r["kind"],
                   alert_id=r["alert_id"], revision=r["revision"], payload=json.loads(r["payload"]),
                   attempts=r["attempts"], created=from_utc_text(r["created"]), next_at=from_utc_text(r["next_at"]),
                   deadline=from_utc_text(r["deadline"]) if r["deadline"] else None)


class Outbox(JournalReader):
    """Opened by the delivery thread on its own connection."""

    def __init__(self, path: Path | str, *, turns: WriterTurns | None = None) -> None:
        """``turns``: shared with the daemon's journal, so a busy pipeline cannot starve these writes
        (agent/store/turns.py)."""
        super().__init__(connect(path))
        migrate(self.conn)
        self._turns = turns

    def recover(self) -> int:
        """After a crash, rows caught in 'sending' may or may not have arrived: send again (at least once)."""
        with taking(self._turns):
            cur = self.conn.execute("UPDATE outbox SET state='pending' WHERE state='sending'")
        return cur.rowcount

    def due(self, now: datetime, *, channel: str | None = None, limit: int = 100) -> list[OutboxRow]:
        sql = "SELECT * FROM outbox WHERE state='pending' AND next_at<=?"
        args: list[Any] = [utc_text(now)]
        if channel is not None:
            sql += " AND channel=?"
            args.append(channel)
        sql += " ORDER BY id LIMIT ?"
        args.append(limit)
        return [OutboxRow.from_row(r) for r in self.conn.execute(sql, args).fetchall()]

    def pending(self, channel: str) -> list[OutboxRow]:
        rows = self.conn.execute("SELECT * FROM outbox WHERE state='pending' AND channel=? ORDER BY id",
                                 (channel,)).fetchall()
        return [OutboxRow.from_row(r) for r in rows]

    def next_due(self) -> datetime | None:
        row = self.conn.execute("SELECT MIN(next_at) FROM outbox WHERE state='pending'").fetchone()
        return from_utc_text(row[0]) if row and row[0] else None

    def _set(self, ids: list[int], sql: str, args: tuple[Any, ...]) -> None:
        if not ids:
            return
        marks = ",".join("?" for _ in ids)
        with taking(self._turns):
            self.conn.execute(f"UPDATE outbox SET {sql} WHERE id IN ({marks})", (*args, *ids))

    def claim(self, ids: list[int], now: datetime) -> None:
        self._set(ids, "state='sending', attempts=attempts+1, updated=?", (utc_text(now),))

    def mark_sent(self, ids: list[int], now: datetime) -> None:
        self._set(ids, "state='sent', updated=?, last_error=NULL", (utc_text(now),))

    def mark_retry(self, ids: list[int], now: datetime, next_at: datetime, error: str) -> None:
        self._set(ids, "state='pending', next_at=?, updated=?, last_error=?", (utc_text(next_at), utc_text(now), error))

    def mark_dead(self, ids: list[int], now: datetime, error: str) -> None:
        self._set(ids, "state='dead', updated=?, last_error=?", (utc_text(now), error))

    def mark_superseded(self, ids: list[int], now: datetime, reason: str) -> None:
        self._set(ids, "state='superseded', updated=?, last_error=?", (utc_text(now), reason))

    def alert_revisions(self, alert_ids: Iterable[str]) -> dict[str, int]:
        """The current revision of each alert (as the pipeline last committed it)."""
        ids = list(alert_ids)
        if not ids:
            return {}
        marks = ",".join("?" for _ in ids)
        rows = self.conn.execute(f"SELECT id, revision FROM alerts WHERE id IN ({marks})", ids).fetchall()
        return {r[0]: int(r[1]) for r in rows}

    def reroute(self, row: OutboxRow, channels: Sequence[str], now: datetime) -> str | None:
        """Deadline passed on this channel: hand the message to the first of ``channels`` that can still take it.

        A channel that already holds the same message (pending, sending or sent) has it in hand;
        one where it is dead cannot help. Returns the channel that took it, or None (the row stays
        here, pending: late is better than lost). One transaction, so a crash leaves either the old
        row pending or the new row pending, never neither.
        """
        with taking(self._turns):
            return self._reroute(row, channels, now)

    def _reroute(self, row: OutboxRow, channels: Sequence[str], now: datetime) -> str | None:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            taken: str | None = None
            for channel in channels:
                found = self.conn.execute("SELECT state FROM outbox WHERE channel=? AND message_id=?",
                                          (channel, row.message_id)).fetchone()
                if found is None:
                    # The deadline travels along: if this channel fails too, the next one is tried.
                    insert_message(self.conn, message_id=row.message_id, channel=channel, kind=row.kind,
                                   alert_id=row.alert_id, revision=row.revision, payload=row.payload,
                                   next_at=now, deadline=row.deadline, created=row.created, updated=now)
                    taken = channel
                    break
                if found["state"] != "dead":
                    taken = channel
                    break
            if taken is not None:
                self._set([row.id], "state='rerouted', updated=?, last_error=?",
                          (utc_text(now), f"deadline passed; handed to channel {taken}"))
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        return taken


class OutboxAsOf(Outbox):
    """The outbox as it stood at ``as_of``: what replay hands the real delivery loop to count what each
    phone would have received. Rows written later do not exist yet; an alert's revision is the one its
    log had reached. The caller wraps the run in a transaction it rolls back (nothing was sent)."""

    def __init__(self, path: Path | str, as_of: datetime) -> None:
        super().__init__(path)
        self.as_of = as_of

    def pending(self, channel: str) -> list[OutboxRow]:
        rows = self.conn.execute("SELECT * FROM outbox WHERE state='pending' AND channel=? AND created<=?"
                                 " ORDER BY id", (channel, utc_text(self.as_of))).fetchall()
        return [OutboxRow.from_row(r) for r in rows]

    def alert_revisions(self, alert_ids: Iterable[str]) -> dict[str, int]:
        ids = list(alert_ids)
        if not ids:
            return {}
        marks = ",".join("?" for _ in ids)
        rows = self.conn.execute(f"SELECT alert_id, MAX(revision) FROM alert_log WHERE alert_id IN ({marks})"
                                 " AND at<=? GROUP BY alert_id", (*ids, utc_text(self.as_of))).fetchall()
        return {r[0]: int(r[1]) for r in rows}

    def next_written(self, channels: Sequence[str]) -> datetime | None:
        """When the next row for one of ``channels`` is written after ``as_of``."""
        if not channels:
            return None
        marks = ",".join("?" for _ in channels)
        row = self.conn.execute(f"SELECT MIN(created) FROM outbox WHERE state='pending' AND channel IN ({marks})"
                                " AND created>?", (*channels, utc_text(self.as_of))).fetchone()
        return from_utc_text(row[0]) if row and row[0] else None

    def begin(self) -> None:
        self.conn.execute("BEGIN")

    def rollback(self) -> None:
        self.conn.execute("ROLLBACK")
