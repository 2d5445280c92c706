"""The till's sales matched against the terminal's charges (issue 17): know instead of guess.

Where settleguard sees both sides of the counter — the till's own sale (an ``order``: a printed 小票 read
by a ``sales_receipt`` template, or a till's JSON line) and the terminal's charge — each card or QR
tender of a sale is paired with one approved charge of the same amount within ``[match] window`` of it,
whichever arrived first (the receipt prints before or after the charge) and one charge per tender (a
split tender is several). A charge nothing pairs with waits ``[match] grace`` on the pipeline's clock,
then counts as exactly one of (agent/rules/match.py):

* MATCH-002: a tender of its amount was already paid by another charge (a second charge for one sale);
* MATCH-001: a sale's card/QR tender within the window is still unpaid at another amount (the wrong
  amount was keyed: 680.00 or 86.00 for 68.00); the tender stays open for the corrected charge;
* MATCH-003: no sale at all.

The statistical rules stand down for a charge the till accounts for: AMT-001/AMT-002 (is this amount
odd?) and DUP-001/DUP-003 (is this the same sale twice?) are questions a matched sale answers. Their
findings on a new charge are held, never opened, while the charge waits: dropped when it is paired with
a sale's tender of its exact amount, carried in the MATCH finding's ``also_matched`` when it is not (one
alert per charge), and opened as before only if that MATCH rule is disabled. Holding rather than opening
and then superseding means staff never get an alert that is retracted two minutes later; the cost is
that on a till with matching these alerts come after the grace. A restart forgets held findings (the
MATCH finding then carries no ``also_matched``).

:class:`Matcher` is pure: no clock, no journal; it is handed orders, charges, voids and "now".
:class:`TillMatching` is the pipeline's side: it journals orders and the verdicts (agent/store/orders.py)
and opens the findings through the alert book.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from agent.alerts.book import AlertBook
from agent.config import MatchConfig
from agent.ecr_link import FORGET_AFTER, EcrLinks, LateAnswer
from agent.model import new_ulid
from agent.rules.base import Finding, TxnView, is_charge
from agent.rules.match import ApprovedAfterGivingUp, ChargeDiffersFromSale, ChargeWithoutSale, SecondChargeForSale
from agent.store.ecr import EcrStore
from agent.store.orders import OrderStore
from drivers.events import ELECTRONIC_METHODS, EcrRequest, Order, Transaction

# The statistical rules a sale matched to its charge answers for certain.
STAND_DOWN = frozenset({"AMT-001", "AMT-002", "DUP-001", "DUP-003"})

# What matching concluded about a charge (the journal's order_matches.outcome).
MATCHED, MISMATCH, DUPLICATE, NO_SALE, VOIDED = "match", "mismatch", "duplicate", "no_sale", "voided"
# Approved after the till gave up on its request (MATCH-004, agent/ecr_link.py).
AFTER_GIVING_UP = "after_giving_up"
# How long a charge MATCH-004 flagged keeps a retry's DUP finding quiet (the DUP rules' longest window).
FORGET_LATE = timedelta(hours=2)


@dataclass(eq=False)
class _Order:
    id: int
    order_no: str | None
    utc: datetime
    total_minor: int
    tenders: list[_Tender] = field(default_factory=list)


@dataclass(eq=False)
class _Tender:
    order: _Order
    index: int
    method: str
    amount_minor: int
    paid_by: str | None = None                      # the charge matched to it (its key)
    misses: list[str] = field(default_factory=list)  # charges judged the wrong amount for it


@dataclass(eq=False)
class _Charge:
    view: TxnView
    arrived: datetime                                # on the pipeline's clock: the grace runs from here
    held: list[Finding] = field(default_factory=list)
    verdict: str | None = None
    tender: _Tender | None = None
    until: datetime | None = None                    # judged then, not at arrived + grace (see _judge)
    late: LateAnswer | None = None                   # approved after the till gave up (MATCH-004)


@dataclass
class Outcome:
    """What the pipeline does with a step: verdicts to journal, findings to open."""

    verdicts: list[tuple[str, int | None, int | None, str]] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)


class Matcher:
    def __init__(self, config: MatchConfig, rule_params: Mapping[str, Any]) -> None:
        self.config = config
        self.window, self.grace, self.duplicates = config.window, config.grace, config.duplicate_window
        # How long orders and decided charges are kept: a late second charge is looked for this far back.
        self.keep = self.duplicates + self.window + self.grace
        self.r001 = _rule(ChargeDiffersFromSale, rule_params)
        self.r002 = _rule(SecondChargeForSale, rule_params)
        self.r003 = _rule(ChargeWithoutSale, rule_params)
        self.r004 = _rule(ApprovedAfterGivingUp, rule_params)
        self.orders: list[_Order] = []
        self.charges: dict[str, _Charge] = {}

    # -- what arrives ---------------------------------------------------------------------------
    def add_order(self, order_id: int, order: Order, utc: datetime) -> Outcome:
        o = _Order(order_id, order.order_no, utc, order.total_minor)
        o.tenders = [_Tender(o, i, t.method, t.amount_minor) for i, t in enumerate(order.tenders)]
        self.orders.append(o)
        out = Outcome()
        for tender in o.tenders:
            if tender.method in ELECTRONIC_METHODS:
                self._pay_from_waiting(tender, out)
        return out

    def add_charge(self, view: TxnView, findings: list[Finding], now: datetime,
                   late: LateAnswer | None = None) -> Outcome:
        """A new transaction's findings, less those held for matching; the charge matched if it can be.

        A ``late`` charge (approved after the till gave up) pays no sale while it waits: the till's sale
        belongs to the retry the cashier made, if one comes (see :meth:`_judge_late`)."""
        if not is_charge(view) or view.key in self.charges:
            return Outcome(findings=findings)
        held = [f for f in findings if f.rule in STAND_DOWN and f.subject.key == view.key]
        charge = _Charge(view, now, held, late=late)
        self.charges[view.key] = charge
        out = Outcome(findings=[f for f in findings if f not in held])
        tender = self._exact(charge) if late is None else None
        if tender is not None:
            self._pay(tender, charge, out)
        return out

    def returned(self, txn: Transaction) -> Outcome:
        """A void or reversal on the wire: the charge it takes back no longer pays its tender."""
        out = Outcome()
        for charge in self.charges.values():
            t = charge.view.txn
            if charge.verdict == VOIDED or (txn.terminal_id and t.terminal_id and txn.terminal_id != t.terminal_id):
                continue
            if not ((txn.original_voucher_no and txn.original_voucher_no == t.voucher_no)
                    or (txn.original_rrn and txn.original_rrn == t.rrn)):
                continue
            tender = charge.tender
            charge.verdict, charge.held = VOIDED, []
            out.verdicts.append((charge.view.key, None, None, VOIDED))
            if tender is not None and tender.paid_by == charge.view.key:
                tender.paid_by = None
                self._pay_from_waiting(tender, out)
            break
        return out

    # -- the grace ------------------------------------------------------------------------------
    def _due_at(self, charge: _Charge) -> datetime:
        return charge.until or charge.arrived + self.grace

    def next_due(self) -> datetime | None:
        waiting = [self._due_at(c) for c in self.charges.values() if c.verdict is None]
        return min(waiting) if waiting else None

    def due(self, now: datetime) -> Outcome:
        """Charges whose grace is over, judged; then what left the horizon forgotten."""
        out = Outcome()
        for charge in sorted(self.charges.values(), key=lambda c: c.arrived):
            if charge.verdict is None and self._due_at(charge) <= now:
                self._judge(charge, out, now)
        self._prune(now)
        return out

    def _judge(self, charge: _Charge, out: Outcome, now: datetime) -> None:
        view = charge.view
        also = sorted({f.rule for f in charge.held})
        if charge.late is not None:
            self._judge_late(charge, charge.late, out, also)
            return
        tender = self._exact(charge)
        if tender is not None:
            self._pay(tender, charge, out)
            return
        # A sale printed less than a grace ago may still get its own charge (a 小票 printed before the
        # charge): this charge is no evidence against it yet. Judge again once that sale had its grace.
        unpaid = [t for t in self._tenders(charge, self.window) if t.paid_by is None and not t.misses
                  and not self._nearer_rival(t, charge, now)]
        fresh = [t for t in unpaid if t.order.utc + self.grace > now]
        # A sale whose grace is over and that no charge paid is what a mistyped charge leaves behind: that
        # comes before "charged twice" (a mistyped amount often equals another sale's, paid minutes ago).
        # The one exception: the same card already paid a sale of exactly this amount (a second charge).
        settled = [t for t in unpaid if t not in fresh]
        first = self._paid_twice(charge)
        twice = first is not None and _same_card(first[1].view, view)
        if settled and not twice:
            self._mismatch(charge, min(settled, key=lambda t: _rank(t, view)), out, also)
            return
        if fresh and not twice:
            charge.until = max(t.order.utc for t in fresh) + self.grace
            return
        if first is not None:
            tender, earlier = first
            self._decide(charge, DUPLICATE, tender, out, self.r002 and self.r002.found(
                view, earlier.view, order_no=tender.order.order_no, also=also))
            return
        tender = self._unpaid_nearby(charge)
        if tender is not None:
            self._mismatch(charge, tender, out, also)
            return
        self._decide(charge, NO_SALE, None, out, self.r003 and self.r003.found(
            view, grace_seconds=int(self.grace.total_seconds()), also=also))

    def _judge_late(self, charge: _Charge, late: LateAnswer, out: Outcome, also: list[str]) -> None:
        """A charge approved after the till gave up, at the end of its grace. The till recorded it when a sale
        of its amount is still unpaid (no retry paid it): then it is that sale's payment and nothing is wrong.
        Otherwise it is the extra charge (MATCH-004: void it), whether the retry paid the sale or no sale
        was recorded at all (the till shows it failed)."""
        tender = self._exact(charge)
        if tender is not None:
            self._pay(tender, charge, out)
            return
        retry = self._retry_of(charge)
        self._decide(charge, AFTER_GIVING_UP, retry.tender if retry else None, out, self.r004 and self.r004.found(
            charge.view, how=late.how, asked_minor=late.request.amount_minor, gave_up_seconds=late.gave_up_seconds,
            late_seconds=late.late_seconds, retry=retry.view if retry else None,
            request_id=late.request.request_id, also=also))

    def _retry_of(self, late: _Charge) -> _Charge | None:
        """The cashier's retry: a later charge of the same amount that paid a sale."""
        later = [c for c in self.charges.values() if c is not late and c.verdict == MATCHED and c.late is None
                 and c.view.amount_minor == late.view.amount_minor and c.view.utc >= late.view.utc
                 and c.view.utc - late.view.utc <= self.duplicates]
        return min(later, key=lambda c: c.view.utc) if later else None

    def _nearer_rival(self, tender: _Tender, charge: _Charge, now: datetime) -> bool:
        """Another charge judged now is nearer in time to this unpaid sale: it has the better claim to be
        that sale's mistyped charge (this one is judged without the sale)."""
        gap = abs(tender.order.utc - charge.view.utc)
        return any(c is not charge and c.verdict is None and self._due_at(c) <= now
                   and abs(tender.order.utc - c.view.utc) < gap for c in self.charges.values())

    def _mismatch(self, charge: _Charge, tender: _Tender, out: Outcome, also: list[str]) -> None:
        view = charge.view
        tender.misses.append(view.key)
        gap = int(abs((tender.order.utc - view.utc).total_seconds()))
        self._decide(charge, MISMATCH, tender, out, self.r001 and self.r001.found(
            view, intended_minor=tender.amount_minor, method=tender.method, order_no=tender.order.order_no,
            order_total_minor=tender.order.total_minor, seconds_apart=gap, also=also))

    def _decide(self, charge: _Charge, verdict: str, tender: _Tender | None, out: Outcome,
                finding: Finding | None) -> None:
        charge.verdict, charge.tender = verdict, tender
        out.verdicts.append((charge.view.key, tender.order.id if tender else None,
                             tender.index if tender else None, verdict))
        # The MATCH rule disabled: the held statistical findings speak as they would without a till.
        out.findings.extend([finding] if finding is not None else charge.held)
        charge.held = []

    # -- pairing --------------------------------------------------------------------------------
    def _pay(self, tender: _Tender, charge: _Charge, out: Outcome) -> None:
        tender.paid_by = charge.view.key
        charge.verdict, charge.tender, charge.held = MATCHED, tender, []   # the statistical rules stand down
        out.verdicts.append((charge.view.key, tender.order.id, tender.index, MATCHED))

    def _pay_from_waiting(self, tender: _Tender, out: Outcome) -> None:
        waiting = [c for c in self.charges.values() if c.verdict is None and c.view.amount_minor == tender.amount_minor
                   and abs(c.view.utc - tender.order.utc) <= self.window and c.late is None]
        if waiting:
            best = min(waiting, key=lambda c: _rank(tender, c.view))
            # The same card charged this amount twice while the sale waited: the first charge pays it and
            # the later one is the duplicate (MATCH-002 names the second charge, the one to void).
            same = [c for c in waiting if _same_card(c.view, best.view)]
            self._pay(tender, min(same or [best], key=lambda c: c.view.utc), out)

    def _tenders(self, charge: _Charge, reach: timedelta) -> Iterable[_Tender]:
        utc = charge.view.utc
        for order in self.orders:
            if abs(order.utc - utc) <= reach:
                for tender in order.tenders:
                    if tender.method in ELECTRONIC_METHODS:
                        yield tender

    def _exact(self, charge: _Charge) -> _Tender | None:
        fits = [t for t in self._tenders(charge, self.window)
                if t.paid_by is None and t.amount_minor == charge.view.amount_minor]
        return min(fits, key=lambda t: _rank(t, charge.view)) if fits else None

    def _paid_twice(self, charge: _Charge) -> tuple[_Tender, _Charge] | None:
        fits = []
        for t in self._tenders(charge, self.duplicates):
            first = self.charges.get(t.paid_by) if t.paid_by else None
            if first is not None and first.verdict == MATCHED and t.amount_minor == charge.view.amount_minor:
                fits.append((t, first))
        return min(fits, key=lambda f: _rank(f[0], charge.view)) if fits else None

    def _unpaid_nearby(self, charge: _Charge) -> _Tender | None:
        fits = [t for t in self._tenders(charge, self.window) if t.paid_by is None]
        # A tender already judged against another wrong charge comes last: two slips on one sale are rarer
        # than two sales close together.
        return min(fits, key=lambda t: (bool(t.misses), *_rank(t, charge.view))) if fits else None

    def _prune(self, now: datetime) -> None:
        horizon = now - self.keep
        self.orders = [o for o in self.orders if o.utc >= horizon]
        for key in [k for k, c in self.charges.items() if c.verdict is not None and c.view.utc < horizon]:
            del self.charges[key]

    # -- after a restart ------------------------------------------------------------------------
    def warm(self, orders: Iterable[tuple[int, Order, datetime]], charges: Iterable[tuple[TxnView, datetime]],
             verdicts: Iterable[tuple[str, int | None, int | None, str]]) -> None:
        """Rebuild from the journal: orders and charges in the horizon, and the verdicts already reached."""
        by_id: dict[int, _Order] = {}
        for order_id, order, utc in orders:
            self.add_order(order_id, order, utc)   # nothing waits yet, so this only builds the tenders
            by_id[order_id] = self.orders[-1]
        for view, arrived in charges:
            if is_charge(view):
                self.charges[view.key] = _Charge(view, arrived)
        for key, found_in, index, outcome in verdicts:
            charge = self.charges.get(key)
            if charge is None:
                continue
            o = by_id.get(found_in) if found_in is not None else None
            tender = o.tenders[index] if o is not None and index is not None and index < len(o.tenders) else None
            charge.verdict, charge.tender = outcome, tender
            if tender is not None and outcome == MATCHED:
                tender.paid_by = key
            elif tender is not None and outcome == MISMATCH:
                tender.misses.append(key)


def _same_card(a: TxnView, b: TxnView) -> bool:
    return a.txn.card is not None and a.txn.card == b.txn.card


def _rank(tender: _Tender, charge: TxnView) -> tuple[int, float]:
    """Prefer the tender of the charge's own method (a QR charge pays a QR tender), then the nearest in time."""
    mode = charge.txn.entry_mode
    other = mode is not None and (mode == "qr") != (tender.method == "qr")
    return (1 if other else 0, abs((tender.order.utc - charge.utc).total_seconds()))


def _rule(cls: Any, params: Mapping[str, Any]) -> Any:
    p = params.get(cls.id)
    p = cls.Params() if p is None else p
    return cls(p) if p.enabled else None


class TillMatching:
    """The pipeline's side of matching: orders and verdicts journalled, findings opened as alerts.

    Orders are always journalled; matching runs only when ``[match] sources`` names the till's wires
    (``matcher`` is None otherwise), so a till without one behaves exactly as before. Runs on the
    pipeline thread inside its journal transaction, like everything it writes.
    """

    def __init__(self, config: MatchConfig, rule_params: Mapping[str, Any], store: OrderStore,
                 alerts: AlertBook, links: Mapping[str, str] | None = None) -> None:
        self.sources = frozenset(config.sources)
        self.matcher = Matcher(config, rule_params) if self.sources else None
        self.store = store
        self.alerts = alerts
        # ECR links (MATCH-004): [[source]] name -> its link (agent/ecr_link.py); on whatever [match] sources.
        self.links = dict(links or {})
        self.ecr = EcrLinks(config.till_timeout)
        self.ecr_store = EcrStore(store.conn)
        self.r004 = _rule(ApprovedAfterGivingUp, rule_params)
        self.flagged_late: dict[str, datetime] = {}   # charges MATCH-004 said to void, for a while

    def warm(self, now: datetime, charges: Iterable[tuple[TxnView, datetime]]) -> None:
        charges = list(charges)
        self._warm_links(now, charges)
        if self.matcher is None:
            return
        since = now - self.matcher.keep
        # Only charges that arrived inside the horizon: older ones (or ones from before matching was
        # switched on) are never judged after the fact.
        views = [(v, arrived) for v, arrived in charges if is_charge(v) and arrived >= since]
        verdicts = self.store.verdicts(v.key for v, _ in views)
        self.matcher.warm(((o.id, o.order, o.utc) for o in self.store.recent(since)), views,
                          ((v.txn_key, v.order_id, v.tender, v.outcome) for v in verdicts))

    def _warm_links(self, now: datetime, charges: list[tuple[TxnView, datetime]]) -> None:
        """After a restart: the till's requests of the last FORGET_AFTER still waiting for their answer.

        Each link gets its stored requests in order; one is answered by a charge received with or after it
        of its amount (any charge when it named none): a fast terminal's approval often arrives in the same
        read as the request, so both carry one received time. The journal keeps no source per charge here,
        so with several links a charge may close the wrong one's request: a missed MATCH-004, never a false
        one.
        """
        for link, request, received in self.ecr_store.recent(now - FORGET_AFTER):
            self.ecr.request(link, request, received)
        for link, current in list(self.ecr.last.items()):
            if any(arrived >= current.asked and current.amount_minor in (None, view.txn.amount_minor)
                   for view, arrived in charges):
                del self.ecr.last[link]

    def order(self, order: Order, *, source: str, received: datetime, now: datetime) -> None:
        utc = (order.time or received).astimezone(UTC)
        key = (f"o:{source}:{order.order_no}" if order.order_no
               else f"o:{source}:{utc.isoformat()}:{order.total_minor}:{new_ulid(now)}")
        stored, is_new = self.store.add(order, key=key, instant=utc, received=received, source=source)
        if is_new and self.matcher is not None and source in self.sources:
            self._apply(self.matcher.add_order(stored.id, order, utc), now)

    def charge(self, view: TxnView, findings: list[Finding], now: datetime, *, source: str | None = None,
               received: datetime | None = None) -> list[Finding]:
        """The findings to open now for a new transaction (the statistical ones may be held)."""
        late = self._late(view, source, received or now)
        # The cashier's retry after a late approval looks like a duplicate of it; MATCH-004 already said which
        # of the two to void (the late one), so a DUP finding pairing the retry with it would say the opposite.
        findings = [f for f in findings if not (f.family == "DUP" and f.subject.key == view.key
                                                and any(r.key in self.flagged_late for r in f.related))]
        if self.matcher is None:
            if late is not None and self.r004 is not None:
                self._remember_late(view)
                # No till orders to say whether the till recorded it: the late charge is the extra one. The
                # statistical findings on it ride along (one alert per charge, the surer one).
                also = sorted({f.rule for f in findings if f.subject.key == view.key})
                findings = [f for f in findings if f.subject.key != view.key]
                findings.append(self.r004.found(
                    view, how=late.how, asked_minor=late.request.amount_minor, gave_up_seconds=late.gave_up_seconds,
                    late_seconds=late.late_seconds, request_id=late.request.request_id, also=also))
            return findings
        out = self.matcher.add_charge(view, findings, now, late=late)
        self._apply(Outcome(verdicts=out.verdicts), now)
        return out.findings

    def ecr_request(self, event: EcrRequest, *, source: str, received: datetime) -> None:
        """The till's side of an ECR link: journalled, and the link's state moved."""
        link = self.links.get(source, source)
        self.ecr_store.add(event, link=link, source=source, instant=event.time or received, received=received)
        self.ecr.request(link, event, received)

    def _remember_late(self, view: TxnView) -> None:
        horizon = view.utc - FORGET_LATE
        for key in [k for k, utc in self.flagged_late.items() if utc < horizon]:
            del self.flagged_late[key]
        self.flagged_late[view.key] = view.utc

    def _late(self, view: TxnView, source: str | None, received: datetime) -> LateAnswer | None:
        if source is None or not self.ecr.last:
            return None
        link = self.links.get(source, source)
        late = self.ecr.answer(link, view, received)
        if late is not None:
            inferred = self.ecr.inferred_timeout(late)
            if inferred is not None:   # the timeout settleguard inferred is journalled like the till's own
                self.ecr_store.add(inferred, link=link, source=source, instant=inferred.time or received,
                                   received=received)
        return late

    def returned(self, txn: Transaction, now: datetime) -> None:
        if self.matcher is not None:
            self._apply(self.matcher.returned(txn), now)

    def is_due(self, now: datetime) -> bool:
        due = self.matcher.next_due() if self.matcher is not None else None
        return due is not None and due <= now

    def due(self, now: datetime) -> None:
        if self.matcher is not None:
            self._apply(self.matcher.due(now), now)

    def _apply(self, out: Outcome, now: datetime) -> None:
        for finding in out.findings:
            if finding.rule == ApprovedAfterGivingUp.id:
                self._remember_late(finding.subject)
        for key, order_id, tender, outcome in out.verdicts:
            self.store.set_verdict(key, order_id=order_id, tender=tender, outcome=outcome, at=now)
        for finding in out.findings:
            self.alerts.open(finding, now)
