"""In-memory indexes the rules read; bounded so a long day never rescans itself.

The pipeline calls :meth:`RuleState.observe` for every new merged transaction
(after the rules ran on it) and :meth:`prune` as time advances. Anything older
than ``horizon`` is dropped; longer look-backs (baselines, refunds) come from
the journal through :class:`History` and :meth:`RuleState.set_baseline`.

Every index is a dict of views in time order, so a query costs the number
of transactions sharing its key (one card, one amount, one operator) in the
horizon, never the whole day.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Hashable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import date, datetime, timedelta, tzinfo
from typing import Any, Protocol, TypeVar

from agent.model import RETURNING_KINDS
from agent.rules.base import Observation, TxnView, is_charge
from agent.rules.baseline import AmountBaseline, RunningBaseline
from agent.rules.calendar import ShopCalendar
from drivers.pan import card_tail, same_card

K = TypeVar("K", bound=Hashable)


class History(Protocol):
    """Look-ups the journal answers for rules with long windows.

    ``earliest()`` (optional, the first instant the journal has any transaction for)
    lets REF-001 tell "no sale on this card" from "no sale *recorded* yet": when it
    is missing or later than the look-back start, REF-001 does not claim a sale is
    missing.
    """

    def sales_for_card(self, card: str, since: datetime, until: datetime) -> list[TxnView]: ...


class _NoHistory:
    def sales_for_card(self, card: str, since: datetime, until: datetime) -> list[TxnView]:
        return []


# An index's entry: one view (most keys, an exact amount or a card tail within a day, have one), or a
# list in time order once a second view shares the key. A one-element list costs ~90 bytes a view over the
# view itself (issue 20: ~45,000 views inside the 25-hour horizon on a busy till).
Entry = TxnView | list[TxnView]


class _Refs:
    """First view seen per voucher (on its terminal) and per RRN.

    Keyed by the view's own voucher and RRN strings (no key object of its own per view: a tuple key cost
    ~120 bytes a view); vouchers of different terminals sharing a number sit in one entry's list.
    """

    __slots__ = ("by_rrn", "by_voucher")

    def __init__(self) -> None:
        self.by_voucher: dict[str, Entry] = {}
        self.by_rrn: dict[str, TxnView] = {}

    def add(self, terminal_id: str | None, voucher_no: str | None, rrn: str | None, view: TxnView) -> None:
        if voucher_no and self._voucher(terminal_id, voucher_no) is None:
            held = self.by_voucher.get(voucher_no)
            if held is None:
                self.by_voucher[voucher_no] = view
            elif isinstance(held, list):
                held.append(view)
            else:
                self.by_voucher[voucher_no] = [held, view]
        if rrn:
            self.by_rrn.setdefault(rrn, view)

    def get(self, terminal_id: str | None, voucher_no: str | None, rrn: str | None) -> TxnView | None:
        """Voucher (per terminal) before RRN."""
        hit = self._voucher(terminal_id, voucher_no) if voucher_no else None
        if hit is None and rrn:
            hit = self.by_rrn.get(rrn)
        return hit

    def drop(self, terminal_id: str | None, voucher_no: str | None, rrn: str | None, view: TxnView) -> None:
        if voucher_no:
            held = self.by_voucher.get(voucher_no)
            if held is view:
                del self.by_voucher[voucher_no]
            elif isinstance(held, list) and any(v is view for v in held):
                rest = [v for v in held if v is not view]
                self.by_voucher[voucher_no] = rest[0] if len(rest) == 1 else rest
        if rrn and self.by_rrn.get(rrn) is view:
            del self.by_rrn[rrn]

    def _voucher(self, terminal_id: str | None, voucher_no: str) -> TxnView | None:
        held = self.by_voucher.get(voucher_no)
        if held is None:
            return None
        tid = terminal_id or ""
        for v in held if isinstance(held, list) else (held,):
            if (v.txn.terminal_id or "") == tid:
                return v
        return None

    def __len__(self) -> int:
        return len(self.by_voucher) + len(self.by_rrn)


class RuleState:
    def __init__(self, tz: tzinfo, *, horizon: timedelta = timedelta(hours=24),
                 history: History | None = None, calendar: ShopCalendar | None = None) -> None:
        self.tz = tz
        self.horizon = horizon
        self.history: History = history or _NoHistory()
        self.has_history = history is not None
        self.calendar = calendar or ShopCalendar(None, tz)
        self.baseline: AmountBaseline | None = None
        # rule id -> how often it could not judge for lack of history/data (a metric, not a decision input)
        self.insufficient: Counter[str] = Counter()
        # rule id -> running counters a rule keeps through its observe()/prune() hooks
        self.tallies: dict[str, Any] = {}
        self._recent: deque[TxnView] = deque()
        # A view or a list per key, not a deque (~600 bytes empty) nor always a list: most keys (a card tail,
        # an exact amount) hold one view (Entry above). Every index's memory follows the horizon (issue 20).
        self._by_tail: dict[str, Entry] = {}
        self._by_amount: dict[int, Entry] = {}
        self._by_ref = _Refs()
        # The approved void/reversal/refund naming each original (its original voucher/RRN as the keys).
        self._voided_by = _Refs()

    # -- updates (pipeline only) -------------------------------------------------
    def observe(self, view: TxnView) -> None:
        _insert(self._recent, view)
        if view.card:
            _add(self._by_tail, card_tail(view.card), view)
        _add(self._by_amount, view.amount_minor, view)
        t = view.txn
        self._by_ref.add(t.terminal_id, t.voucher_no, t.rrn, view)
        if view.approved and t.kind in RETURNING_KINDS:
            self._voided_by.add(t.terminal_id, t.original_voucher_no, t.original_rrn, view)

    def set_baseline(self, baseline: AmountBaseline | None) -> None:
        self.baseline = baseline

    def prune(self, now: datetime) -> None:
        cutoff = now - self.horizon
        while self._recent and self._recent[0].utc < cutoff:
            old = self._recent.popleft()
            if old.card:
                _trim(self._by_tail, card_tail(old.card), cutoff)
            _trim(self._by_amount, old.amount_minor, cutoff)
            t = old.txn
            self._by_ref.drop(t.terminal_id, t.voucher_no, t.rrn, old)
            self._voided_by.drop(t.terminal_id, t.original_voucher_no, t.original_rrn, old)

    # -- queries (rules) -------------------------------------------------------------
    def card_history(self, card: str, since: datetime, until: datetime | None = None) -> Iterator[TxnView]:
        """Transactions on this masked card (or a compatible mask of it) in [since, until], oldest first."""
        for v in _views(self._by_tail, card_tail(card)):
            if v.utc >= since and (until is None or v.utc <= until) and same_card(v.card, card):
                yield v

    def same_amount(self, amount_minor: int, since: datetime, until: datetime) -> Iterator[TxnView]:
        """Transactions of exactly this amount in [since, until], oldest first."""
        for v in _views(self._by_amount, amount_minor):
            if since <= v.utc <= until:
                yield v

    def by_reference(self, *, terminal_id: str | None, voucher_no: str | None = None,
                     rrn: str | None = None) -> TxnView | None:
        """The first transaction seen with this voucher (on this terminal) or this RRN."""
        return self._by_ref.get(terminal_id, voucher_no, rrn)

    def voided_by(self, view: TxnView) -> TxnView | None:
        """The approved void/reversal/refund that names this transaction as its original, if seen."""
        t = view.txn
        return self._voided_by.get(t.terminal_id, t.voucher_no, t.rrn)

    def other_charges(self, view: TxnView, since: datetime, until: datetime) -> list[TxnView]:
        """The approved charges on ``view``'s card in [since, until], other than ``view``, that no void,
        reversal or refund names: what the card-history rules compare a charge with. Oldest first."""
        if not view.card:
            return []
        return [v for v in self.card_history(view.card, since, until)
                if v.key != view.key and is_charge(v) and self.voided_by(v) is None]

    def note_insufficient(self, rule_id: str) -> None:
        self.insufficient[rule_id] += 1

    def conflicting_sighting(self, obs: Observation) -> None:
        """A sighting that disagrees with its transaction (DUP-002's conflicts), before the rules run on it:
        nothing to do here (the view held is the one observed); the journal-backed state must keep that view,
        as the journal's row may now show another card."""

    @contextmanager
    def warming(self, since: datetime) -> Iterator[None]:
        """The pipeline observing what the journal holds since ``since`` after a (re)start (nothing to do here;
        the journal-backed state, agent/rules/lookback.py, notes where its warm-up ends)."""
        yield

    def resident(self) -> int:
        """Views held in this process's memory: all of them here."""
        return len(self._recent)

    def __len__(self) -> int:
        return len(self._recent)


def _insert(dq: deque[TxnView] | list[TxnView], view: TxnView) -> None:
    """Keep time order (prune pops from the left); a late report is rare and lands near the end."""
    if not dq or dq[-1].utc <= view.utc:
        dq.append(view)
        return
    i = len(dq) - 1
    while i > 0 and dq[i - 1].utc > view.utc:
        i -= 1
    dq.insert(i, view)


def _add(index: dict[K, Entry], key: K, view: TxnView) -> None:
    held = index.get(key)
    if held is None:
        index[key] = view
    elif isinstance(held, list):
        _insert(held, view)
    else:
        pair = [held]
        _insert(pair, view)
        index[key] = pair


def _views(index: dict[K, Entry], key: K) -> Sequence[TxnView]:
    held = index.get(key)
    if held is None:
        return ()
    return held if isinstance(held, list) else (held,)


def _trim(index: dict[K, Entry], key: K, cutoff: datetime) -> None:
    views = index.get(key)
    if views is None:
        return
    if not isinstance(views, list):
        if views.utc < cutoff:
            del index[key]
        return
    old = 0
    while old < len(views) and views[old].utc < cutoff:
        old += 1
    if old == len(views):
        del index[key]
    elif old == len(views) - 1:
        index[key] = views[-1]   # back to a single view
    elif old:
        del views[:old]   # all of this key's old views at once: later calls for the key find none


class SaleAmounts:
    """Approved sales inside the baseline window, kept as they arrive, with the baseline's running
    aggregates (:class:`~agent.rules.baseline.RunningBaseline`) updated as each enters and leaves it.

    What the baseline refresh reads in place of re-reading and re-walking the window's amounts every time
    (replay refreshed a month of amounts from SQLite, then walked them all, once a simulated day: issue 20).
    The window is [since, until] as the journal's query bounds it; it only moves forward: a start earlier
    than one already asked for is read as that one, and a sale reported later than the start the window
    has passed is dropped (no refresh could count it again). Bounded by the window.
    """

    def __init__(self, window: timedelta, pairs: Iterable[tuple[datetime, int]] = (),
                 tz: tzinfo | None = None) -> None:
        self.window = window
        self.running = RunningBaseline(tz)
        # (instant, amount, hour bin, local day): placed once, when the sale arrives, and handed back when it leaves.
        self._pairs: deque[tuple[datetime, int, int, date]] = deque(
            (at, amount, *self.running.place(at)) for at, amount in sorted(pairs, key=lambda p: p[0]))
        self._floor: datetime | None = None   # the earliest window start asked for so far (never goes back)
        self._upto: datetime | None = None    # the aggregates hold the pairs in [floor, upto]
        self._held = 0                        # how many pairs that is (amounts <= 0 included, as the journal's)

    def add(self, at: datetime, amount_minor: int) -> None:
        if self._floor is not None and at < self._floor:
            return
        entry = (at, amount_minor, *self.running.place(at))
        pairs = self._pairs
        if not pairs or pairs[-1][0] <= at:
            pairs.append(entry)
        else:   # a late report: rare, lands near the end
            i = len(pairs) - 1
            while i > 0 and pairs[i - 1][0] > at:
                i -= 1
            pairs.insert(i, entry)
        if self._upto is not None and at <= self._upto:
            self._enter(entry)

    def _enter(self, entry: tuple[datetime, int, int, date]) -> None:
        self.running.enter(entry[1], entry[2], entry[3])
        self._held += 1

    def _leave(self, entry: tuple[datetime, int, int, date]) -> None:
        self.running.leave(entry[1], entry[2], entry[3])
        self._held -= 1

    def _move(self, since: datetime, until: datetime) -> None:
        """Bring the aggregates to the pairs in [since, until]: O(pairs that entered or left)."""
        pairs, upto = self._pairs, self._upto
        if upto is None:
            for entry in pairs:
                if entry[0] > until:
                    break
                self._enter(entry)
        elif until > upto:
            for entry in reversed(pairs):
                if entry[0] <= upto:
                    break
                if entry[0] <= until:
                    self._enter(entry)
        elif until < upto:
            for entry in reversed(pairs):
                if entry[0] <= until:
                    break
                if entry[0] <= upto:
                    self._leave(entry)
        self._upto = until
        if self._floor is None or since > self._floor:
            self._floor = since
            while pairs and pairs[0][0] < since:
                entry = pairs.popleft()
                if entry[0] <= until:
                    self._leave(entry)

    def pairs(self, since: datetime, until: datetime) -> list[tuple[datetime, int]]:
        """The (instant, amount) pairs in the window [since, until]."""
        self._move(since, until)
        return [(p[0], p[1]) for p in self._pairs if p[0] <= until]

    def baseline(self, since: datetime, until: datetime) -> tuple[AmountBaseline | None, int]:
        """The baseline of the window [since, until] computed at ``until`` (what ``AmountBaseline.compute``
        gives on :meth:`pairs`), and how many pairs the window holds."""
        self._move(since, until)
        return self.running.baseline(until), self._held

    def __len__(self) -> int:
        return len(self._pairs)
