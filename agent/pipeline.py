"""The single consumer: journal + rules, feeding the alert book, on an injected clock.

(Over 500 lines: the per-item savepoints and the salvage of a failed batch belong beside the handlers they
guard, and the wire and terminal-clock watches are fed from the same loop.)

Reader threads put :class:`EventBatch` items on one queue; scheduler jobs and
the CLI put :class:`Command` items on the same queue. One thread runs
:meth:`Pipeline.run`, owns the SQLite connection, and commits each drained
batch in one transaction: a transaction, the alert it raised and the outbox
rows announcing it become durable together or not at all. What happens to an
alert afterwards is the alert book's (agent/alerts/book.py) and the
lifecycle's (agent/alerts/lifecycle.py) business.
"""

from __future__ import annotations

import json
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from agent.alerts import review
from agent.alerts.announce import Announcer
from agent.alerts.book import PRINTED_SOURCE, AlertBook, has_terminal_line
from agent.alerts.budget import NoiseBudget
from agent.alerts.lifecycle import NoticeKind
from agent.alerts.remedy import RemedyBook
from agent.config import LoadedConfig, SourceConfig
from agent.delivery.events import announce_event
from agent.history import History
from agent.match import TillMatching
from agent.memory import release_freed
from agent.messages import BatchClosed, Command, EventBatch
from agent.model import (
    RETURNING_KINDS,
    Event,
    ReceiptText,
    Settlement,
    Transaction,
    identity_key,
    new_ulid,
)
from agent.rules.base import Observation, TxnView
from agent.rules.calendar import ShopCalendar
from agent.rules.engine import RuleEngine
from agent.rules.grouped_baseline import baseline_from_window
from agent.rules.state import SaleAmounts
from agent.schedule import SCHEDULED_JOBS, mark_schedule
from agent.service import heartbeat
from agent.store.journal import Journal, StoredTxn
from agent.store.lookback import LookbackRows
from agent.store.orders import OrderStore
from agent.store.sale_window import JournalSaleWindow
from agent.watch import unread
from agent.watch.terminal_clock import META_KEY as CLOCKS_KEY
from agent.watch.terminal_clock import TerminalClocks
from agent.watch.terminal_clock import describe as describe_clock
from agent.watch.wires import META_KEY as WIRES_KEY
from agent.watch.wires import WireWatch, day_lines, episode_notice
from drivers.boundary import check_event, rejected
from drivers.clock import Clock
from drivers.events import EcrRequest, Order, Rejected
from drivers.pan import scrub_text

log = logging.getLogger("settleguard.pipeline")

PRUNE_EVERY = timedelta(minutes=1)
# When the freed C heap is handed back to the OS (agent/memory.py), by work done, not by the clock (replay's
# clock is simulated): after this many events, or pruned views, or on the first idle moment after a few
# hundred events. Each hand-back costs ~1-20 ms (the more the heap holds, the longer).
TRIM_AFTER_EVENTS = 10_000
TRIM_AFTER_VIEWS = 5000
TRIM_IDLE_AFTER_EVENTS = 500
DEFAULT_SKEW = SourceConfig.model_fields["clock_skew"].default  # sources not configured (tests, replay)
# The disk-full retry backs off from the first delay to the longest, doubling.
RETRY_FIRST, RETRY_LONGEST = 1.0, 30.0


class Pipeline:
    def __init__(self, loaded: LoadedConfig, journal: Journal, *, clock: Clock,
                 channels: Sequence[str] = (), listeners: Sequence[Callable[[Any], None]] = (),
                 on_commit: Callable[[], None] | None = None, people_channels: Sequence[str] | None = None,
                 evidence_dir: Path | None = None, history: History | None = None,
                 baseline_in_memory: bool = False, rules_in_memory: bool = False) -> None:
        self.loaded = loaded
        self.config = loaded.config
        self.tz = loaded.tz
        self.journal = journal
        self.clock = clock
        self.journal_error: str | None = None  # set while the journal cannot be written (shown in status)
        # (clock, newest transaction or None before the first) at the last prune
        self._last_prune: tuple[datetime, datetime | None] | None = None
        self._newest_event: datetime | None = None
        self._dropped_since_trim = 0   # views pruned since the freed heap was last handed back
        self._events_at_trim = 0       # counts["events"] then
        self.listeners = list(listeners)
        self.on_commit = on_commit
        self.counts = {"events": 0, "transactions": 0, "new_transactions": 0, "reprints": 0, "settlements": 0,
                       "receipts": 0, "orders": 0, "alerts_opened": 0, "alerts_resolved": 0, "alerts_escalated": 0,
                       "reviews": 0, "batches_closed": 0, "quarantined": 0, "command_errors": 0,
                       "unread_receipts": 0, "ecr_requests": 0}
        self.budget = NoiseBudget(loaded)
        self.announcer = Announcer(journal, channels=channels, people_channels=people_channels, budget=self.budget)
        self.alerts = AlertBook(journal, self.announcer, tz=self.tz, cutoff=self.config.settlement.cutoff_time,
                                counts=self.counts, evidence_dir=evidence_dir,
                                terminal_line=has_terminal_line(s.protocol for s in self.config.source),
                                legit_needs=self.config.legit_needs,
                                remedies=RemedyBook.from_config(self.config))
        # The rules' look-backs: from the journal's indexes in the daemon (memory flat on a busy till), from
        # memory in replay (agent/rules/lookback.py; the same answers, replay's speed needs memory).
        self._rules_in_memory = rules_in_memory
        self.engine = self._build_engine()
        for warning in self.engine.warnings(self.clock.now()):
            log.warning("%s", warning)
        self._last_txn: dict[str, tuple[int, datetime]] = {}   # source -> (txn id, received) for late receipts
        self.clocks = TerminalClocks()
        self.wires = WireWatch(journal, ShopCalendar(loaded.hours, self.tz))
        self._wires_saved = journal.get_meta(WIRES_KEY)
        self.last_progress = self.clock.monotonic()
        # The rolling capture (agent/history.py): events handled in this transaction, written once it commits.
        self.history = history
        self._captured: list[tuple[str, Event, datetime]] = []
        # The daemon's half of a heartbeat (threads, readers; agent/service/heartbeat.py), when a daemon runs us.
        self.heartbeat_status: Callable[[], dict[str, Any]] | None = None
        # Replay keeps the baseline's amounts in memory as sales arrive (agent/rules/state.SaleAmounts);
        # the daemon re-reads them from the journal a few times a day and holds nothing between.
        self._sales: SaleAmounts | None = None
        self._baseline_in_memory = baseline_in_memory
        self._warm_state()   # also builds self.till (matching the till's sales, agent/match.py)

    def _build_till(self) -> TillMatching:
        return TillMatching(self.config.match, self.loaded.rule_params, OrderStore(self.journal.conn), self.alerts,
                            links={s.name: s.ecr_link for s in self.config.source})

    def _build_engine(self) -> RuleEngine:
        return RuleEngine(self.tz, self.loaded.rule_params, history=_JournalHistory(self.journal, self.tz),
                          hours=self.loaded.hours,
                          lookback=None if self._rules_in_memory else LookbackRows(self.journal.conn))

    # -- the thread ---------------------------------------------------------------------
    def run(self, inbox: queue.Queue[EventBatch | Command], stop: threading.Event | None = None,
            *, idle: float = 0.5, max_batch: int = 500) -> None:
        while stop is None or not stop.is_set():
            try:
                first = inbox.get(timeout=idle)
            except queue.Empty:
                self.last_progress = self.clock.monotonic()
                if self.till.is_due(self.clock.now()):
                    # A charge's grace ran out while the wires were quiet: judge it in a transaction.
                    if not self._process_durably([Command("tick")], stop):
                        return
                    continue
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
            self.last_progress = self.clock.monotonic()
            if stopping:
                return

    def _process_durably(self, items: Sequence[EventBatch | Command], stop: threading.Event | None) -> bool:
        """Process, and when the journal cannot be written (disk full, I/O error) hold the items and retry.

        The transaction rolled back whole, so retrying the same items later is exact. Readers keep
        queueing meanwhile; the pipeline keeps reporting progress on purpose: a restart cannot free disk
        space, and a restart loop would lose the queue. Returns False when asked to stop while waiting.
        """
        delay = RETRY_FIRST
        while True:
            counts = dict(self.counts)
            try:
                self.process(items)
            except sqlite3.Error as exc:
                # In place: the alert book counts into this very dict.
                self.counts.clear()
                self.counts.update(counts)
                if self.journal_error is None:
                    log.error("cannot write the journal %s: %s; holding events in memory and retrying —"
                              " free space on that filesystem", self.journal.path, exc)
                self.journal_error = f"{type(exc).__name__}: {exc}"
                # Rule memory may hold what was just rolled back: rebuild it from what is durable.
                self._rebuild_rules()
                self.last_progress = self.clock.monotonic()
                # Pacing a thread, not measuring time: a real wait even under a manual clock.
                if stop is None:
                    threading.Event().wait(delay)
                elif stop.wait(delay):
                    return False
                delay = min(delay * 2, RETRY_LONGEST)
                continue
            if self.journal_error is not None:
                log.warning("the journal is writable again; held events written")
                self.journal_error = None
            return True

    def _rebuild_rules(self) -> None:
        try:
            self.engine = self._build_engine()
            self._warm_state()
        except sqlite3.Error:
            pass  # reading may fail too while the disk is sick; the next attempt rebuilds again

    def process(self, items: Sequence[EventBatch | Command], *,
                before_each: Callable[[EventBatch | Command], None] | None = None, optimistic: bool = False) -> None:
        """Handle items in one journal transaction, then tell delivery and listeners.

        ``before_each`` runs before each item is handled: replay moves its clock to the item there,
        so a chunk of a capture is one transaction and still every batch has its own "now".

        ``optimistic`` (replay's chunks of event batches): no savepoint per item, two statements fewer
        each. Should an item fail, the whole transaction is rolled back, the rules' memory rebuilt from
        what is durable (as after a disk error), and the items handled again with a savepoint each, so
        the outcome is the one the careful path gives.
        """
        if optimistic and all(isinstance(i, EventBatch) for i in items):
            counts = dict(self.counts)
            try:
                self._transaction(items, before_each, guarded=False)
            except Exception as exc:
                if _environmental(exc):
                    raise
                self.counts.clear()
                self.counts.update(counts)
                self._rebuild_rules()
            else:
                return
        self._transaction(items, before_each, guarded=True)

    def _transaction(self, items: Sequence[EventBatch | Command],
                     before_each: Callable[[EventBatch | Command], None] | None, *, guarded: bool) -> None:
        replies: list[tuple[queue.Queue[Any], Any]] = []
        try:
            with self.journal.transaction():
                for item in items:
                    if before_each is not None:
                        before_each(item)
                    if isinstance(item, EventBatch):
                        if guarded:
                            self._item(item)
                        else:
                            self._handle_batch(item)
                    elif item.name != "stop":
                        result = self._item(item)
                        if item.reply is not None:
                            replies.append((item.reply, result))
                self._match_due()
        except BaseException:
            self.announcer.discard()  # rolled back: nothing it announced happened
            self._captured.clear()
            raise
        _acknowledge(items)
        self._write_history()
        self._prune_if_due()
        changes, enqueued = self.announcer.take()
        if enqueued and self.on_commit:
            self.on_commit()
        for change in changes:
            for listener in self.listeners:
                try:
                    listener(change)
                except Exception:  # a broken display must not stop the pipeline
                    log.exception("alert listener failed")
        for reply, result in replies:
            reply.put(result)

    # -- one item at a time ------------------------------------------------------------------
    def _item(self, item: EventBatch | Command) -> Any:
        """Handle one item in a savepoint: whatever it raises undoes its own writes and nothing else.

        An error of the environment (disk full, I/O, locked) is the whole transaction's: it propagates to
        :meth:`_process_durably`, which retries everything. Any other exception is this item's: a batch is
        handled again event by event and what still fails goes to the quarantine; a command answers with
        the error. Nothing an item carries can kill the pipeline thread or lose the items around it.
        """
        try:
            with self._undone_on_error():
                if isinstance(item, EventBatch):
                    self._handle_batch(item)
                    return None
                return self._handle_command(item)
        except Exception as exc:
            if _environmental(exc):
                raise
            why = scrub_text(f"{type(exc).__name__}: {exc}")
            if isinstance(item, EventBatch):
                # Rule memory may hold what was just undone: rebuild it from what is durable. (Commands do
                # not feed the rules' memory; reconfigure builds a new engine whole before using it.)
                self._rebuild_rules()
                log.error("source %s: a batch of %d event(s) failed (%s); handling them one by one",
                          item.source, len(item.events), why)
                self._salvage(item, why)
                return None
            self.counts["command_errors"] += 1
            log.error("command %s failed: %s", item.name, why)
            return {"ok": False, "error": f"{item.name}: {why}"}

    @contextmanager
    def _undone_on_error(self) -> Iterator[None]:
        """A savepoint around one item: if it raises, its journal writes, its counts and the notices it
        queued are all undone before the exception goes on (an environmental error then rolls back the
        whole transaction anyway; any other is the caller's to quarantine or answer)."""
        counts, mark, captured = dict(self.counts), self.announcer.mark(), len(self._captured)
        try:
            with self.journal.savepoint():
                yield
        except Exception:
            self.counts.clear()
            self.counts.update(counts)
            self.announcer.rewind(mark)
            del self._captured[captured:]
            raise

    def _salvage(self, batch: EventBatch, why: str) -> None:
        """A batch failed as a whole: its quarantined inputs, then each transaction (with the receipts
        printed before it) on its own; a unit that fails again goes to the quarantine whole."""
        for rej in batch.rejected:
            self._quarantine(rej, batch)
        units: list[list[Event]] = [[]]
        for event in batch.events:
            units[-1].append(event)
            if not isinstance(event, ReceiptText):
                units.append([])
        for unit in units:
            if not unit:
                continue
            try:
                with self._undone_on_error():
                    self._handle_batch(EventBatch(batch.source, tuple(unit), batch.received))
            except Exception as exc:
                if _environmental(exc):
                    raise
                self._rebuild_rules()
                reason = scrub_text(f"pipeline: {type(exc).__name__}: {exc}")
                for event in unit:
                    self._quarantine(rejected(batch.source, "pipeline", reason, _event_form(event)), batch)

    def _quarantine(self, rej: Rejected, batch: EventBatch) -> None:
        """Keep ``rej`` under the configured source's name (the batch's), which says which wire it came on."""
        self.counts["quarantined"] += 1
        self.journal.quarantine(received=batch.received, source=batch.source, stage=rej.stage, reason=rej.reason,
                                raw=rej.raw)
        if self.counts["quarantined"] <= 10 or self.counts["quarantined"] % 1000 == 0:
            # Logged, but not one line per rejected input: a noisy wire would flood the journal.
            log.warning("quarantined input from %s (%s): %s [%d so far]", batch.source, rej.stage, rej.reason,
                        self.counts["quarantined"])

    def _write_history(self) -> None:
        captured, self._captured = self._captured, []
        if self.history is not None and captured:
            try:
                self.history.append(captured)
            except Exception:   # a capture is a convenience: it never stops the pipeline
                log.exception("history: writing the capture failed")

    def _match_due(self) -> None:
        """Charges whose grace ended (agent/match.py), on the pipeline's clock after every item it handled.

        In a savepoint like an item: an error of its own is logged and undone, never the transaction's."""
        now = self.clock.now()
        if not self.till.is_due(now):
            return
        try:
            with self._undone_on_error():
                self.till.due(now)
        except Exception as exc:
            if _environmental(exc):
                raise
            self._rebuild_rules()
            log.error("matching the till's sales failed: %s", scrub_text(f"{type(exc).__name__}: {exc}"))

    def tick(self) -> None:
        self._last_prune = None
        self._prune_if_due()
        self._hand_back_memory(idle=True)

    def _prune_if_due(self) -> None:
        """A busy till (or a replay) is never idle: forget what left the rules' horizon as time moves on.

        Due when a minute has passed on the clock or in the transactions' own time (a backlog being
        caught up moves through hours of transactions in seconds); measured against the newer of the
        two, so a terminal clock running ahead cannot make the rules' memory grow without bound.
        """
        clock_now = self.clock.now()
        newest = self._newest_event
        last_clock, last_event = self._last_prune or (None, None)
        # The transactions' own time is compared only with itself: an idle tick at start-up, before any
        # transaction, must not stand for one (transactions stamped before the start, a backlog, would
        # never be a minute past it, and the rules' memory grew with every one of them: issue 20).
        clock_due = last_clock is None or clock_now - last_clock >= PRUNE_EVERY
        event_due = newest is not None and (last_event is None or newest - last_event >= PRUNE_EVERY)
        if clock_due or event_due:
            held = self.engine.state.resident()
            self.engine.prune(max(clock_now, newest) if newest is not None else clock_now)
            self._last_prune = (clock_now, newest)
            self._dropped_since_trim += held - self.engine.state.resident()
        self._hand_back_memory(idle=False)

    def _hand_back_memory(self, *, idle: bool) -> None:
        """What Python and SQLite freed (pruned views, resized indexes, statement and row buffers) stays in
        glibc's arenas, and in RSS, until handed back: ~17 MiB after a burst of 100,000 (issue 20)."""
        work = self.counts["events"] - self._events_at_trim
        if work >= TRIM_AFTER_EVENTS or self._dropped_since_trim >= TRIM_AFTER_VIEWS \
                or (idle and work >= TRIM_IDLE_AFTER_EVENTS):
            self._dropped_since_trim = 0
            self._events_at_trim = self.counts["events"]
            release_freed()

    # -- events ----------------------------------------------------------------------------
    def _handle_batch(self, batch: EventBatch) -> None:
        pending_receipt: ReceiptText | None = None
        for early in batch.rejected:
            self._quarantine(early, batch)
        refused = bool(batch.rejected)
        for event in batch.events:
            # The limits again, for events that did not come through a decoder's boundary (tools, tests):
            # the journal's limits hold whoever fills the queue. Not the card scrub: that is the decoders'
            # (a card number that reached agent/ has already left drivers/), and it costs more than this.
            why = None if batch.checked else check_event(event)
            if why is not None:
                self._quarantine(rejected(batch.source, "limits", why, _event_form(event)), batch)
                refused = True
                continue
            self.counts["events"] += 1
            if self.history is not None:
                self._captured.append((batch.source, event, batch.received))
            if isinstance(event, ReceiptText):
                if event.unread is not None:
                    self._unread(event, batch)
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
            elif isinstance(event, Order):
                if pending_receipt is not None:   # the till's 小票 itself: no terminal transaction's slip
                    self._store_receipt(pending_receipt, batch, None)
                    pending_receipt = None
                self.counts["orders"] += 1
                self.till.order(event, source=batch.source, received=batch.received, now=self.clock.now())
            elif isinstance(event, EcrRequest):   # the till's side of an ECR link (agent/ecr_link.py)
                self.counts["ecr_requests"] += 1
                self.till.ecr_request(event, source=batch.source, received=batch.received)
            if self.announcer.event_channels:   # a NATS stream with `events = true` (agent/delivery/events.py)
                # Stamped when the till received it (the CloudEvent's time): what CHAIN-001 compares across
                # tills, not the moment a backlog (a spool read at start, a journal stall) was worked off.
                announce_event(self.announcer, event, self.config.shop, batch.received)
        if pending_receipt is not None:
            # Terminals print after the status message: attach to the source's last transaction. Not when
            # something of this read was quarantined: the slip may be that refused transaction's.
            last = self._last_txn.get(batch.source)
            near = last if last and not refused and batch.received - last[1] <= timedelta(minutes=2) else None
            self._store_receipt(pending_receipt, batch, near[0] if near else None)

    def _unread(self, receipt: ReceiptText, batch: EventBatch) -> None:
        """A slip seen but not understood (agent/watch/unread.py): counted; the installer told once a day."""
        self.counts["unread_receipts"] += 1
        now = self.clock.now()
        text, entry, tell = unread.observe(self.journal.get_meta(unread.META_KEY), receipt, batch.source, now,
                                           self.tz)
        self.journal.set_meta(unread.META_KEY, text)
        if tell:
            log.warning("source %s: a slip was not understood (%s%s%s), %d so far", batch.source, entry.reason,
                        f", template {entry.template}" if entry.template else "",
                        f", field {entry.field}" if entry.field else "", entry.count)
            self.announcer.to_people(NoticeKind.DEVICE, unread.payload(entry), now, deadline=None,
                                     message_id=f"device.unread.{entry.reason}.{entry.template or '-'}."
                                                f"{entry.field or '-'}.{entry.notified}")

    def _store_receipt(self, receipt: ReceiptText, batch: EventBatch, txn_id: int | None) -> None:
        self.counts["receipts"] += 1
        self.journal.add_receipt(txn_id=txn_id, source=batch.source, received=batch.received,
                                 terminal_id=receipt.terminal_id, data=receipt.to_dict())

    def _handle_transaction(self, txn: Transaction, batch: EventBatch) -> int:
        self.counts["transactions"] += 1
        now = self.clock.now()
        stamped = self._check_clock(txn.terminal_id, txn.time, batch, now) if txn.time else None
        instant = (stamped or batch.received).astimezone(UTC)
        key = identity_key(txn) or f"u:{batch.source}:{instant.isoformat()}:{txn.amount_minor}:{new_ulid(now)}"
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
            if self._sales is not None and txn.kind == "sale" and txn.result == "approved":
                self._sales.add(instant, txn.amount_minor)
        elif merged.reprint:
            self.counts["reprints"] += 1
        obs = Observation(view=view, is_new=merged.is_new, conflicts=merged.conflicts, reprint=merged.reprint,
                          sighting=txn)
        findings = self.engine.evaluate(obs, now)
        if merged.is_new:
            self.engine.observe(view)
            findings = self.till.charge(view, findings, now, source=batch.source, received=batch.received)
        for finding in findings:
            self.alerts.open(finding, now)
        # A terminal's sighting of a void first seen on a printed slip is its confirmation.
        if (merged.is_new or txn.source != PRINTED_SOURCE) and txn.kind in RETURNING_KINDS \
                and txn.result == "approved":
            self.alerts.returned_on_the_wire(txn, now)
            self.till.returned(txn, now)
        return stored.id

    def _check_clock(self, terminal: str | None, stamped: datetime, batch: EventBatch, now: datetime) -> datetime:
        """The time rules use for this transaction: the terminal's own, unless its clock is judged wrong."""
        threshold = next((s.clock_skew for s in self.config.source if s.name == batch.source), DEFAULT_SKEW)
        used, news, changed = self.clocks.observe(terminal or "?", stamped, batch.received, threshold)
        if changed:
            self.journal.set_meta(CLOCKS_KEY, self.clocks.to_meta())
        if news is not None:
            title, lines = describe_clock(news, self.tz)
            log.warning("terminal %s: clock off by %s; rules use the corrected time", news.terminal, news.offset)
            self.announcer.to_people(NoticeKind.DEVICE, {"notice": NoticeKind.DEVICE.value, "problem": "clock",
                                                         "terminal": news.terminal, "title": list(title),
                                                         "lines": lines},
                                     now, message_id=f"device.clock.{news.terminal}.{now:%Y%m%dT%H%M%S}",
                                     deadline=None)
        return used

    def _view(self, stored: StoredTxn) -> TxnView:
        stamped = stored.txn.time
        instant = (self.clocks.corrected(stored.txn.terminal_id or "?", stamped) if stamped
                   else stored.first_seen).astimezone(UTC)
        # What the rules keep for their horizon (~45,000 views on a busy till): its repeated strings are shared
        # already (interned where the Transaction is built, drivers/events.py).
        return TxnView(key=stored.key, txn=stored.txn, utc=instant, local=instant.astimezone(self.tz))

    def _handle_settlement(self, settlement: Settlement, batch: EventBatch) -> None:
        self.counts["settlements"] += 1
        self.journal.add_settlement(settlement, received=batch.received, source=batch.source)
        if settlement.source == PRINTED_SOURCE and self.alerts.terminal_line:
            # Anyone who can print to the till can print a 结算总计单; closing the batch on it would turn
            # every open finding into "refund only". With the terminal's own line there, only the
            # terminal's settlement (or the cutoff) closes the batch; the slip stays in the journal.
            log.warning("a settlement slip for batch %s was printed; waiting for the terminal's own settlement",
                        settlement.batch_no)
            return
        self._close_batch(settlement.terminal_id, settlement.batch_no, self.clock.now(), by_cutoff=False)

    def _close_batch(self, terminal_id: str | None, batch_no: str | None, now: datetime, *, by_cutoff: bool) -> None:
        closed = self.journal.close_batches(terminal_id, batch_no, now)
        self.counts["batches_closed"] += len(closed)
        self.alerts.batch_closed(terminal_id, batch_no, now, by_cutoff=by_cutoff)
        self.announcer.note(BatchClosed(now, terminal_id, batch_no, "cutoff" if by_cutoff else "settlement"))

    # -- commands ----------------------------------------------------------------------------
    def _handle_command(self, cmd: Command) -> Any:
        now = self.clock.now()
        if cmd.name in SCHEDULED_JOBS and "due" in cmd.args:
            # Same transaction as the job's work: start-up catch-up continues from here (agent/schedule.py).
            mark_schedule(self.journal, cmd.args["due"])
        if cmd.name == "ack":
            return self.alerts.ack(cmd.args, now)
        if cmd.name == "tick":
            self.tick()
            return {"ok": True}
        if cmd.name == "review":
            self.counts["reviews"] += 1
            # "quarantined": the count the event boundary keeps (issue 13), when it is there.
            lines, saw_nothing = day_lines(self.journal, self.wires, now, self.tz, self.counts.get("quarantined", 0))
            return review.review(self.journal, self.announcer, now, cutoff=self.config.settlement.cutoff_time,
                                 tz=self.tz, all_clear=self.config.settlement.all_clear, lines=lines,
                                 saw_nothing=saw_nothing, budget=self.budget, shop=self.config.shop)
        if cmd.name == "heartbeat":
            return heartbeat.send(self, cmd.args, now, self.heartbeat_status)
        if cmd.name == "wires":
            return self._check_wires(cmd.args.get("reports") or [], now)
        if cmd.name == "web_lockout":
            return self._web_lockout(str(cmd.args.get("client") or "?"), bool(cmd.args.get("everyone")),
                                     int(cmd.args.get("minutes") or 15), now)
        if cmd.name == "cutoff":
            self._close_batch(None, None, now, by_cutoff=True)
            return {"ok": True}
        if cmd.name == "reminders":
            return review.reminders(self.journal, self.announcer, now, budget=self.budget)
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
        self.engine = self._build_engine()
        self.alerts.reconfigure(tz=self.tz, cutoff=self.config.settlement.cutoff_time,
                                terminal_line=has_terminal_line(s.protocol for s in self.config.source),
                                legit_needs=self.config.legit_needs,
                                remedies=RemedyBook.from_config(self.config))
        if self.history is not None:   # turned on only by a restart (the daemon makes the writer)
            self.history.settings, self.history.tz = loaded.config.history, self.tz
            if not loaded.config.history.enabled:
                self.history = None
        self.wires.calendar = ShopCalendar(loaded.hours, self.tz)
        self.wires.thresholds = {}   # recomputed at the next check, for the new sources and hours
        self.announcer.route(channels, people_channels)
        self.budget = self.announcer.budget = NoiseBudget(loaded)
        self._warm_state()
        warnings = self.engine.warnings(self.clock.now())
        for warning in warnings:
            log.warning("%s", warning)
        return {"ok": True, "warnings": warnings}

    def _check_wires(self, reports: Sequence[dict[str, Any]], now: datetime) -> dict[str, Any]:
        """Dead wires and blind taps (agent/watch/wires.py): one notice when a quiet starts, one when it ends."""
        configured = {s.name: s.silence for s in self.config.source}
        for source, change, episode in self.wires.check(reports, now, configured):
            title, lines = episode_notice(source, change, episode, now, self.wires.calendar)
            log.warning("source %s: %s %s since %s", source, episode.kind, change, episode.since.isoformat())
            self.announcer.to_people(NoticeKind.DEVICE, {"notice": NoticeKind.DEVICE.value, "problem": episode.kind,
                                                         "source": source, "change": change, "title": list(title),
                                                         "lines": lines},
                                     now, message_id=f"device.{episode.kind}.{source}.{change}.{now:%Y%m%dT%H%M%S}",
                                     deadline=None)
        saved = self.wires.to_meta()
        if saved != self._wires_saved:  # written when something changed, not every half minute
            self.journal.set_meta(WIRES_KEY, saved)
            self._wires_saved = saved
        return {"ok": True, "quiet": sorted(self.wires.episodes)}

    def _web_lockout(self, client: str, everyone: bool, minutes: int, now: datetime) -> dict[str, Any]:
        """Someone keeps typing wrong PINs on the till page: the group hears it (once per lockout)."""
        if everyone:
            title = ["收银台页面：多次输错 PIN，已暂停登录", "Till page: many wrong PINs, sign-in paused"]
            lines = [f"{minutes} 分钟内多个设备输错 PIN，新登录暂停（已登录的手机不受影响）；最近一次来自 {client}。"
                     "如非店员所为，请检查店内 Wi-Fi 并更换 PIN。"]
        else:
            title = ["收银台页面：有人连续输错 PIN", "Till page: repeated wrong PINs"]
            lines = [f"设备 {client} 连续输错 PIN，已锁定 {minutes} 分钟。如非店员所为，请更换 PIN。"]
        log.warning("till page: wrong PINs from %s; %s", client, "every sign-in paused" if everyone else "locked out")
        self.announcer.to_people(NoticeKind.DEVICE, {"notice": NoticeKind.DEVICE.value, "problem": "web_lockout",
                                                     "title": title, "lines": lines},
                                 now, message_id=f"device.web_lockout.{client}.{now:%Y%m%dT%H%M%S}", deadline=None)
        return {"ok": True}

    def _refresh_baseline(self, now: datetime) -> dict[str, Any]:
        window = self.engine.baseline_window
        # With times: when large bills happen (AMT-001). Replay keeps the window's running aggregates in
        # memory (SaleAmounts): the same baseline as compute's on the same pairs, without walking them.
        if self._sales is not None:
            baseline, held = self._sales.baseline(now - window, now)
            self.engine.state.set_baseline(baseline)
            return {"ok": True, "amounts": held, "ready": baseline is not None}
        # The daemon: grouped by SQLite, the same baseline as compute's on the window's pairs without an
        # object per sale (a 30-day window of a busy till; its peak stayed in RSS: issue 20).
        baseline, rows = baseline_from_window(JournalSaleWindow(self.journal.conn, now - window, now), now,
                                              self.engine.state.tz)
        self.engine.state.set_baseline(baseline)
        return {"ok": True, "amounts": rows, "ready": baseline is not None}

    # -- start-up ----------------------------------------------------------------------------
    def _warm_state(self) -> None:
        """Reload the rules' short-term memory from the journal after a restart."""
        now = self.clock.now()
        # Offsets of terminals with a wrong clock, as committed (also undoes what a rollback left).
        self.clocks = TerminalClocks.from_meta(self.journal.get_meta(CLOCKS_KEY))
        since = now - self.engine.state.horizon
        recent = [(self._view(s), s.first_seen) for s in self.journal.recent_transactions(since)]
        with self.engine.state.warming(since):
            for view, _ in recent:
                self.engine.observe(view)
        # Matching rebuilt from what is durable too (its memory may hold what a rollback undid).
        self.till = self._build_till()
        self.till.warm(now, recent)
        if self._baseline_in_memory:
            window = self.engine.baseline_window
            self._sales = SaleAmounts(window, self.journal.approved_sales_since(now - window), self.engine.state.tz)
        self._refresh_baseline(now)


def _acknowledge(items: Sequence[EventBatch | Command]) -> None:
    """Committed: tell each source (a spool moves its job to done/). A failure only means a re-read."""
    for item in items:
        if isinstance(item, EventBatch) and item.ack is not None:
            try:
                item.ack()
            except Exception:
                log.exception("source %s: could not mark a committed job done", item.source)


def _environmental(exc: BaseException) -> bool:
    """An SQLite error of the file or the disk (retry everything later), not of one item's values."""
    return isinstance(exc, sqlite3.Error) and not isinstance(
        exc, sqlite3.IntegrityError | sqlite3.ProgrammingError | sqlite3.InterfaceError | sqlite3.DataError)


def _event_form(event: Any) -> str:
    try:
        return json.dumps(event.to_dict(), ensure_ascii=False, default=repr)
    except Exception:  # whatever it holds, the quarantine keeps its repr
        return repr(event)


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
