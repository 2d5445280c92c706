"""The daemon's rule look-backs answered from the journal's indexes (issue 20: flat memory on a busy till).

:class:`RuleState` holds every view inside the rules' 25-hour horizon, ~870 bytes each: ~45,000 on a till
charging every 2 s. :class:`JournalRuleState` answers the same five questions (``card_history``,
``same_amount``, ``by_reference``, ``voided_by``, ``other_charges``) from the journal instead, holding in
memory only a bounded cache of views it materialised and the few views the journal cannot place. Replay keeps
the in-memory state (its speed needs it). The answers are the in-memory state's, view for view
(tests/test_lookback_differential.py); what makes them so:

* What is held: the in-memory state holds a view from its ``observe`` until a ``prune`` finds it older than
  that prune's cutoff. Here: rows with an id up to the newest observed (the transaction being evaluated is
  already written, not yet observed) and a time from the highest cutoff so far on; a view observed older
  than that (a late report) or whose time is not the row's (a terminal clock re-judged since) is kept in
  memory until a prune drops it, as the in-memory state would.
* The view: the transaction as the rules saw it when they observed it (its first sighting; after a restart,
  the sightings merged up to then), not as later sightings filled it in; its time the row's.
* First seen per voucher/RRN: a view observed while another with the same reference was held is never the
  answer for that reference (the in-memory index keeps the first and never promotes a later one): such
  views are noted, by id, until pruned.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Protocol

from agent.model import RETURNING_KINDS, Transaction
from agent.rules.base import Observation, TxnView
from agent.rules.calendar import ShopCalendar
from agent.rules.state import History, RuleState
from drivers.pan import card_tail, same_card

# Views materialised from the journal kept for the next questions (a charge's card is asked about by several
# rules in a row): ~1 KiB each.
CACHE_VIEWS = 2048
# Questions whose rows are remembered until what is held changes.
MEMO_QUESTIONS = 256

Row = tuple[int, str, datetime]

# Before any prune and warm-up nothing has a cutoff: every row observed is held.
_NO_CUTOFF = datetime(1, 1, 2, tzinfo=UTC)


class Rows(Protocol):
    """What the journal answers (agent/store/lookback.py ``LookbackRows``)."""

    def row(self, key: str) -> tuple[int, datetime] | None: ...
    def marks(self) -> tuple[int, int]: ...
    def by_tail(self, tail: str, since: datetime, until: datetime | None, upto: int) -> list[Row]: ...
    def by_amount(self, amount_minor: int, since: datetime, until: datetime, upto: int) -> list[Row]: ...
    def by_field(self, field: str, value: str, since: datetime, upto: int) -> list[Row]: ...
    def count(self, since: datetime, upto: int) -> int: ...
    def seen(self, txn_id: int, sightings_upto: int | None) -> Transaction: ...


class _Ref:
    """One reference index (voucher per terminal, RRN, and the originals voids name): the ids of views that
    were observed while another view with their reference was held, so never its answer."""

    def __init__(self) -> None:
        self.shadowed: dict[int, datetime] = {}
        self.warm_seen: set[tuple[str, str]] | None = None   # while warming: references seen so far

    def prune(self, cutoff: datetime) -> None:
        for i in [i for i, utc in self.shadowed.items() if utc < cutoff]:
            del self.shadowed[i]


class JournalRuleState(RuleState):
    def __init__(self, tz: tzinfo, rows: Rows, *, horizon: timedelta = timedelta(hours=24),
                 history: History | None = None, calendar: ShopCalendar | None = None) -> None:
        super().__init__(tz, horizon=horizon, history=history, calendar=calendar)
        self.rows = rows
        self._upto = 0                       # the newest transaction id observed
        self._cutoff: datetime | None = None  # the highest prune cutoff so far (None: nothing pruned yet)
        self._warm_upto = 0                  # rows up to this id were observed at warm-up, as merged then...
        self._warm_sightings = 0             # ...from their sightings up to this id
        self._warming = False
        self._warm_ids: list[int] = []
        # Views the journal cannot place (observed older than the cutoff, or at another time than the row's):
        # id -> view, held until a prune drops them; their ids are left out of the journal's answers.
        self._odd: dict[int, TxnView] = {}
        self._odd_rows: dict[int, datetime] = {}   # their rows' own times (what a count of the rows sees)
        # ... and found by what the questions ask (card tail, amount, each reference): a backlog stamped before
        # the horizon can make thousands of them between two prunes.
        self._odd_by: dict[tuple[str, object], list[int]] = {}
        self._cache: OrderedDict[int, TxnView] = OrderedDict()
        # The rows one question found, kept for the next questions until what is held changes (an observe, a
        # prune): the rules ask about one charge's card and references several times in a row.
        self._memo: dict[tuple[str, object], list[Row]] = {}
        self._voucher, self._rrn = _Ref(), _Ref()
        self._orig_voucher, self._orig_rrn = _Ref(), _Ref()

    # -- updates (pipeline only) -------------------------------------------------
    @contextmanager
    def warming(self, since: datetime) -> Iterator[None]:
        """The pipeline observing what the journal holds since ``since`` after a (re)start, oldest first."""
        self._warming = True
        refs = (self._voucher, self._rrn, self._orig_voucher, self._orig_rrn)
        for ref in refs:
            ref.warm_seen = set()
        try:
            yield
        finally:
            self._warming = False
            for ref in refs:
                ref.warm_seen = None
        self._memo.clear()
        self._warm_upto, self._warm_sightings = self.rows.marks()
        self._upto = max(self._upto, self._warm_upto)
        self._cutoff = since if self._cutoff is None else max(self._cutoff, since)

    def observe(self, view: TxnView) -> None:
        found = self.rows.row(view.key)
        if found is None:
            raise LookupError(f"observed a transaction the journal does not hold: {view.key}")
        txn_id, stored = found
        t = view.txn
        returning = view.approved and t.kind in RETURNING_KINDS
        if self._warming:
            self._shadow_warm(self._voucher, txn_id, view, t.terminal_id, t.voucher_no)
            self._shadow_warm(self._rrn, txn_id, view, None, t.rrn)
            if returning:
                self._shadow_warm(self._orig_voucher, txn_id, view, t.terminal_id, t.original_voucher_no)
                self._shadow_warm(self._orig_rrn, txn_id, view, None, t.original_rrn)
        else:
            # Before it counts as held: is another view with its references held already?
            if t.voucher_no and self._voucher_hit(self._voucher, "voucher_no", t.terminal_id, t.voucher_no):
                self._voucher.shadowed[txn_id] = view.utc
            if t.rrn and self._rrn_hit(self._rrn, "rrn", t.rrn):
                self._rrn.shadowed[txn_id] = view.utc
            if returning:
                if t.original_voucher_no and self._voucher_hit(self._orig_voucher, "original_voucher_no",
                                                               t.terminal_id, t.original_voucher_no):
                    self._orig_voucher.shadowed[txn_id] = view.utc
                if t.original_rrn and self._rrn_hit(self._orig_rrn, "original_rrn", t.original_rrn):
                    self._orig_rrn.shadowed[txn_id] = view.utc
            self._upto = max(self._upto, txn_id)
        if stored != view.utc or (self._cutoff is not None and view.utc < self._cutoff):
            self._keep_odd(txn_id, view, stored)
        self._cache.pop(txn_id, None)
        self._memo.clear()

    def conflicting_sighting(self, obs: Observation) -> None:
        """The journal fills a last-4 card in from a 6+4 sighting even when the two disagree (a conflict): the
        row's card index then no longer finds the card the rules saw. Such a held view is kept in memory."""
        if "card" not in obs.conflicts:
            return
        found = self.rows.row(obs.view.key)
        if found is None:
            return
        txn_id, stored = found
        if txn_id in self._odd or txn_id > self._upto or stored < self._floor():
            return   # already kept, or not held (not observed yet, or pruned): nothing the rules could see
        self._keep_odd(txn_id, self._view(txn_id, obs.view.key, stored), stored)
        self._memo.clear()

    def _keep_odd(self, txn_id: int, view: TxnView, stored: datetime) -> None:
        self._odd[txn_id] = view
        self._odd_rows[txn_id] = stored
        for k in _odd_keys(view):
            self._odd_by.setdefault(k, []).append(txn_id)

    def _drop_odd(self, txn_id: int) -> None:
        view = self._odd.pop(txn_id)
        del self._odd_rows[txn_id]
        for k in _odd_keys(view):
            ids = self._odd_by[k]
            ids.remove(txn_id)
            if not ids:
                del self._odd_by[k]

    def _odd_of(self, kind: str, value: object) -> list[tuple[int, TxnView]]:
        return [(i, self._odd[i]) for i in self._odd_by.get((kind, value), ())]

    def _shadow_warm(self, ref: _Ref, txn_id: int, view: TxnView, terminal: str | None, value: str | None) -> None:
        if not value or ref.warm_seen is None:
            return
        k = (terminal or "", value)
        if k in ref.warm_seen:
            ref.shadowed[txn_id] = view.utc
        else:
            ref.warm_seen.add(k)

    def prune(self, now: datetime) -> None:
        cutoff = now - self.horizon
        self._cutoff = cutoff if self._cutoff is None else max(self._cutoff, cutoff)
        self._memo.clear()
        # Each prune drops what is older than its own cutoff (a clock stepping back prunes less, as in memory).
        if self._odd:
            for i in [i for i, v in self._odd.items() if v.utc < cutoff]:
                self._drop_odd(i)
        for ref in (self._voucher, self._rrn, self._orig_voucher, self._orig_rrn):
            ref.prune(cutoff)

    # -- what is held --------------------------------------------------------------------
    def _since(self, since: datetime) -> datetime:
        """The start of a look-back in the journal: never before the cutoff (what is older was pruned)."""
        floor = self._floor()
        return since if since > floor else floor

    def _floor(self) -> datetime:
        return _NO_CUTOFF if self._cutoff is None else self._cutoff

    def _view(self, txn_id: int, key: str, utc: datetime) -> TxnView:
        v = self._cache.get(txn_id)
        if v is not None:
            self._cache.move_to_end(txn_id)
            return v
        txn = self.rows.seen(txn_id, self._warm_sightings if txn_id <= self._warm_upto else None)
        v = TxnView(key=key, txn=txn, utc=utc, local=utc.astimezone(self.tz))
        self._cache[txn_id] = v
        if len(self._cache) > CACHE_VIEWS:
            self._cache.popitem(last=False)
        return v

    def _held(self, rows: list[Row], odd: list[tuple[int, TxnView]]) -> list[tuple[int, TxnView]]:
        """(id, view) of the journal's rows and the odd views, oldest first (ties: in the order observed)."""
        out = [(i, self._view(i, key, utc)) for i, key, utc in rows if i not in self._odd]
        if odd:
            out.extend(odd)
            out.sort(key=lambda p: (p[1].utc, p[0]))
        return out

    # -- queries (rules) -------------------------------------------------------------
    def card_history(self, card: str, since: datetime, until: datetime | None = None) -> Iterator[TxnView]:
        tail = card_tail(card)
        # Every held row of the tail at once (a few on a busy till), the window applied before materialising.
        rows = [r for r in self._remembered("tail", tail, lambda: self.rows.by_tail(tail, self._floor(), None,
                                                                                     self._upto))
                if r[2] >= since and (until is None or r[2] <= until)]
        odd = [(i, v) for i, v in self._odd_of("tail", tail) if v.utc >= since and (until is None or v.utc <= until)]
        for _, v in self._held(rows, odd):
            if v.card and card_tail(v.card) == tail and same_card(v.card, card):
                yield v

    def _remembered(self, kind: str, value: object, fetch: Callable[[], list[Row]]) -> list[Row]:
        k = (kind, value)
        rows = self._memo.get(k)
        if rows is None:
            if len(self._memo) >= MEMO_QUESTIONS:   # re-sightings alone (no observe between): start afresh
                self._memo.clear()
            rows = self._memo[k] = fetch()
        return rows

    def same_amount(self, amount_minor: int, since: datetime, until: datetime) -> Iterator[TxnView]:
        rows = self.rows.by_amount(amount_minor, self._since(since), until, self._upto)
        odd = [(i, v) for i, v in self._odd_of("amount", amount_minor) if since <= v.utc <= until]
        for _, v in self._held(rows, odd):
            yield v

    def by_reference(self, *, terminal_id: str | None, voucher_no: str | None = None,
                     rrn: str | None = None) -> TxnView | None:
        hit = self._voucher_hit(self._voucher, "voucher_no", terminal_id, voucher_no) if voucher_no else None
        if hit is None and rrn:
            hit = self._rrn_hit(self._rrn, "rrn", rrn)
        return hit

    def voided_by(self, view: TxnView) -> TxnView | None:
        t = view.txn
        hit = (self._voucher_hit(self._orig_voucher, "original_voucher_no", t.terminal_id, t.voucher_no)
               if t.voucher_no else None)
        if hit is None and t.rrn:
            hit = self._rrn_hit(self._orig_rrn, "original_rrn", t.rrn)
        return hit

    def _candidates(self, ref: _Ref, field: str, value: str) -> list[tuple[int, TxnView]]:
        """Held views that carried ``value`` in ``field`` when observed and are that reference's answer."""
        rows = self._remembered(field, value, lambda: self.rows.by_field(field, value, self._floor(), self._upto))
        odd = self._odd_of(field, value)
        returning = field.startswith("original_")
        return [(i, v) for i, v in self._held(rows, odd)
                if i not in ref.shadowed and getattr(v.txn, field) == value
                and (not returning or (v.approved and v.txn.kind in RETURNING_KINDS))]

    def _voucher_hit(self, ref: _Ref, field: str, terminal_id: str | None, value: str) -> TxnView | None:
        tid = terminal_id or ""
        found = [(i, v) for i, v in self._candidates(ref, field, value) if (v.txn.terminal_id or "") == tid]
        return min(found, key=lambda p: p[0])[1] if found else None

    def _rrn_hit(self, ref: _Ref, field: str, value: str) -> TxnView | None:
        found = self._candidates(ref, field, value)
        return min(found, key=lambda p: p[0])[1] if found else None

    def resident(self) -> int:
        """Views held in this process's memory (the cache and the odd ones), not in the journal."""
        return len(self._cache) + len(self._odd)

    def __len__(self) -> int:
        """Views the rules hold (a count in the journal: for status and benchmarks, not per transaction)."""
        floor = self._floor()
        in_rows = self.rows.count(floor, self._upto) if self._upto else 0
        counted_twice = sum(1 for i, at in self._odd_rows.items() if at >= floor and i <= self._upto)
        return in_rows - counted_twice + len(self._odd)


def _odd_keys(view: TxnView) -> list[tuple[str, object]]:
    """What an odd view is found by: its card tail, its amount and each reference it carries."""
    t = view.txn
    keys: list[tuple[str, object]] = [("amount", t.amount_minor)]
    if t.card:
        keys.append(("tail", card_tail(t.card)))
    for name in ("voucher_no", "rrn", "original_voucher_no", "original_rrn"):
        value = getattr(t, name)
        if value:
            keys.append((name, value))
    return keys
