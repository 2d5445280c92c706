"""The single consumer: journal + rules + alert lifecycle, on an injected clock.

Reader threads put :class:`EventBatch` items on one queue; scheduler jobs and
the CLI put :class:`Command` items on the same queue. One thread runs
:meth:`Pipeline.run`, owns the SQLite connection, and commits each drained
batch in one transaction: a transaction, the alert it raised and the outbox
rows announcing it become durable together or not at all.
"""

from __future__ import annotations

import logging
import queue
import threading
import time as _time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from agent.config import LoadedConfig
from agent.journal import Journal, StoredTxn
from agent.model import (
    RETURNING_KINDS,
    Alert,
    Event,
    ReceiptText,
    Settlement,
    Transaction,
    identity_key,
    new_ulid,
)
from agent.remedy import check_suggestion, next_cutoff, void_suggestion
from agent.rules.base import Finding, Observation, TxnView
from agent.rules.engine import RuleEngine

log = logging.getLogger("settleguard.pipeline")

Clock = Callable[[], datetime]


@dataclass(frozen=True, slots=True)
class EventBatch:
    """The events one decoder call produced, in order (a receipt followed by its transaction)."""

    source: str
    events: tuple[Event, ...]
    received: datetime


@dataclass(slots=True)
class Command:
    name: str
    args: dict[str, Any] = field(default_factory=dict)
    reply: queue.Queue[Any] | None = None


STOP = Command("stop")


@dataclass(frozen=True, slots=True)
class AlertChange:
    """Handed to listeners after commit (demo console, replay printer, metrics)."""

    alert: Alert
    notice: str          # opened | voided | dismissed | escalated | expired | updated


class Pipeline:
    def __init__(self, loaded: LoadedConfig, journal: Journal, *, clock: Clock,
                 channels: Sequence[str] = (), listeners: Sequence[Callable[[AlertChange], None]] = (),
                 on_commit: Callable[[], None] | None = None) -> None:
        self.loaded = loaded
        self.config = loaded.config
        self.tz = loaded.tz
        self.journal = journal
        self.clock = clock
        self.channels = list(channels)
        self.listeners = list(listeners)
        self.on_commit = on_commit
        self.engine = RuleEngine(self.tz, loaded.rule_params, history=_JournalHistory(journal, self.tz))
        self.cutoff = self.config.settlement.cutoff_time
        self._last_txn: dict[str, tuple[int, datetime]] = {}   # source -> (txn id, received) for late receipts
        self._changes: list[AlertChange] = []
        self._enqueued = 0
        self.counts = {"events": 0, "transactions": 0, "new_transactions": 0, "reprints": 0, "settlements": 0,
                       "receipts": 0, "alerts_opened": 0, "alerts_resolved": 0}
        self.last_progress = _time.monotonic()
        self._warm_state()

    # -- the thread ---------------------------------------------------------------------
    def run(self, inbox: queue.Queue[EventBatch | Command], stop: threading.Event | None = None,
            *, idle: float = 0.5, max_batch: int = 500) -> None:
        while stop is None or not stop.is_set():
            try:
                first = inbox.get(timeout=idle)
            except queue.Empty:
                self.last_progress = _time.monotonic()
                self.tick()
                continue
            items = [first]
            while len(items) < max_batch:
                try:
                    items.append(inbox.get_nowait())
                except queue.Empty:
                    break
            stopping = any(isinstance(i, Command) and i.name == "stop" for i in items)
            self.process(items)
            self.last_progress = _time.monotonic()
            if stopping:
                return

    def process(self, items: Sequence[EventBatch | Command]) -> None:
        """Handle items in one journal transaction, then tell delivery and listeners."""
        replies: list[tuple[queue.Queue[Any], Any]] = []
        with self.journal.transaction():
            for item in items:
                if isinstance(item, EventBatch):
                    self._handle_batch(item)
                elif item.name != "stop":
                    result = self._handle_command(item)
                    if item.reply is not None:
                        replies.append((item.reply, result))
        changes, self._changes = self._changes, []
        if self._enqueued and self.on_commit:
            self.on_commit()
        self._enqueued = 0
        for change in changes:
            for listener in self.listeners:
                try:
                    listener(change)
                except Exception:  # a broken display must not stop the pipeline
                    log.exception("alert listener failed")
        for reply, result in replies:
            reply.put(result)

    def tick(self) -> None:
        self.engine.prune(self.clock())

    # -- events ----------------------------------------------------------------------------
    def _handle_batch(self, batch: EventBatch) -> None:
        pending_receipt: ReceiptText | None = None
        for event in batch.events:
            self.counts["events"] += 1
            if isinstance(event, ReceiptText):
                if pending_receipt is not None:
                    self._store_receipt(pending_receipt, batch, None)
                pending_receipt = event
            elif isinstance(event, Transaction):
                txn_id = self._handle_transaction(event, batch)
                if pending_receipt is not None:
                    self._store_receipt(pending_receipt, batch, txn_id)
                    pending_receipt = None
            elif isinstance(event, Settlement):
                self._handle_settlement(event, batch)
        if pending_receipt is not None:
            # Terminals print after the status message: attach to the source's last transaction.
            last = self._last_txn.get(batch.source)
            near = last if last and batch.received - last[1] <= timedelta(minutes=2) else None
            self._store_receipt(pending_receipt, batch, near[0] if near else None)

    def _store_receipt(self, receipt: ReceiptText, batch: EventBatch, txn_id: int | None) -> None:
        self.counts["receipts"] += 1
        self.journal.add_receipt(txn_id=txn_id, source=batch.source, received=batch.received,
                                 terminal_id=receipt.terminal_id, data=receipt.to_dict())

    def _handle_transaction(self, txn: Transaction, batch: EventBatch) -> int:
        self.counts["transactions"] += 1
        instant = (txn.time or batch.received).astimezone(UTC)
        key = identity_key(txn) or f"u:{batch.source}:{instant.isoformat()}:{txn.amount_minor}:{new_ulid()}"
        merged = self.journal.merge_transaction(txn, key=key, instant=instant, received=batch.received,
                                                source=batch.source)
        stored = merged.stored
        self._last_txn[batch.source] = (stored.id, batch.received)
        view = self._view(stored)
        if merged.is_new:
            self.counts["new_transactions"] += 1
        elif merged.reprint:
            self.counts["reprints"] += 1
        obs = Observation(view=view, is_new=merged.is_new, conflicts=merged.conflicts, reprint=merged.reprint)
        now = self.clock()
        findings = self.engine.evaluate(obs, now)
        if merged.is_new:
            self.engine.observe(view)
        for finding in findings:
            self._open_alert(finding, now)
        if merged.is_new and txn.kind in RETURNING_KINDS and txn.result == "approved":
            self._resolve_by_void(txn, now)
        return stored.id

    def _view(self, stored: StoredTxn) -> TxnView:
        instant = (stored.txn.time or stored.first_seen).astimezone(UTC)
        return TxnView(key=stored.key, txn=stored.txn, utc=instant, local=instant.astimezone(self.tz))

    def _handle_settlement(self, settlement: Settlement, batch: EventBatch) -> None:
        self.counts["settlements"] += 1
        self.journal.add_settlement(settlement, received=batch.received, source=batch.source)

    # -- alerts -----------------------------------------------------------------------------
    def _open_alert(self, finding: Finding, now: datetime) -> None:
        subject = finding.subject
        if self.journal.alert_for(finding.rule, subject.key) is not None:
            return  # the same finding is never a second alert
        deadline = next_cutoff(subject.utc, self.cutoff, self.tz)
        if finding.action == "void":
            suggestion = void_suggestion(subject.txn, deadline=deadline, tz=self.tz)
        else:
            suggestion = check_suggestion(subject.txn, deadline=deadline, tz=self.tz)
        alert = Alert(
            id=new_ulid(now), revision=1, rule=finding.rule, rule_version=finding.version,
            severity=finding.severity, state="open", reason=finding.reason_en, reason_zh=finding.reason_zh,
            evidence=finding.evidence, transactions=tuple(v.txn for v in (*finding.related, subject)),
            suggestion=suggestion, created=now, updated=now, key=subject.key,
        )
        self.journal.save_alert(alert, actor="settleguard")
        self._announce(alert, "opened", now)
        self.counts["alerts_opened"] += 1

    def _resolve_by_void(self, txn: Transaction, now: datetime) -> None:
        for alert in self.journal.active_alerts_referencing(txn.terminal_id, txn.original_voucher_no,
                                                            txn.original_rrn):
            self._transition(alert, "voided", now, actor="terminal",
                             note=f"{txn.kind} {txn.voucher_no or txn.receipt_no or txn.trace_no or ''}".strip())

    def _transition(self, alert: Alert, state: str, now: datetime, *, actor: str, note: str | None) -> Alert:
        changed = Alert(**{**{s: getattr(alert, s) for s in Alert.__slots__},  # type: ignore[attr-defined]
                           "state": state, "revision": alert.revision + 1, "updated": now})
        self.journal.save_alert(changed, actor=actor, note=note)
        self._announce(changed, state, now)
        if state in ("voided", "dismissed"):
            self.counts["alerts_resolved"] += 1
        return changed

    def _announce(self, alert: Alert, notice: str, now: datetime) -> None:
        payload = {"notice": notice, "alert": alert.to_dict()}
        deadline = alert.suggestion.deadline if alert.suggestion else None
        for channel in self.channels:
            self.journal.enqueue(message_id=f"{alert.id}.{alert.revision}", channel=channel, kind=notice,
                                 alert_id=alert.id, revision=alert.revision, payload=payload, now=now,
                                 deadline=deadline)
            self._enqueued += 1
        self._changes.append(AlertChange(alert, notice))

    # -- commands ----------------------------------------------------------------------------
    def _handle_command(self, cmd: Command) -> Any:
        now = self.clock()
        if cmd.name == "ack":
            alert = self.journal.get_alert(cmd.args["id"])
            if alert is None:
                return {"ok": False, "error": f"no alert {cmd.args['id']}"}
            if alert.state not in ("open", "escalated"):
                return {"ok": False, "error": f"alert {alert.id} is already {alert.state}"}
            state = "voided" if cmd.args.get("voided") else "dismissed"
            by = cmd.args.get("by") or "staff"
            changed = self._transition(alert, state, now, actor=by, note=cmd.args.get("note"))
            return {"ok": True, "alert": changed.to_dict()}
        if cmd.name == "tick":
            self.tick()
            return {"ok": True}
        return {"ok": False, "error": f"unknown command {cmd.name}"}

    # -- start-up ----------------------------------------------------------------------------
    def _warm_state(self) -> None:
        """Reload the rules' short-term memory from the journal after a restart."""
        now = self.clock()
        for stored in self.journal.recent_transactions(now - self.engine.state.horizon):
            self.engine.observe(self._view(stored))


class _JournalHistory:
    """The journal answering the rules' long look-backs."""

    def __init__(self, journal: Journal, tz: Any) -> None:
        self.journal = journal
        self.tz = tz

    def sales_for_card(self, card: str, since: datetime, until: datetime) -> list[TxnView]:
        out = []
        for s in self.journal.sales_for_card(card, since, until):
            instant = (s.txn.time or s.first_seen).astimezone(UTC)
            out.append(TxnView(key=s.key, txn=s.txn, utc=instant, local=instant.astimezone(self.tz)))
        return out
