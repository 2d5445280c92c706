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
import sqlite3
import threading
import time as _time
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from agent.alerts.remedy import check_suggestion, next_cutoff, refund_suggestion, void_suggestion
from agent.config import LoadedConfig
from agent.messages import AlertChange, BatchClosed, Command, EventBatch, ReviewNotice
from agent.model import (
    RETURNING_KINDS,
    Alert,
    ReceiptText,
    Settlement,
    Transaction,
    identity_key,
    new_ulid,
)
from agent.rules.base import Finding, Observation, TxnView
from agent.rules.engine import RuleEngine
from agent.store.journal import Journal, StoredTxn

log = logging.getLogger("settleguard.pipeline")

Clock = Callable[[], datetime]
PRUNE_EVERY = timedelta(minutes=1)


class Pipeline:
    def __init__(self, loaded: LoadedConfig, journal: Journal, *, clock: Clock,
                 channels: Sequence[str] = (), listeners: Sequence[Callable[[Any], None]] = (),
                 on_commit: Callable[[], None] | None = None, people_channels: Sequence[str] | None = None,
                 evidence_dir: Path | None = None, event_clock: bool = False) -> None:
        self.loaded = loaded
        self.config = loaded.config
        self.tz = loaded.tz
        self.journal = journal
        self.clock = clock
        self.channels = list(channels)
        # Channels people read get reviews and reminders; machine webhooks get alert revisions only.
        self.people_channels = list(people_channels) if people_channels is not None else list(channels)
        self.evidence_dir = evidence_dir
        # Replay runs on the events' own time: "now" is the receive time of the batch being handled.
        self.event_clock = event_clock
        self._event_now: datetime | None = None
        self.journal_error: str | None = None  # set while the journal cannot be written (shown in status)
        self._last_prune: tuple[datetime, datetime] | None = None  # (clock, newest transaction) at the last prune
        self._newest_event: datetime | None = None
        self.listeners = list(listeners)
        self.on_commit = on_commit
        self.engine = RuleEngine(self.tz, loaded.rule_params, history=_JournalHistory(journal, self.tz),
                                 hours=loaded.hours)
        for warning in self.engine.warnings(self.now()):
            log.warning("%s", warning)
        self.cutoff = self.config.settlement.cutoff_time
        self._last_txn: dict[str, tuple[int, datetime]] = {}   # source -> (txn id, received) for late receipts
        self._changes: list[Any] = []
        self._enqueued = 0
        self.counts = {"events": 0, "transactions": 0, "new_transactions": 0, "reprints": 0, "settlements": 0,
                       "receipts": 0, "alerts_opened": 0, "alerts_resolved": 0, "alerts_escalated": 0,
                       "reviews": 0, "batches_closed": 0}
        self.last_progress = _time.monotonic()
        self._warm_state()

    def now(self) -> datetime:
        if self._event_now is not None:
            return self._event_now
        return self.clock()

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
            if not self._process_durably(items, stop):
                return
            self.last_progress = _time.monotonic()
            if stopping:
                return

    def _process_durably(self, items: Sequence[EventBatch | Command], stop: threading.Event | None) -> bool:
        """Process, and when the journal cannot be written (disk full, I/O error) hold the items and retry.

        The transaction rolled back whole, so retrying the same items later is exact. Readers keep
        queueing meanwhile; the pipeline keeps reporting progress on purpose: a restart cannot free disk
        space, and a restart loop would lose the queue. Returns False when asked to stop while waiting.
        """
        delay = 1.0
        while True:
            counts = dict(self.counts)
            try:
                self.process(items)
            except sqlite3.Error as exc:
                self.counts = counts
                self._changes, self._enqueued = [], 0
                if self.journal_error is None:
                    log.error("cannot write the journal %s: %s; holding events in memory and retrying —"
                              " free space on that filesystem", self.journal.path, exc)
                self.journal_error = f"{type(exc).__name__}: {exc}"
                # Rule memory may hold what was just rolled back: rebuild it from what is durable.
                self._rebuild_rules()
                self.last_progress = _time.monotonic()
                if stop is not None and stop.wait(delay):
                    return False
                if stop is None:
                    _time.sleep(delay)
                delay = min(delay * 2, 30.0)
                continue
            if self.journal_error is not None:
                log.warning("the journal is writable again; held events written")
                self.journal_error = None
            return True

    def _rebuild_rules(self) -> None:
        try:
            self.engine = RuleEngine(self.tz, self.loaded.rule_params, history=_JournalHistory(self.journal, self.tz),
                                     hours=self.loaded.hours)
            self._warm_state()
        except sqlite3.Error:
            pass  # reading may fail too while the disk is sick; the next attempt rebuilds again

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
        self._prune_if_due()
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
        self._last_prune = None
        self._prune_if_due()

    def _prune_if_due(self) -> None:
        """A busy till (or a replay) is never idle: forget what left the rules' horizon as time moves on.

        Due when a minute has passed on the clock or in the transactions' own time (a backlog being
        caught up moves through hours of transactions in seconds); measured against the newer of the
        two, so a terminal clock running ahead cannot make the rules' memory grow without bound.
        """
        clock_now = self.now()
        newest = self._newest_event or clock_now
        last_clock, last_event = self._last_prune or (None, None)
        if (last_clock is not None and last_event is not None and clock_now - last_clock < PRUNE_EVERY
                and newest - last_event < PRUNE_EVERY):
            return
        self.engine.prune(max(clock_now, newest))
        self._last_prune = (clock_now, newest)

    # -- events ----------------------------------------------------------------------------
    def _handle_batch(self, batch: EventBatch) -> None:
        if self.event_clock:
            self._event_now = batch.received
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
        now = self.now()
        instant = (txn.time or batch.received).astimezone(UTC)
        key = identity_key(txn) or f"u:{batch.source}:{instant.isoformat()}:{txn.amount_minor}:{new_ulid()}"
        merged = self.journal.merge_transaction(txn, key=key, instant=instant, received=batch.received,
                                                source=batch.source)
        stored = merged.stored
        self._last_txn[batch.source] = (stored.id, batch.received)
        if merged.is_new and txn.terminal_id and txn.batch_no:
            self.journal.open_batch(txn.terminal_id, txn.batch_no, now)
        view = self._view(stored)
        # Capped at a day ahead of the clock, as decoders cap terminal timestamps: one absurd time
        # (a JSON integration sending year 2099) must not flush the rules' memory.
        newest = min(view.utc, now + timedelta(days=1))
        if self._newest_event is None or newest > self._newest_event:
            self._newest_event = newest
        if merged.is_new:
            self.counts["new_transactions"] += 1
        elif merged.reprint:
            self.counts["reprints"] += 1
        obs = Observation(view=view, is_new=merged.is_new, conflicts=merged.conflicts, reprint=merged.reprint,
                          sighting=txn)
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
        self._close_batch(settlement.terminal_id, settlement.batch_no, self.now(), "settlement")

    def _close_batch(self, terminal_id: str | None, batch_no: str | None, now: datetime, reason: str) -> None:
        """The batch settled: a void is no longer possible, so open findings turn into refund guidance."""
        closed = self.journal.close_batches(terminal_id, batch_no, now)
        self.counts["batches_closed"] += len(closed)
        for alert in self.journal.alerts_in_batch(terminal_id, batch_no):
            if alert.suggestion is not None and alert.suggestion.action == "void":
                self._escalate(alert, now)
            else:
                self._transition(alert, "expired", now, actor="settleguard",
                                 note=f"batch closed ({reason}) before anyone checked it")
        self._changes.append(BatchClosed(now, terminal_id, batch_no, reason))

    def _escalate(self, alert: Alert, now: datetime) -> None:
        subject = alert.transactions[-1]
        bundle = self._write_evidence(alert, now)
        suggestion = refund_suggestion(subject, settled_at=now, tz=self.tz,
                                       evidence_path=str(bundle) if bundle else None)
        escalated = self._transition(alert, "escalated", now, actor="settleguard",
                                     note="batch settled with the finding open", suggestion=suggestion,
                                     evidence_bundle=str(bundle) if bundle else None)
        self.counts["alerts_escalated"] += 1
        if bundle is not None:
            # The bundle records the escalation message too; rewrite it now that the revision exists.
            self._write_evidence(escalated, now, path=bundle)

    def _write_evidence(self, alert: Alert, now: datetime, path: Path | None = None) -> Path | None:
        """Everything a refund dispute needs, as files a person can open (evidence/<date>-<id>/)."""
        if self.evidence_dir is None:
            return None
        from agent.alerts.evidence import write_bundle

        return write_bundle(self.journal, alert, now=now, tz=self.tz, root=self.evidence_dir, path=path)

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
        """A void, reversal or refund that points at a flagged transaction settles the finding."""
        for alert in self.journal.active_alerts_referencing(txn.terminal_id, txn.original_voucher_no,
                                                            txn.original_rrn):
            if txn.kind == "void" and alert.state == "escalated":
                continue  # a void cannot happen after settlement; this one refers to something else
            ref = txn.voucher_no or txn.receipt_no or txn.trace_no or ""
            self._transition(alert, "voided", now, actor="terminal", note=f"{txn.kind} {ref}".strip())

    def _transition(self, alert: Alert, state: str, now: datetime, *, actor: str, note: str | None,
                    suggestion: Any = None, evidence_bundle: str | None = None) -> Alert:
        changes: dict[str, Any] = {"state": state, "revision": alert.revision + 1, "updated": now}
        if suggestion is not None:
            changes["suggestion"] = suggestion
        if evidence_bundle is not None:
            changes["evidence"] = {**alert.evidence, "bundle": evidence_bundle}
        changed = replace(alert, **changes)
        self.journal.save_alert(changed, actor=actor, note=note)
        self._announce(changed, state, now)
        if state in ("voided", "dismissed"):
            self.counts["alerts_resolved"] += 1
        return changed

    def _announce(self, alert: Alert, notice: str, now: datetime, *, message_id: str | None = None,
                  channels: Sequence[str] | None = None) -> None:
        payload = {"notice": notice, "alert": alert.to_dict()}
        deadline = alert.suggestion.deadline if alert.suggestion else None
        for channel in self.channels if channels is None else channels:
            self.journal.enqueue(message_id=message_id or f"{alert.id}.{alert.revision}", channel=channel,
                                 kind=notice, alert_id=alert.id, revision=alert.revision, payload=payload,
                                 now=now, deadline=deadline)
            self._enqueued += 1
        self._changes.append(AlertChange(alert, notice, now))

    def _handle_command_tx(self, cmd: Command) -> Any:
        """Run one command in its own journal transaction (the CLI's offline path)."""
        with self.journal.transaction():
            result = self._handle_command(cmd)
        self._changes = []
        return result

    # -- commands ----------------------------------------------------------------------------
    def _handle_command(self, cmd: Command) -> Any:
        if self.event_clock and "at" in cmd.args:
            self._event_now = cmd.args.pop("at")
        now = self.now()
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
        if cmd.name == "review":
            return self._review(now)
        if cmd.name == "cutoff":
            self._close_batch(None, None, now, "cutoff")
            return {"ok": True}
        if cmd.name == "reminders":
            return self._reminders(now)
        if cmd.name == "baseline":
            return self._refresh_baseline(now)
        if cmd.name == "reconfigure":
            return self._reconfigure(cmd.args["loaded"], cmd.args.get("channels"), cmd.args.get("people_channels"))
        return {"ok": False, "error": f"unknown command {cmd.name}"}

    def _reconfigure(self, loaded: LoadedConfig, channels: Sequence[str] | None,
                     people_channels: Sequence[str] | None) -> dict[str, Any]:
        """A reloaded, already validated configuration: new rules, hours, cutoff and channel names.

        The rules' short-term memory is rebuilt from the journal rather than carried over, because
        a changed window or threshold changes what that memory must hold.
        """
        self.loaded, self.config, self.tz = loaded, loaded.config, loaded.tz
        self.engine = RuleEngine(self.tz, loaded.rule_params, history=_JournalHistory(self.journal, self.tz),
                                 hours=loaded.hours)
        self.cutoff = self.config.settlement.cutoff_time
        if channels is not None:
            self.channels = list(channels)
        if people_channels is not None:
            self.people_channels = list(people_channels)
        self._warm_state()
        warnings = self.engine.warnings(self.now())
        for warning in warnings:
            log.warning("%s", warning)
        return {"ok": True, "warnings": warnings}

    def _review(self, now: datetime) -> dict[str, Any]:
        """One message listing every open finding with its void steps and the time left."""
        alerts = tuple(self.journal.alerts(states=("open",)))
        deadline = next_cutoff(now, self.cutoff, self.tz)
        self.journal.set_meta("last_review", now.isoformat())
        self.counts["reviews"] += 1
        if not alerts and not self.config.settlement.all_clear:
            return {"ok": True, "open": 0}
        kind = "review" if alerts else "all_clear"
        payload = {"notice": kind, "alerts": [a.to_dict() for a in alerts]}
        for channel in self.people_channels:
            self.journal.enqueue(message_id=f"{kind}.{now.strftime('%Y%m%dT%H%M%S')}", channel=channel, kind=kind,
                                 alert_id=None, revision=None, payload=payload, now=now, deadline=deadline)
            self._enqueued += 1
        for a in alerts:
            self.journal.touch_alert(a.id, now)
        self._changes.append(ReviewNotice(now, alerts, deadline))
        return {"ok": True, "open": len(alerts)}

    def _reminders(self, now: datetime) -> dict[str, Any]:
        """Unacknowledged findings repeat at a long interval; escalated ones every few days."""
        if not self.people_channels:
            return {"ok": True, "reminded": 0}  # machines got every revision already; reminders are for people
        d = self.config.delivery
        due = self.journal.alerts_due_reminder(
            open_before=now - d.repeat_interval,
            escalated_before=now - timedelta(days=self.config.settlement.follow_up_days))
        for alert in due:
            self.journal.touch_alert(alert.id, now)
            self._announce(alert, "reminder", now, channels=self.people_channels,
                           message_id=f"{alert.id}.{alert.revision}.reminder.{now.strftime('%Y%m%dT%H%M')}")
        return {"ok": True, "reminded": len(due)}

    def _refresh_baseline(self, now: datetime) -> dict[str, Any]:
        window = self.engine.baseline_window
        amounts = self.journal.approved_sale_amounts(now - window, now)
        baseline = self.engine.refresh_baseline(amounts, now)
        return {"ok": True, "amounts": len(amounts), "ready": baseline is not None}

    # -- start-up ----------------------------------------------------------------------------
    def _warm_state(self) -> None:
        """Reload the rules' short-term memory from the journal after a restart."""
        now = self.now()
        for stored in self.journal.recent_transactions(now - self.engine.state.horizon):
            self.engine.observe(self._view(stored))
        self._refresh_baseline(now)


class _JournalHistory:
    """The journal answering the rules' long look-backs."""

    def __init__(self, journal: Journal, tz: Any) -> None:
        self.journal = journal
        self.tz = tz

    def earliest(self) -> datetime | None:
        return self.journal.earliest_transaction()

    def sales_for_card(self, card: str, since: datetime, until: datetime) -> list[TxnView]:
        out = []
        for s in self.journal.sales_for_card(card, since, until):
            instant = (s.txn.time or s.first_seen).astimezone(UTC)
            out.append(TxnView(key=s.key, txn=s.txn, utc=instant, local=instant.astimezone(self.tz)))
        return out
