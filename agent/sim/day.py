"""A deterministic, labelled shop day: realistic sales plus injected anomalies.

The generator plays the terminal: card numbers are full, Luhn-valid PANs as a
terminal would hold them, so every decoder's masking is exercised on the way
in. Labels say which anomaly each event is, for evaluation; reprints and
copies are labelled too because they must NOT raise an alert.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time, timedelta, tzinfo
from zoneinfo import ZoneInfo

from agent.model import Settlement, Transaction

SCENARIOS = ("demo", "clean", "mixed")


@dataclass(frozen=True, slots=True)
class SimEvent:
    at: datetime                       # when the terminal emits it (aware, shop zone)
    event: Transaction | Settlement
    label: str | None = None           # anomaly label (dup_exact, slip_x10, ...) or None for normal traffic
    reprint: bool = False              # a second sighting of an earlier transaction


@dataclass(slots=True)
class ShopProfile:
    terminal_id: str = "15221155"
    merchant_id: str = "104152253311021"
    batch_no: str = "000128"
    currency: str = "CNY"
    opens: time = time(9, 0)
    closes: time = time(21, 30)
    median_minor: int = 6800           # RMB 68.00 typical ticket
    sigma: float = 0.75                # log-normal spread
    operators: tuple[str, ...] = ("01", "02", "03")
    bins: tuple[str, ...] = ("622576", "621700", "622848", "436742", "625807", "524047")


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

    def card(self, *, fresh: bool = False) -> str:
        if self.cards and not fresh and self.rng.random() < 0.35:
            return self.rng.choice(self.cards)
        prefix = self.rng.choice(self.shop.bins) + "".join(str(self.rng.randrange(10)) for _ in range(9))
        pan = luhn_complete(prefix)
        self.cards.append(pan)
        return pan

    def amount(self) -> int:
        value = math.exp(math.log(self.shop.median_minor) + self.rng.gauss(0, self.shop.sigma))
        # Tills ring up whole yuan or ten-fen steps far more than odd fen.
        step = 100 if self.rng.random() < 0.6 else 10
        return max(step, int(round(value / step)) * step)

    def at(self, hh: int, mm: int, ss: int = 0) -> datetime:
        return datetime.combine(self.day, time(hh, mm, ss), tzinfo=self.tz)

    def sale(self, when: datetime, *, card: str | None = None, amount: int | None = None,
             label: str | None = None, kind: str = "sale", result: str = "approved",
             entry_mode: str = "chip", original: Transaction | None = None) -> Transaction:
        voucher, trace = self.counter.next()
        txn = Transaction(
            source="sim", kind=kind, result=result, amount_minor=amount if amount is not None else self.amount(),
            time=when.replace(microsecond=0), terminal_id=self.shop.terminal_id, merchant_id=self.shop.merchant_id,
            batch_no=self.shop.batch_no, voucher_no=voucher, trace_no=trace,
            rrn=f"{when:%m%d}{self.rng.randrange(10**8):08d}",
            auth_code=f"{self.rng.randrange(10**6):06d}" if result == "approved" else None,
            original_voucher_no=original.voucher_no if original else None,
            original_rrn=original.rrn if original else None,
            currency=self.shop.currency, card=card or self.card(), card_type="UnionPay",
            entry_mode=entry_mode, operator=self.rng.choice(self.shop.operators),
        )
        self.events.append(SimEvent(when, txn, label))
        return txn

    def reprint(self, txn: Transaction, when: datetime) -> None:
        self.events.append(SimEvent(when, txn, "reprint", reprint=True))

    def settle(self, when: datetime) -> None:
        txns = [e.event for e in self.events if isinstance(e.event, Transaction) and not e.reprint
                and e.event.result == "approved"]
        total = sum(t.amount_minor if t.kind == "sale" else -t.amount_minor for t in txns)
        self.events.append(SimEvent(when, Settlement(
            source="sim", time=when, terminal_id=self.shop.terminal_id, merchant_id=self.shop.merchant_id,
            batch_no=self.shop.batch_no, count=len(txns), total_minor=total, currency=self.shop.currency,
            balanced=True)))

    def normal_traffic(self, count: int) -> None:
        open_s = self.shop.opens.hour * 3600 + self.shop.opens.minute * 60 + 300
        close_s = self.shop.closes.hour * 3600 + self.shop.closes.minute * 60 - 300
        # Lunch and dinner peaks, as a restaurant's day looks.
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
              tz: tzinfo | None = None, count: int | None = None, settle: bool = True) -> list[SimEvent]:
    """A day of terminal events, time-ordered.

    * ``demo``: ~60 sales, one exact duplicate charge (voided later), one decimal
      slip, one off-hours sale, reprints that must not alert, settlement at 23:00.
    * ``clean``: ``count`` (default 300) ordinary sales and reprints, no anomaly.
    * ``mixed``: ``count`` sales with every anomaly kind injected at random times.
    """
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r} (known: {', '.join(SCENARIOS)})")
    tz = tz or ZoneInfo("Asia/Shanghai")
    rng = random.Random(seed)
    b = DayBuilder(day=day or date(2026, 11, 27), tz=tz, rng=rng)
    if scenario == "demo":
        b.normal_traffic(count or 60)
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
    b.normal_traffic(n)
    sales = [e for e in b.events if isinstance(e.event, Transaction)]
    for e in rng.sample(sales, k=min(len(sales), max(3, n // 20))):
        b.reprint(e.event, e.at + timedelta(seconds=rng.randrange(20, 600)))
    if scenario == "mixed":
        _inject_anomalies(b, rng)
    if settle:
        b.settle(datetime.combine(b.day, time(23, 0, 5), tzinfo=tz))
    return b.sorted_events()


def _inject_anomalies(b: DayBuilder, rng: random.Random) -> None:
    def busy_time() -> datetime:
        s = rng.randrange(10 * 3600, 21 * 3600)
        return b.at(s // 3600, (s // 60) % 60, s % 60)

    for _ in range(2):
        t0 = busy_time()
        first = b.sale(t0)
        b.sale(t0 + timedelta(seconds=rng.randrange(20, 500)), card=first.card, amount=first.amount_minor,
               label="dup_exact")
    t0 = busy_time()
    first = b.sale(t0, amount=rng.randrange(50, 400) * 100)
    b.sale(t0 + timedelta(seconds=rng.randrange(60, 1200)), card=first.card,
           amount=first.amount_minor + max(1, first.amount_minor // 200), label="dup_near")
    for factor, label in ((10, "slip_x10"), (100, "slip_x100")):
        base = int(b.shop.median_minor * rng.uniform(0.6, 1.6)) // 10 * 10
        b.sale(busy_time(), amount=base * factor, label=label)
    b.sale(b.at(6, rng.randrange(0, 50)), label="off_hours")
    b.sale(b.at(23, rng.randrange(0, 50)), label="off_hours")
    b.sale(busy_time(), kind="refund", card=b.card(fresh=True), label="refund_unmatched")
    t0 = busy_time()
    card = b.card(fresh=True)
    for i in range(3):
        b.sale(t0 + timedelta(minutes=2 * i), card=card, label="velocity" if i == 2 else None)
    b.sale(busy_time(), entry_mode="manual", label="manual_entry")


def strip_labels(events: list[SimEvent]) -> list[Transaction | Settlement]:
    return [replace(e.event) for e in events]
