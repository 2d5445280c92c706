"""A deterministic, labelled shop day: realistic sales plus injected anomalies.

The generator plays the terminal: card numbers are full, Luhn-valid PANs as a
terminal would hold them, so every decoder's masking is exercised on the way
in. Labels say which anomaly each event is, for evaluation (agent.sim.evaluate);
reprints and make-up-workday (调休) sales are labelled too because they must
NOT raise an alert.

The shop being played is a :class:`agent.sim.shops.ShopProfile`.

The ``demo`` scenario (and ``clean`` without a profile, which seeds the demo's
history) keeps the original shop and draws random numbers in the original
order: the demo and its tests depend on those exact events.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, tzinfo
from functools import lru_cache
from itertools import pairwise
from zoneinfo import ZoneInfo

from agent.model import Settlement, Transaction
from agent.rules.calendar import ShopCalendar
from agent.sim.shops import DEMO_SHOP, ShopProfile
from drivers.events import EcrRequest, Order

SCENARIOS = ("demo", "clean", "mixed")
# A customer who pays again the same day comes back later, not within the hour (see DayBuilder.card).
REVISIT_GAP = timedelta(hours=1)

# Labels of injected anomalies: an alert is expected on the labelled transaction.
ANOMALY_LABELS = ("dup_exact", "dup_near", "slip_x10", "slip_x100", "off_hours", "holiday", "refund_unmatched",
                  "velocity", "manual_entry")


@dataclass(frozen=True, slots=True)
class SimEvent:
    at: datetime                       # when the terminal emits it (aware, shop zone)
    event: Transaction | Settlement | Order | EcrRequest   # Order, EcrRequest: a both-wires day (till_day.py)
    label: str | None = None           # anomaly label (dup_exact, slip_x10, ...) or None for normal traffic
    reprint: bool = False              # a second sighting of an earlier transaction


def luhn_complete(prefix: str) -> str:
    """Append the Luhn check digit."""
    total = 0
    for i, ch in enumerate(reversed(prefix)):
        d = int(ch)
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return prefix + str((10 - total % 10) % 10)


@lru_cache(maxsize=64)
def regular_cards(profile: ShopProfile, pool_seed: int) -> tuple[str, ...]:
    """The shop's returning customers: the same cards on every day generated with ``pool_seed``."""
    rng = random.Random(f"{profile.name}:{pool_seed}")
    return tuple(_new_pan(rng, profile) for _ in range(profile.regulars))


def _new_pan(rng: random.Random, profile: ShopProfile) -> str:
    return luhn_complete(rng.choice(profile.bins) + "".join(str(rng.randrange(10)) for _ in range(9)))


@lru_cache(maxsize=64)
def company_cards(profile: ShopProfile, pool_seed: int) -> tuple[str, ...]:
    """The companies that order for groups (banquets, office orders): the same cards every day."""
    rng = random.Random(f"{profile.name}:companies:{pool_seed}")
    n = profile.groups.company_cards if profile.groups is not None else 0
    return tuple(_new_pan(rng, profile) for _ in range(n))


@dataclass(slots=True)
class _Counter:
    voucher: int = 0
    trace: int = 100

    def next(self) -> tuple[str, str]:
        self.voucher += 1
        self.trace += 1
        return f"{self.voucher:06d}", f"{self.trace:06d}"


@dataclass(slots=True)
class DayBuilder:
    day: date
    tz: tzinfo
    rng: random.Random
    shop: ShopProfile = field(default_factory=ShopProfile)
    events: list[SimEvent] = field(default_factory=list)
    counter: _Counter = field(default_factory=_Counter)
    cards: list[str] = field(default_factory=list)
    regulars: tuple[str, ...] = ()
    closures: tuple[date, ...] = ()
    batch_no: str = ""
    companies: tuple[str, ...] = ()
    price_from: date | None = None     # prices rise by the profile's price_rise from this day on
    visits: dict[str, list[datetime]] = field(default_factory=dict)   # when each card paid today

    def __post_init__(self) -> None:
        self.batch_no = self.shop.batch_no or f"{self.day:%y%m%d}"
        if self.shop.batch_no is None and self.counter.voucher == 0:
            # Terminals number vouchers and traces on across batches; restarting daily would make yesterday's
            # void of 000305 look like a void of today's 000305 to anything matching by voucher number.
            start = (self.day.toordinal() % 999) * 1000
            self.counter = _Counter(voucher=start, trace=start)

    def card(self, *, fresh: bool = False, when: datetime | None = None) -> str:
        """A card for a customer paying at ``when``: a regular's, one already seen today, or a new one.

        A returning card is never one that paid within ``REVISIT_GAP`` of ``when``: sales are drawn
        independently, and without this the same regular would now and then pay twice within minutes,
        the very pattern of a duplicate charge, which a customer coming back later in the day is not.
        """
        if not fresh and self.regulars and self.rng.random() < self.shop.regular_share:
            pan = self.rng.choice(self.regulars)
            if self._away(pan, when):
                self.cards.append(pan)
                return pan
        elif self.cards and not fresh and self.rng.random() < self.shop.day_reuse:
            pan = self.rng.choice(self.cards)
            if self._away(pan, when):
                return pan
        pan = _new_pan(self.rng, self.shop)
        self.cards.append(pan)
        return pan

    def _away(self, pan: str, when: datetime | None) -> bool:
        """Whether ``pan`` has not paid within REVISIT_GAP of ``when`` (no time given: any card will do)."""
        return when is None or all(abs(when - t) >= REVISIT_GAP for t in self.visits.get(pan, ()))

    def price(self, list_price: int) -> int:
        """A list price as of this day: raised by the profile's ``price_rise`` from ``price_from`` on."""
        if self.price_from is None or self.day < self.price_from or self.shop.price_rise == 1.0:
            return list_price
        return max(100, round(list_price * self.shop.price_rise / 100) * 100)

    def amount(self) -> int:
        tail = self.shop.tail
        if tail is not None and self.rng.random() < tail.share:
            price = self.price(self.rng.choices([p for p, _ in tail.prices], [w for _, w in tail.prices])[0])
            if self.rng.random() < tail.extras_share:
                price += self._rounded(tail.extras_median_minor, tail.extras_sigma)
            return price
        if self.shop.menu:
            items = self.rng.choices(range(1, len(self.shop.basket) + 1), self.shop.basket)[0]
            prices, weights = [p for p, _ in self.shop.menu], [w for _, w in self.shop.menu]
            return sum(self.price(p) for p in self.rng.choices(prices, weights, k=items))
        return self._rounded(self.price(self.shop.median_minor), self.shop.sigma)

    def group_amount(self) -> int:
        """A banquet or an office order: exactly unit x size, sometimes with extras (drinks) on top."""
        g = self.shop.groups
        assert g is not None
        unit = self.price(self.rng.choices([u for u, _ in g.units], [w for _, w in g.units])[0])
        size = self.rng.choices([n for n, _ in g.sizes], [w for _, w in g.sizes])[0]
        total = unit * size
        if g.extras_share and self.rng.random() < g.extras_share:
            total += self._rounded(g.extras_median_minor, 0.6)
        return total

    def _rounded(self, median: int, sigma: float) -> int:
        """A log-normal amount rung up with one of the shop's price steps (whole yuan, ten fen, ...)."""
        value = math.exp(math.log(median) + self.rng.gauss(0, sigma))
        r = self.rng.random()
        step = self.shop.price_steps[-1][0]
        for candidate, p in self.shop.price_steps:
            if r < p:
                step = candidate
                break
            r -= p
        return max(step, round(value / step) * step)

    def at(self, hh: int, mm: int, ss: int = 0) -> datetime:
        return datetime.combine(self.day, time(hh, mm, ss), tzinfo=self.tz)

    def at_seconds(self, s: int, day: date | None = None) -> datetime:
        return datetime.combine(day or self.day, time(), tzinfo=self.tz) + timedelta(seconds=s)

    def sale(self, when: datetime, *, card: str | None = None, amount: int | None = None,
             label: str | None = None, kind: str = "sale", result: str = "approved",
             entry_mode: str = "chip", original: Transaction | None = None,
             batch_no: str | None = None) -> Transaction:
        voucher, trace = self.counter.next()
        txn = Transaction(
            source="sim", kind=kind, result=result, amount_minor=amount if amount is not None else self.amount(),
            time=when.replace(microsecond=0), terminal_id=self.shop.terminal_id, merchant_id=self.shop.merchant_id,
            batch_no=batch_no or self.batch_no, voucher_no=voucher, trace_no=trace,
            rrn=f"{when:%m%d}{self.rng.randrange(10**8):08d}",
            auth_code=f"{self.rng.randrange(10**6):06d}" if result == "approved" else None,
            original_voucher_no=original.voucher_no if original else None,
            original_rrn=original.rrn if original else None,
            currency=self.shop.currency, card=card or self.card(when=when), card_type="UnionPay",
            entry_mode=entry_mode, operator=self.rng.choice(self.shop.operators),
        )
        self.events.append(SimEvent(when, txn, label))
        if txn.card is not None:
            self.visits.setdefault(txn.card, []).append(when)
        return txn

    def reprint(self, txn: Transaction, when: datetime) -> None:
        self.events.append(SimEvent(when, txn, "reprint", reprint=True))

    def settle(self, when: datetime) -> None:
        txns = [e.event for e in self.events if isinstance(e.event, Transaction) and not e.reprint
                and e.event.result == "approved" and e.event.batch_no == self.batch_no]
        total = sum(t.amount_minor if t.kind == "sale" else -t.amount_minor for t in txns)
        self.events.append(SimEvent(when, Settlement(
            source="sim", time=when, terminal_id=self.shop.terminal_id, merchant_id=self.shop.merchant_id,
            batch_no=self.batch_no, count=len(txns), total_minor=total, currency=self.shop.currency,
            balanced=True)))

    # -- the shop's calendar -----------------------------------------------------------------
    def calendar(self) -> ShopCalendar:
        return ShopCalendar(self.shop.hours_config(self.closures), self.tz)

    def open_spans(self, day: date | None = None) -> list[tuple[int, int]]:
        """Opening intervals of ``day`` in seconds after local midnight; [] when the shop is shut."""
        day = day or self.day
        cal = self.calendar()
        if cal.is_closure(day):
            return []
        if cal.hours.closed_on_holidays and cal.is_holiday(day)[0]:
            return []
        midnight = datetime.combine(day, time())
        return [(int((s - midnight).total_seconds()), int((e - midnight).total_seconds()))
                for s, e in cal.intervals(day)]

    # -- ordinary trading --------------------------------------------------------------------
    def normal_traffic(self, count: int, label: str | None = None) -> None:
        spans = [(s + 300, e - 300) for s, e in self.open_spans()]
        if not spans:
            return
        g = self.shop.groups
        share = 0.0
        if g is not None:
            share = g.share * (g.weekend_boost if self.day.weekday() >= 5 else 1.0)
        for _ in range(count):
            if share and self.rng.random() < share:
                self._group(spans, label)
                continue
            s = self._arrival(spans)
            self._customer(self.at_seconds(s), label)

    def _group(self, spans: list[tuple[int, int]], label: str | None) -> None:
        """A group bill at the groups' own hours, on a company's card when a company pays."""
        g = self.shop.groups
        assert g is not None
        s = int(self.rng.gauss(self.rng.choice(g.peaks) * 3600, 2700))
        best = min(spans, key=lambda sp: 0 if sp[0] <= s <= sp[1] else min(abs(s - sp[0]), abs(s - sp[1])))
        s = min(max(s, best[0]), best[1])
        when = self.at_seconds(s)
        card = self.rng.choice(self.companies) if self.companies and self.rng.random() < g.company_share else None
        if card is None or not self._away(card, when):
            card = self.card(when=when)
        self.sale(when, card=card, amount=self.group_amount(), label=label)

    def _arrival(self, spans: list[tuple[int, int]]) -> int:
        r = self.rng.random()
        s: int | None = None
        for peak in self.shop.peaks:
            if r < peak.share:
                s = int(self.rng.gauss(peak.hour * 3600, peak.sd_seconds))
                break
            r -= peak.share
        if s is None:
            lo, hi = spans[0] if len(spans) == 1 else self.rng.choices(spans, [e - b for b, e in spans])[0]
            s = self.rng.randrange(lo, hi)
        # Outside a span (a rush centred near the lunch break) the sale lands at the nearest open edge.
        at = s
        best = min(spans, key=lambda sp: 0 if sp[0] <= at <= sp[1] else min(abs(at - sp[0]), abs(at - sp[1])))
        s = min(max(s, best[0]), best[1])
        if self.shop.late_share and self.rng.random() < self.shop.late_share:
            # The last table pays a few minutes after closing: inside the grace TIME-001 allows.
            s = best[1] + 300 + self.rng.randrange(0, 540)
        return s

    def _customer(self, when: datetime, label: str | None) -> None:
        """One customer at the till: usually one approved sale; sometimes a decline, a void, a refund."""
        shop, rng = self.shop, self.rng
        if shop.decline_rate and rng.random() < shop.decline_rate:
            card, amount = self.card(when=when), self.amount()
            self.sale(when, card=card, amount=amount, result="declined", label=label)
            if rng.random() < 0.7:  # wrong PIN, tried again on the same card
                self.sale(when + timedelta(seconds=rng.randrange(20, 90)), card=card, amount=amount, label=label)
            return
        if shop.void_rate and rng.random() < shop.void_rate:
            card, wrong = self.card(when=when), self.amount()
            first = self.sale(when, card=card, amount=wrong, label=label)
            self.sale(when + timedelta(seconds=rng.randrange(30, 120)), kind="void", card=card, amount=wrong,
                      original=first, label=label)
            right = self.amount()
            if right != wrong:
                self.sale(when + timedelta(seconds=rng.randrange(150, 300)), card=card, amount=right, label=label)
            return
        sold = self.sale(when, label=label)
        if shop.refund_rate and rng.random() < shop.refund_rate:
            back = when + timedelta(seconds=rng.randrange(1800, 7200))
            if any(sp[0] <= (back - self.at_seconds(0)).total_seconds() <= sp[1] for sp in self.open_spans()):
                part = max(1, sold.amount_minor * rng.choice((100, 50, 30)) // 100)
                self.sale(back, kind="refund", card=sold.card, amount=part, original=sold, label=label)

    def legacy_traffic(self, count: int) -> None:
        """The demo shop's day, drawn exactly as the first simulator did (the demo replays these events)."""
        opens, closes = self.shop.hours[0][0].split("-")
        oh, om = (int(x) for x in opens.split(":"))
        ch, cm = (int(x) for x in closes.split(":"))
        open_s, close_s = oh * 3600 + om * 60 + 300, ch * 3600 + cm * 60 - 300
        for _ in range(count):
            peak = self.rng.random()
            if peak < 0.35:
                s = int(self.rng.gauss(12.5 * 3600, 2400))
            elif peak < 0.75:
                s = int(self.rng.gauss(18.75 * 3600, 3000))
            else:
                s = self.rng.randrange(open_s, close_s)
            s = min(max(s, open_s), close_s)
            self.sale(self.at(s // 3600, (s // 60) % 60, s % 60))

    def sorted_events(self) -> list[SimEvent]:
        return sorted(self.events, key=lambda e: e.at)


def build_day(scenario: str = "demo", *, seed: int = 1, day: date | None = None,
              tz: tzinfo | None = None, count: int | None = None, settle: bool = True,
              profile: ShopProfile | None = None, pool_seed: int = 0,
              closed_day: date | None = None, price_from: date | None = None) -> list[SimEvent]:
    """A day of terminal events, time-ordered.

    * ``demo``: ~60 sales, one exact duplicate charge (voided later), one decimal
      slip, one off-hours sale, reprints that must not alert, settlement at 23:00.
    * ``clean``: ``count`` (default: the profile's ``per_day``) ordinary sales, declines,
      voids and refunds, plus reprints; no anomaly label. Nothing on a day the shop is shut.
    * ``mixed``: a clean day with every anomaly kind injected at random times; ``closed_day``
      (a closure or a public holiday the shop is shut on, default the next day) gets two
      sales labelled ``holiday``.

    ``profile`` is the shop (default: the demo shop); ``pool_seed`` picks its regular customers,
    so history days and the test day share them. On a make-up workday (调休) every ordinary
    sale is labelled ``makeup_workday``: trading then is normal and must not alert.
    ``price_from``: the day the profile's ``price_rise`` took effect (None: prices never changed).
    """
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r} (known: {', '.join(SCENARIOS)})")
    tz = tz or ZoneInfo("Asia/Shanghai")
    rng = random.Random(seed)
    the_day = day or date(2026, 11, 27)
    if scenario == "demo" or (scenario == "clean" and profile is None):
        return _legacy_day(scenario, DayBuilder(day=the_day, tz=tz, rng=rng), count, settle)
    shop = profile or DEMO_SHOP
    closed = closed_day or the_day + timedelta(days=1)
    closures = (closed,) if scenario == "mixed" else ()
    b = DayBuilder(day=the_day, tz=tz, rng=rng, shop=shop, regulars=regular_cards(shop, pool_seed),
                   closures=closures, companies=company_cards(shop, pool_seed), price_from=price_from)
    n = count if count is not None else shop.per_day
    makeup = b.calendar().is_makeup_workday(the_day) and bool(b.open_spans())
    b.normal_traffic(n, label="makeup_workday" if makeup else None)
    sales = [e for e in b.events if isinstance(e.event, Transaction) and e.event.kind == "sale"
             and e.event.result == "approved"]
    for e in rng.sample(sales, k=min(len(sales), max(3, n // 20))):
        assert isinstance(e.event, Transaction)
        b.reprint(e.event, e.at + timedelta(seconds=rng.randrange(20, 600)))
    if scenario == "mixed" and b.open_spans():
        _inject_anomalies(b, rng, closed)
    if settle and b.open_spans():
        b.settle(datetime.combine(b.day, time(23, 0, 5), tzinfo=tz))
    return b.sorted_events()


def _legacy_day(scenario: str, b: DayBuilder, count: int | None, settle: bool) -> list[SimEvent]:
    if scenario == "demo":
        b.legacy_traffic(count or 60)
        first = b.sale(b.at(14, 3, 5), amount=12800, label=None)
        dup = b.sale(b.at(14, 4, 40), card=first.card, amount=12800, label="dup_exact")
        b.reprint(first, b.at(14, 5, 10))
        b.sale(b.at(16, 20, 12), amount=b.shop.median_minor * 100, label="slip_x100")
        b.sale(b.at(22, 41, 0), amount=4500, label="off_hours")
        b.sale(b.at(22, 15, 30), kind="void", amount=dup.amount_minor, card=dup.card, original=dup,
               label="void_of_duplicate")
        if settle:
            b.settle(b.at(23, 0, 5))
        return b.sorted_events()
    n = count or 300
    b.legacy_traffic(n)
    sales = [e for e in b.events if isinstance(e.event, Transaction)]
    for e in b.rng.sample(sales, k=min(len(sales), max(3, n // 20))):
        assert isinstance(e.event, Transaction)
        b.reprint(e.event, e.at + timedelta(seconds=b.rng.randrange(20, 600)))
    if settle:
        b.settle(datetime.combine(b.day, time(23, 0, 5), tzinfo=b.tz))
    return b.sorted_events()


def _inject_anomalies(b: DayBuilder, rng: random.Random, closed: date) -> None:
    spans = b.open_spans()

    def busy_time(margin: int = 1800) -> datetime:
        # Well inside opening hours, so a burst or a pair never straddles a closing time.
        lo, hi = rng.choices(spans, [e - s for s, e in spans])[0]
        return b.at_seconds(rng.randrange(lo + 600, max(lo + 601, hi - margin)))

    for _ in range(2):
        t0 = busy_time()
        first = b.sale(t0)
        b.sale(t0 + timedelta(seconds=rng.randrange(20, 480)), card=first.card, amount=first.amount_minor,
               label="dup_exact")
    t0 = busy_time()
    first = b.sale(t0)
    a = first.amount_minor
    # Re-rung with one small item changed: within DUP-003's 1% of the larger amount, never equal.
    diff = max(1, int(a * rng.uniform(0.002, 0.009)))
    b.sale(t0 + timedelta(seconds=rng.randrange(60, 1200)), card=first.card, amount=a + diff, label="dup_near")
    for factor, label in ((10, "slip_x10"), (100, "slip_x100")):
        b.sale(busy_time(), amount=b.amount() * factor, label=label)
    for when in _off_hours_times(b, rng):
        b.sale(when, label="off_hours", card=b.card(fresh=True))
    b.sale(busy_time(), kind="refund", card=b.card(fresh=True), label="refund_unmatched")
    t0 = busy_time()
    card = b.card(fresh=True)
    for i in range(3):
        b.sale(t0 + timedelta(seconds=90 * i + rng.randrange(0, 60)), card=card,
               label="velocity" if i == 2 else None)
    b.sale(busy_time(), entry_mode="manual", card=b.card(fresh=True), label="manual_entry")
    # Staff ring up sales on a day the shop is shut (stocktaking on a closure day, a favour on a holiday).
    # Those go into the next batch, on the closed day's wall-clock afternoon.
    for _ in range(2):
        s = rng.randrange(11 * 3600, 17 * 3600)
        b.sale(b.at_seconds(s, closed), label="holiday", card=b.card(fresh=True),
               batch_no=f"{closed:%y%m%d}")


def _off_hours_times(b: DayBuilder, rng: random.Random) -> list[datetime]:
    """Two sales well away from any opening interval (at least 40 minutes outside, grace is 15)."""
    spans = b.open_spans()
    gaps: list[tuple[int, int]] = [(5 * 3600, spans[0][0] - 2400)]
    gaps += [(e + 2400, s - 2400) for (_, e), (s, _) in pairwise(spans) if s - e > 4800]
    gaps.append((spans[-1][1] + 2400, 23 * 3600 + 55 * 60))
    gaps = [(lo, hi) for lo, hi in gaps if hi > lo]
    picks = [gaps[0], gaps[-1]] if len(gaps) > 1 else gaps * 2
    if len(gaps) > 2:
        picks[rng.randrange(2)] = rng.choice(gaps[1:-1])
    return [b.at_seconds(rng.randrange(lo, hi)) for lo, hi in picks]
