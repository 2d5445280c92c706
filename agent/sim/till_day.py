"""A labelled shop day on both wires: the terminal's charges and the till's own sales (issue 17).

The till prints every sale (an :class:`~drivers.events.Order`: its order number, total and tenders);
the terminal charges its card and QR tenders. The shop is a :class:`~agent.sim.shops.ShopProfile`
with a :class:`~agent.sim.shops.TillSide`:

* card, QR, cash and split sales (card + cash, card + QR, QR + cash);
* integrated (ECR) sales: the till sends the amount, so it cannot be mistyped, and the receipt prints
  a few seconds after the approval;
* standalone sales: the cashier keys the amount; the receipt prints before the charge (20-100 s) or
  after it (10-60 s after the last part, and within 100 s of the first). Receipt and charge are
  always less than the default ``[match] grace`` of 2 minutes apart: a shop whose receipts print
  further from the charge needs a longer grace (agent/match.py waits a grace on both sides);
* declines (most retried on the same card, the rest paid in cash) and mistyped charges voided and
  charged again, which must not alert.

Labels of the true findings the till side can see (on the charge): ``wrong_amount`` (any typo of the
sale's card tender: an extra or missing zero, two digits swapped, a neighbouring key, a digit doubled
or dropped), ``dup_charge`` (a second charge for one sale, 20 s to 25 min later, on the same card or
another one) and ``no_sale`` (a charge the till never rang up). The statistical anomalies of
:mod:`agent.sim.day` that are not about the till (off hours, an unmatched refund, velocity, manual
entry, sales on a closed day) are injected too, each rung up on the till like any sale.

Integrated sales show the till's side of the ECR link too (``ecr_request`` events, on the terminal's
wire as a tap of both directions sees them): the request with its amount a few seconds before the
terminal answers. Now and then (``ECR_GIVE_UP_SHARE`` of integrated charges, on clean days as well)
the terminal is slow, the till gives up (it aborts on the wire, or its software logs ``timed_out``),
the terminal then declines and the cashier asks again: an ordinary retry that must not alert. The
labelled case, ``after_abort`` (MATCH-004): the terminal approves *after* the till gave up, the till
shows "failed", the cashier asks again and the customer pays twice; the till's receipt follows the
retry, so the late charge is the one to void.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from datetime import date, datetime, time, timedelta, tzinfo
from zoneinfo import ZoneInfo

from agent.model import Transaction
from agent.sim.day import DayBuilder, SimEvent, _off_hours_times, regular_cards
from agent.sim.shops import ShopProfile, TillSide
from drivers.events import EcrRequest, Order, Tender

TILL_SOURCE = "till"
TILL_LABELS = ("wrong_amount", "dup_charge", "no_sale", "after_abort")
# Integrated charges where the till gives up before the terminal answers (a slow PIN, a lost line) and the
# terminal then declines: the cashier simply asks again. A shop sees a few a week.
ECR_GIVE_UP_SHARE = 0.02
# How long the till waits for the terminal before it gives up (ZVT tills typically 60-120 s).
ECR_TILL_WAITS = (60, 120)
_HINT = {"card": "银行卡", "cash": "现金"}
_WALLETS = ("微信支付", "支付宝")

# Keys next to each other on a terminal's PIN pad (3x3 plus 0 under 8).
_NEIGHBOURS = {"0": "8", "1": "24", "2": "135", "3": "26", "4": "157", "5": "2468", "6": "359", "7": "48",
               "8": "5790", "9": "68"}


def typo(amount_minor: int, rng: random.Random) -> int:
    """A plausible keying error on ``amount_minor``, never equal to it and never zero."""
    yuan, fen = divmod(amount_minor, 100)
    digits = str(yuan)
    options: list[int] = [amount_minor * 10, amount_minor * 100]
    if amount_minor % 1000 == 0 and amount_minor >= 1000:
        options.append(amount_minor // 10)           # a zero left out
    for i in range(len(digits) - 1):                 # two digits swapped: 86.00 for 68.00
        swapped = digits[:i] + digits[i + 1] + digits[i] + digits[i + 2:]
        options.append(int(swapped) * 100 + fen)
    for i, d in enumerate(digits):                   # a neighbouring key
        for n in _NEIGHBOURS[d]:
            options.append(int(digits[:i] + n + digits[i + 1:]) * 100 + fen)
        options.append(int(digits[:i] + d + digits[i:]) * 100 + fen)   # a digit pressed twice
        if len(digits) > 1:
            options.append(int((digits[:i] + digits[i + 1:]) or "0") * 100 + fen)   # a digit missed
    options = [o for o in options if o != amount_minor and o > 0]
    return rng.choice(options)


@dataclass(slots=True)
class TillDay:
    """Builds one day on both wires on top of :class:`agent.sim.day.DayBuilder` (the terminal side)."""

    b: DayBuilder
    side: TillSide
    seq: int = 0

    @property
    def rng(self) -> random.Random:
        return self.b.rng

    def order(self, when: datetime, tenders: list[tuple[str, int]]) -> Order:
        self.seq += 1
        parts = tuple(Tender(m, a, _HINT.get(m) or self.rng.choice(_WALLETS)) for m, a in tenders)
        o = Order(source=TILL_SOURCE, time=when.replace(microsecond=0), total_minor=sum(a for _, a in tenders),
                  order_no=f"{self.b.day:%m%d}{self.seq:04d}", currency=self.b.shop.currency, tenders=parts)
        self.b.events.append(SimEvent(when, o))
        return o

    def request(self, when: datetime, amount: int, state: str = "requested") -> None:
        """The till's side of the ECR link (on the terminal's wire: a tap of both directions)."""
        self.b.events.append(SimEvent(when, EcrRequest(source="sim", time=when.replace(microsecond=0), state=state,
                                                       kind="sale" if state == "requested" else None,
                                                       amount_minor=amount, currency=self.b.shop.currency)))

    def gives_up(self, asked: datetime, amount: int) -> datetime:
        """The till gives up on its request (abort on the wire, or its software logs a timeout); when."""
        when = asked + timedelta(seconds=self.rng.randrange(*ECR_TILL_WAITS))
        self.request(when, amount, self.rng.choice(("aborted", "timed_out")))
        return when

    def charge(self, when: datetime, method: str, amount: int, *, card: str | None = None,
               label: str | None = None, entry_mode: str | None = None, result: str = "approved") -> Transaction:
        if method == "qr":
            txn = self.b.sale(when, amount=amount, label=label, entry_mode="qr", card="0", result=result)
            txn = txn.with_(card=None, card_type=None)   # a wallet's QR code carries no card number
            self.b.events[-1] = replace(self.b.events[-1], event=txn)
            return txn
        return self.b.sale(when, amount=amount, card=card, label=label, result=result,
                           entry_mode=entry_mode or self.rng.choice(("chip", "chip", "contactless", "swipe")))

    def tenders(self, amount: int) -> list[tuple[str, int]]:
        rng, side = self.rng, self.side
        r = rng.random()
        if r < side.card_share:
            return [("card", amount)]
        r -= side.card_share
        if r < side.qr_share:
            return [("qr", amount)]
        r -= side.qr_share
        if r < side.split_share and amount >= 2000:
            first = max(100, round(amount * rng.uniform(0.2, 0.8) / 100) * 100)
            if first < amount:
                a, b = rng.choice((("card", "cash"), ("card", "qr"), ("qr", "cash")))
                return [(a, first), (b, amount - first)]
        return [("cash", amount)]

    def customer(self, when: datetime, label: str | None = None, *, tenders: list[tuple[str, int]] | None = None,
                 wrong: bool = False, standalone: bool = False, entry_mode: str | None = None,
                 card: str | None = None) -> list[Transaction]:
        """One sale: its charges on the terminal and its receipt on the till. ``wrong``: the card part is
        keyed with a typo and nobody notices (labelled ``wrong_amount``). Returns the approved charges."""
        b, rng, side, shop = self.b, self.rng, self.side, self.b.shop
        # Declines and corrections happen to ordinary sales; an injected finding stays exactly what it is.
        ordinary = label is None and not wrong
        parts = tenders or self.tenders(b.amount())
        electronic = [(m, a) for m, a in parts if m in ("card", "qr")]
        if not electronic:
            self.order(when, parts)
            return []
        integrated = not (standalone or wrong) and rng.random() < side.integrated_share
        before = not integrated and rng.random() < side.receipt_before_share
        t = when
        if before:
            order_at = when
            t = when + timedelta(seconds=rng.randrange(20, 100))
        paid: list[tuple[str, int]] = [p for p in parts if p[0] not in ("card", "qr")]
        approved: list[Transaction] = []
        first_charge = t
        for i, (method, amount) in enumerate(electronic):
            if i:
                t += timedelta(seconds=rng.randrange(10, 40))
            the_card = card or (b.card() if method == "card" else None)
            if integrated:
                asked = t - timedelta(seconds=rng.randrange(5, 30))
                self.request(asked, amount)
                if ordinary and rng.random() < ECR_GIVE_UP_SHARE:
                    # The till gave up first and the terminal declined: asked again, nothing to find.
                    declined = self.gives_up(asked, amount) + timedelta(seconds=rng.randrange(2, 20))
                    self.charge(declined, method, amount, card=the_card, label=label, result="declined")
                    asked = declined + timedelta(seconds=rng.randrange(10, 40))
                    self.request(asked, amount)
                    t = asked + timedelta(seconds=rng.randrange(5, 30))
            if method == "card" and ordinary and shop.decline_rate and rng.random() < shop.decline_rate:
                self.charge(t, "card", amount, card=the_card, label=label, result="declined")
                if rng.random() >= 0.7:        # gave up on the card: paid in cash
                    paid.append(("cash", amount))
                    continue
                t += timedelta(seconds=rng.randrange(20, 60))
                if integrated:
                    self.request(t - timedelta(seconds=rng.randrange(5, 15)), amount)
            elif method == "card" and not integrated and ordinary and shop.void_rate and rng.random() < shop.void_rate:
                # Keyed wrong, seen at once, voided and charged again: a correction, not a finding.
                bad = self.charge(t, "card", typo(amount, rng), card=the_card, label=label)
                t += timedelta(seconds=rng.randrange(30, 90))
                b.sale(t, kind="void", card=the_card, amount=bad.amount_minor, original=bad, label=label)
                t += timedelta(seconds=rng.randrange(10, 30))
            charged = typo(amount, rng) if wrong and method == "card" else amount
            approved.append(self.charge(t, method, charged, card=the_card, entry_mode=entry_mode,
                                        label="wrong_amount" if wrong and method == "card" else label))
            paid.append((method, amount))
        if not before:
            # The till prints once the terminal approved: at once on an ECR link, when the cashier is done
            # otherwise (never more than 100 s after the first charge: see the module's docstring).
            delay = rng.randrange(2, 15) if integrated else rng.randrange(10, 60)
            order_at = min(t + timedelta(seconds=delay), first_charge + timedelta(seconds=100))
            order_at = max(order_at, t + timedelta(seconds=1))
        self.order(order_at, [p for p in parts if p in paid] + [p for p in paid if p not in parts])
        return approved

    def traffic(self, count: int, label: str | None = None) -> None:
        spans = [(s + 300, e - 300) for s, e in self.b.open_spans()]
        if not spans:
            return
        for _ in range(count):
            self.customer(self.b.at_seconds(self.b._arrival(spans)), label)


def build_till_day(scenario: str = "clean", *, seed: int = 1, day: date | None = None, tz: tzinfo | None = None,
                   count: int | None = None, settle: bool = True, profile: ShopProfile, pool_seed: int = 0,
                   closed_day: date | None = None) -> list[SimEvent]:
    """A day of both wires, time-ordered: ``clean`` (no finding) or ``mixed`` (labelled findings injected).

    ``count`` customers (default the profile's ``per_day``); the events are terminal transactions,
    settlements and the till's orders (``SimEvent.event`` an :class:`Order`).
    """
    if scenario not in ("clean", "mixed"):
        raise ValueError(f"the both-wires day is clean or mixed (got {scenario!r})")
    if profile.till is None:
        raise ValueError(f"shop profile {profile.name} has no till side")
    tz = tz or ZoneInfo("Asia/Shanghai")
    rng = random.Random(seed)
    the_day = day or date(2026, 11, 27)
    closed = closed_day or the_day + timedelta(days=1)
    b = DayBuilder(day=the_day, tz=tz, rng=rng, shop=profile, regulars=regular_cards(profile, pool_seed),
                    closures=(closed,) if scenario == "mixed" else ())
    till = TillDay(b, profile.till)
    n = count if count is not None else profile.per_day
    makeup = b.calendar().is_makeup_workday(the_day) and bool(b.open_spans())
    till.traffic(n, label="makeup_workday" if makeup else None)
    cards = [e for e in b.events if isinstance(e.event, Transaction) and e.event.kind == "sale"
             and e.event.result == "approved" and e.event.card is not None]
    for e in rng.sample(cards, k=min(len(cards), max(3, n // 20))):
        assert isinstance(e.event, Transaction)
        b.reprint(e.event, e.at + timedelta(seconds=rng.randrange(20, 600)))
    if scenario == "mixed" and b.open_spans():
        _inject(till, rng, closed)
    if settle and b.open_spans():
        b.settle(datetime.combine(b.day, time(23, 0, 5), tzinfo=tz))
    return b.sorted_events()


def _inject(till: TillDay, rng: random.Random, closed: date) -> None:
    b = till.b
    spans = b.open_spans()

    def busy_time(margin: int = 1800) -> datetime:
        lo, hi = rng.choices(spans, [e - s for s, e in spans])[0]
        return b.at_seconds(rng.randrange(lo + 600, max(lo + 601, hi - margin)))

    for _ in range(3):
        amount = b.amount()
        till.customer(busy_time(), tenders=[("card", amount)], wrong=True)
    for _ in range(2):
        t0 = busy_time()
        amount = b.amount()
        first = till.customer(t0, tenders=[("card", amount)])
        if not first:       # declined and paid in cash: charge it twice anyway, on a card
            first = [till.charge(t0 + timedelta(seconds=5), "card", amount, card=b.card())]
            till.order(t0 + timedelta(seconds=20), [("card", amount)])
        assert first[0].time is not None
        again = first[0].time + timedelta(seconds=rng.randrange(20, 1500))
        card = first[0].card if rng.random() < 0.7 else b.card(fresh=True)
        till.charge(again, "card", amount, card=card, label="dup_charge")
    for _ in range(2):
        till.charge(busy_time(), rng.choice(("card", "qr")), b.amount(), card=b.card(), label="no_sale")
    def quiet_time(before: int = 60, after: int = 360) -> datetime:
        """A busy time when the terminal is free: an ECR link carries one request at a time, so the
        till's give-up, the late approval and the retry cannot interleave with another card sale."""
        for _ in range(200):
            t = busy_time()
            if not any(t - timedelta(seconds=before) <= e.at <= t + timedelta(seconds=after)
                       for e in b.events if isinstance(e.event, Transaction | EcrRequest)):
                return t
        raise RuntimeError(f"no free six minutes on the terminal on {b.day} (seed a quieter day)")

    for _ in range(2):
        # Approved after the till gave up; the cashier asks again and the retry is what the till records.
        asked, amount, card = quiet_time(), b.amount(), b.card()
        method = rng.choice(("card", "card", "qr"))
        till.request(asked, amount)
        late = till.gives_up(asked, amount) + timedelta(seconds=rng.randrange(2, 40))
        till.charge(late, method, amount, card=card, label="after_abort")
        again = late + timedelta(seconds=rng.randrange(15, 60))
        till.request(again, amount)
        retry = again + timedelta(seconds=rng.randrange(5, 30))
        till.charge(retry, method, amount, card=card if rng.random() < 0.8 else b.card())
        till.order(retry + timedelta(seconds=rng.randrange(2, 15)), [(method, amount)])
    for when in _off_hours_times(b, rng):
        till.customer(when, "off_hours", tenders=[("card", b.amount())], card=b.card(fresh=True))
    b.sale(busy_time(), kind="refund", card=b.card(fresh=True), label="refund_unmatched")
    t0 = busy_time()
    card = b.card(fresh=True)
    for i in range(3):      # three sales on one card within minutes, each rung up and printed at once
        when = t0 + timedelta(seconds=90 * i + rng.randrange(0, 60))
        txn = till.charge(when, "card", b.amount(), card=card, label="velocity" if i == 2 else None)
        till.order(when + timedelta(seconds=rng.randrange(2, 15)), [("card", txn.amount_minor)])
    till.customer(busy_time(), "manual_entry", tenders=[("card", b.amount())], card=b.card(fresh=True),
                  standalone=True, entry_mode="manual")
    for _ in range(2):
        s = rng.randrange(11 * 3600, 17 * 3600)
        when = b.at_seconds(s, closed)
        txn = b.sale(when, label="holiday", card=b.card(fresh=True), batch_no=f"{closed:%y%m%d}")
        till.order(when + timedelta(seconds=rng.randrange(2, 15)), [("card", txn.amount_minor)])
