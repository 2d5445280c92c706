# Over 500 lines: the four AMT rules share one family, one baseline and its helpers (split, they import each other).
"""Unusual-amount rules (family AMT).

All four say "this amount is wrong", so they share one family and staff get
one alert per charge: AMT-001 decimal slip (30, it also names the amount that
was meant) > AMT-002 robust outlier (20) > AMT-003 absolute ceiling (15) >
AMT-004 repeated amounts just under a limit (10). The others ride along in
``evidence["also_matched"]``.

AMT-001 and AMT-002 read the shop's baseline (approved sale amounts over the
last 30 days, refreshed by the scheduler through ``RuleEngine.refresh_baseline``);
with fewer than ``min_history`` amounts they stay silent ("insufficient
history") rather than guess. AMT-003 works from the first sale.

Configured amounts ("50000.00") are in major units of the shop currency.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import ROUND_CEILING, Decimal
from itertools import chain
from typing import Annotated, Any, ClassVar

from agent.rules.base import BaseRule, Finding, Observation, TxnView, evidence, is_charge
from agent.rules.baseline import AmountBaseline, trailing_zeros
from agent.rules.params import Duration, Percent, PositiveDecimal, PositiveMoney, RuleParams, must
from agent.rules.state import RuleState
from agent.rules.text import amount, charge_en, charge_zh, format_duration, money, vouchers
from agent.units import in_currency

# AMT-001 and AMT-002 judge against the same 30-day baseline, so they take these two settings alike.
HistoryCount = Annotated[int, must(lambda v: v >= 10, "must be at least 10 (percentiles of fewer amounts mean little)")]
ListPriceCount = Annotated[int, must(lambda v: v >= 2, "must be at least 2 (one sale does not make a list price)")]


class SlipParams(RuleParams):
    min_history: HistoryCount = 30
    max_power: Annotated[int, must(lambda v: 1 <= v <= 4, "must be 1 to 4")] = 3   # 10x, 100x, 1000x
    # ln(posterior odds) of a slip against a genuine bill: at min_score or above it is a likely error
    # ("void it, charge the amount meant"), at verify_score or above something to check ("please check").
    min_score: PositiveDecimal = Decimal("3.0")
    # The "please check" threshold is not fixed: it is the lowest score at or above verify_floor at which this
    # month's own genuine large bills would have raised at most ``budget`` alerts a trading day.
    verify_floor: Decimal = Decimal("1.0")
    budget: Annotated[Decimal, must(lambda v: 0 < v <= 10, "must be above 0 and at most 10 alerts a day")] = \
        Decimal("0.05")
    # Prior: the share of card charges that are keying slips (about one in 500 charges).
    slip_rate: Annotated[Decimal, must(lambda v: 0 < v < 1, "must be between 0 and 1")] = Decimal("0.002")
    known_count: ListPriceCount = 3
    card_days: Annotated[int, must(lambda v: v >= 0, "must be 0 or more")] = 90   # the card's own look-back
    # A regular who paid here this many times, never more than half the amount: a large bill on that card is
    # far less likely genuine (``regular_factor``), and the shop's list prices (its office orders, its
    # banquets, paid on other cards) no longer excuse the amount.
    regular_visits: Annotated[int, must(lambda v: v >= 3, "must be at least 3")] = 10
    regular_factor: Annotated[Decimal, must(lambda v: 0 < v <= 1, "must be above 0 and at most 1")] = \
        Decimal("0.25")


# How a slip is keyed, with its share of slips: an extra zero (68.00 -> 680.00), a missed decimal point
# (68.00 keyed as 6800 yuan -> 6,800.00), a third zero, a digit pressed twice (68.00 -> 688.00).
SLIP_KINDS: dict[str, float] = {"extra_zero": 0.55, "no_decimal_point": 0.25, "three_zeros": 0.05,
                                "repeated_digit": 0.15}


@dataclass(frozen=True, slots=True)
class SlipEvidence:
    """Two stories for a charge: a slip on ``meant`` (keyed as ``kind``) or a genuine bill of the amount."""

    kind: str
    factor: int                   # amount / meant, rounded (10, 100, 1000; ~10 for a repeated digit)
    meant_minor: int
    near_meant: int               # sales within 10% of the amount meant (last 30 days)
    near_amount: int              # sales within 10% of the amount charged
    rounded_meant: float          # share of sales rounded like the amount meant
    rounded_amount: float         # share of sales rounded like the amount charged
    slip_log: float               # ln P(this amount, as a slip on meant): prior x how common meant is x rounding
    genuine_log: float            # ln P(this amount, as a genuine bill): tail x rounding x hour x card
    hour_factor: float
    card_factor: float

    @property
    def score(self) -> float:
        """ln(posterior odds): slip against genuine."""
        return self.slip_log - self.genuine_log


class DecimalSlip(BaseRule[SlipParams]):
    """AMT-001: a keying slip: an extra zero (1,280.00 for 128.00), a missed decimal point, a digit twice.

    Weighs two stories for a charge ``a`` above the shop's usual range (above P95), from
    the shop's last 30 days (agent.rules.baseline) and the card's own history:

    * **a slip** on an honest amount ``m`` (a / 10^k, or ``a`` with a doubled digit
      undone): the prior rate of slips x the share of that keying pattern x how common
      amounts near ``m`` are x how common ``m``'s rounding is;
    * **a genuine bill** of ``a``: how common amounts near ``a`` are (the count seen,
      shrunk towards what the shop's own fitted tail of large bills expects there, so a
      shop with banquets and group orders keeps a real chance of a big bill the month
      did not show) x how common ``a``'s rounding is x how much likelier large bills are
      at this hour on this kind of day x the card's own history (a card that paid bills
      of this size before, say a company's, makes it likelier; one seen several times
      only ever paying small bills, less; a regular's, seen ``regular_visits`` (10) times
      or more and never above half this, a quarter as likely).

    The score is ln(posterior odds) slip : genuine. At ``min_score`` (3.0, the slip ~20
    times likelier) the finding is a likely error; between ``verify_score`` (1.5) and
    that, it is something to check ("请核对"), never escalated to refund guidance. Both
    log-likelihoods are in the evidence. An amount the shop charged ``known_count`` (3)
    or more times is a list price, not a slip, unless it is charged on such a regular's
    card: a bakery's RMB 240.00 office order (20 x 12.00) is paid on the office's card,
    and a coffee regular's RMB 24.00 keyed with an extra zero is not that order. For such
    a card the "please check" cut is ``verify_floor``: the budgeted cut was set by the
    month's large bills, scored without their cards, most of them paid on the cards that
    pay large bills.
    """

    id: ClassVar[str] = "AMT-001"
    version: ClassVar[str] = "5"
    family: ClassVar[str] = "AMT"
    default_severity: ClassVar[str] = "high"
    specificity: ClassVar[int] = 30
    certainty: ClassVar[str] = "error"
    title_en: ClassVar[str] = "Decimal slip"
    title_zh: ClassVar[str] = "金额疑似多输了零"
    Params = SlipParams

    def __init__(self, params: RuleParams) -> None:
        super().__init__(params)
        self._min_score = float(self.params.min_score)
        self._calibrated: tuple[AmountBaseline, float] | None = None
        self._slip_log = math.log(float(self.params.slip_rate))
        self._genuine_log = math.log(1 - float(self.params.slip_rate))
        self._regular_factor = float(self.params.regular_factor)
        # ln(slip rate) + ln(the keying pattern's share): weigh's first two terms of a slip's log-likelihood.
        self._kind_log = {kind: self._slip_log + math.log(share) for kind, share in SLIP_KINDS.items()}

    def check(self, state: RuleState, obs: Observation, now: datetime) -> list[Finding]:
        view = obs.view
        if not obs.is_new or not is_charge(view):
            return []
        base = _baseline(state, self.id, self.params.min_history)
        if base is None:
            return []
        value = view.amount_minor
        if value <= base.p95_minor or not _slip_candidates(value, self.params.max_power):
            return []
        card, regular = self._card_factor(state, view)
        if base.price_count(value) >= self.params.known_count and not regular:
            return []
        hour = base.hour_factor(view.local, view.local.weekday() >= 5)
        best = self.weigh(base, value, hour_factor=hour, card_factor=card)
        verify_cut = self.verify_cut(base)
        if regular:
            # The budgeted cut was set by this month's large bills, scored without their cards; most are paid
            # on the cards that pay large bills (an office's, a company's). This card is not one of those.
            verify_cut = min(verify_cut, float(self.params.verify_floor))
        if best is None or best.score < verify_cut:
            return []
        sure = best.score >= self._min_score
        cut = self._min_score if sure else verify_cut
        cur = view.txn.currency
        meant = amount(best.meant_minor, cur)
        how_en, how_zh = _KIND_TEXT[best.kind]
        unit_a, unit_m = _rounding_unit(value, cur), _rounding_unit(best.meant_minor, cur)
        pct_a, pct_m = f"{best.rounded_amount:.1%}", f"{best.rounded_meant:.1%}"
        ask_en = f"was {meant} meant?" if sure else f"please check whether {meant} was meant"
        ask_zh = f"是否应为 {meant}？" if sure else f"请核对是否应为 {meant}（如属正常交易，无需处理）"
        finding = self.finding(
            view, [],
            f"{charge_en(view)} looks like {meant} with {how_en}: "
            f"in the last 30 days this shop charged amounts near {meant} {best.near_meant} times and near "
            f"{money(view)} {best.near_amount} times, and {pct_m} of its amounts are rounded to {unit_m} like "
            f"{meant} against {pct_a} rounded to {unit_a} (slip against genuine bill, ln odds "
            f"{best.score:.1f} >= {cut:g}); {ask_en}",
            f"{charge_zh(view)}像是 {meant} {how_zh}："
            f"最近 30 天本店金额接近 {meant} 的交易 {best.near_meant} 笔，接近 {money(view)} 的仅 "
            f"{best.near_amount} 笔；像 {meant} 这样取整到 {unit_m} 的金额占 {pct_m}，"
            f"取整到 {unit_a} 的占 {pct_a}；{ask_zh}",
            evidence(round(best.score, 2), cut, base.to_evidence(), kind=best.kind, factor=best.factor,
                     meant_minor=best.meant_minor, near_meant=best.near_meant, near_amount=best.near_amount,
                     rounded_meant=round(best.rounded_meant, 4), rounded_amount=round(best.rounded_amount, 4),
                     # The two stories, each as ln(probability of this charge): what the decision weighed.
                     slip_likelihood=round(best.slip_log, 3), genuine_likelihood=round(best.genuine_log, 3),
                     hour_factor=round(best.hour_factor, 3), card_factor=round(best.card_factor, 3),
                     card_regular=regular,
                     confidence="high" if sure else "low", error_score=self._min_score,
                     charged_before=base.price_count(value), known_count=self.params.known_count,
                     # What a phone shows as "why" (the reason above keeps the figures for the record).
                     plain_zh=f"{money(view)} 像是本店常见金额 {meant} {how_zh}",
                     plain_en=f"{money(view)} looks like this shop's common amount {meant} with {how_en}"),
        )
        if sure:
            return [finding]
        # Low confidence: something to verify. It asks for a check, so it never becomes refund guidance at
        # settlement (agent.alerts.book.closing_remedy) and says "please check" (render: certainty verify).
        return [replace(finding, certainty="verify", action="check", severity="medium")]

    def verify_cut(self, base: AmountBaseline) -> float:
        """The "please check" threshold for this baseline, from the false-alert budget (once per refresh).

        Scores this month's own large bills as the rule scores a live charge (each at its own hour, left out
        of its own neighbourhood and hour counts, list prices skipped; their cards are not known here) and
        takes the lowest cut at or above ``verify_floor`` that leaves at most ``budget`` x trading days of them
        above it. Never above ``min_score``.
        """
        if self._calibrated is not None and self._calibrated[0] is base:
            return self._calibrated[1]
        # The month's bills as distinct scores, each with how many bills it stands for (sorted, the scores
        # with their multiplicities are the list the budget counts down).
        scores = sorted(self._tail_scores(base).items(), reverse=True)
        allowed = int(float(self.params.budget) * base.trading_days)
        cut = float(self.params.verify_floor)
        seen = 0
        for score, bills in scores:
            seen += bills
            if seen > allowed:   # the first score beyond the budget: the cut goes just above it
                cut = max(cut, score + 0.01)
                break
        cut = min(cut, self._min_score)
        self._calibrated = (base, cut)
        return cut

    def _tail_scores(self, base: AmountBaseline) -> dict[float, int]:
        """The month's own large bills (list prices skipped), each scored as ``weigh(..., leave_out=1)`` at its own
        hour bin: score -> how many bills have it. Bills without a slip story are left out.

        Each distinct amount is weighed once, each amount meant once, each hour bin's factor once; a bill's
        score is then one subtraction. The floats are ``weigh``'s: the same look-ups in the same order, the
        hour's log added where ``weigh`` adds it, and the best candidate's score taken as the best slip log
        minus the genuine log (x - g is monotone in x, so max(x_i - g) is max(x_i) - g, bit for bit).
        """
        log, n = math.log, base.count
        hours: Sequence[int | None] = base.tail_hours or (None,) * len(base.tail_amounts)
        bills = Counter(zip(base.tail_amounts, hours, strict=True))
        hour_logs: dict[int | None, float] = {}
        slip_logs: dict[tuple[str, int], float] = {}    # (kind, meant) -> slip_log: meant amounts recur
        by_amount: dict[int, tuple[float, float] | None] = {}   # amount -> (best slip_log, genuine part)
        known, max_power = self.params.known_count, self.params.max_power
        out: dict[float, int] = {}
        for (a, h), count in bills.items():
            if a in by_amount:
                parts = by_amount[a]
            else:
                parts = None
                candidates = _slip_candidates(a, max_power) if base.price_count(a) < known else []
                if candidates:
                    near_amount = max(0, base.near_count(a) - 1)
                    expected_amount = max(base.near_expected(a), base.tail_expected(a))
                    genuine = (self._genuine_log + log(_density(near_amount, expected_amount) / n)
                               + log(base.rounding_share(a)))
                    best = -math.inf
                    for kind, meant in candidates:
                        slip_log = slip_logs.get((kind, meant))
                        if slip_log is None:
                            slip_log = slip_logs[kind, meant] = (
                                self._kind_log[kind]
                                + log(_density(base.near_count(meant), base.near_expected(meant)) / n)
                                + log(base.rounding_share(meant)))
                        best = max(best, slip_log)
                    parts = (best, genuine)
                by_amount[a] = parts
            if parts is None:
                continue
            hour_log = hour_logs.get(h)
            if hour_log is None:
                hour_log = hour_logs[h] = log(1.0 if h is None else base.hour_factor_at(h, leave_out=1))
            # weigh's genuine_log: ... + log(rounding) + log(hour_factor) + log(card_factor = 1.0)
            score = parts[0] - (parts[1] + hour_log + 0.0)
            out[score] = out.get(score, 0) + count
        return out

    def _card_factor(self, state: RuleState, view: TxnView) -> tuple[float, bool]:
        """The card's own history: bills of this size before make a genuine one likelier; only small ones, less.

        Also whether the card is a regular's that never paid more than half this (``regular_visits`` times
        or more): the shop's list prices and its budgeted cut then no longer speak for a genuine bill.
        """
        card = view.card
        if not card or self.params.card_days == 0:
            return 1.0, False
        since = view.utc - timedelta(days=self.params.card_days)
        # The journal also holds what the rules' own memory holds (the last day): each visit once, by key.
        seen = {v.key: v for v in chain(state.history.sales_for_card(card, since, view.utc),
                                        state.card_history(card, since, view.utc))
                if v.key != view.key and is_charge(v)}
        if not seen:
            return 1.0, False
        big = sum(1 for v in seen.values() if v.amount_minor * 2 >= view.amount_minor)
        if big:
            return 1.0 + 5.0 * min(big, 4), False
        # A regular only where the masked number tells cards apart: a last-4-only mask pools every card of
        # the shop ending in those digits (a dozen strangers a quarter at a busy till), not one customer.
        if len(seen) >= self.params.regular_visits and "*" not in card[:6]:
            return self._regular_factor, True
        return (0.5 if len(seen) >= 3 else 1.0), False

    def weigh(self, base: AmountBaseline, value: int, *, hour_factor: float = 1.0,
              card_factor: float = 1.0, leave_out: int = 0) -> SlipEvidence | None:
        """The likeliest slip behind ``value`` (highest posterior odds over the keying patterns), if any fits.

        ``leave_out``: sales of this very amount already in the baseline (1 when scoring the month's own bills).
        """
        candidates = _slip_candidates(value, self.params.max_power)
        if not candidates:
            return None
        n = base.count
        near_amount = max(0, base.near_count(value) - leave_out)
        expected_amount = max(base.near_expected(value), base.tail_expected(value))
        rounded_amount = base.rounding_share(value)
        genuine_log = (self._genuine_log + math.log(_density(near_amount, expected_amount) / n)
                       + math.log(rounded_amount) + math.log(hour_factor) + math.log(card_factor))
        best: SlipEvidence | None = None
        for kind, meant in candidates:
            near_meant = base.near_count(meant)
            rounded_meant = base.rounding_share(meant)
            slip_log = (self._kind_log[kind]
                        + math.log(_density(near_meant, base.near_expected(meant)) / n) + math.log(rounded_meant))
            ev = SlipEvidence(kind, round(value / meant), meant, near_meant, near_amount, rounded_meant,
                              rounded_amount, slip_log, genuine_log, hour_factor, card_factor)
            if best is None or ev.score > best.score:
                best = ev
        return best


_KIND_TEXT: dict[str, tuple[str, str]] = {
    "extra_zero": ("an extra zero", "多输了一个零"),
    "no_decimal_point": ("the decimal point missed", "漏按了小数点"),
    "three_zeros": ("three extra zeros", "多输了三个零"),
    "repeated_digit": ("a digit keyed twice", "某位数字多按了一次"),
}


def _slip_candidates(value: int, max_power: int) -> list[tuple[str, int]]:
    """(keying pattern, amount meant) pairs that could have produced ``value``."""
    out: list[tuple[str, int]] = []
    kinds = ("extra_zero", "no_decimal_point", "three_zeros", "three_zeros")
    for k in range(1, max_power + 1):
        if value % 10**k:
            break  # not a multiple of 10^k, so not of 10^(k+1) either
        out.append((kinds[k - 1], value // 10**k))
    # A digit pressed twice: 688.00 for 68.00 (the doubled digit is not a trailing zero: that is an extra zero).
    digits = str(value)
    seen: set[int] = set()
    for i in range(len(digits) - 1):
        if digits[i] == digits[i + 1] and digits[i] != "0":
            meant = int(digits[:i] + digits[i + 1:])
            if meant > 0 and meant not in seen and value >= 5 * meant:
                seen.add(meant)
                out.append(("repeated_digit", meant))
    return out


def _baseline(state: RuleState, rule_id: str, min_history: int) -> AmountBaseline | None:
    """The shop's baseline if it holds ``min_history`` amounts; otherwise None, counted as "insufficient history"."""
    base = state.baseline
    if base is None or base.count < min_history:
        state.note_insufficient(rule_id)
        return None
    return base


def _density(observed: int, expected: float) -> float:
    """Sales near an amount: the count seen, shrunk halfway to what the shop's fitted shape expects, never zero.

    The floor is a fiftieth of a sale: "none seen in a month, none expected" is strong evidence of rarity,
    not of impossibility. The fitted shape carries the rest: a shop whose tail of large bills reaches this
    far expects some there even in a month that showed none.
    """
    return (observed + expected) / 2 + DENSITY_FLOOR


DENSITY_FLOOR = 0.02


def _rounding_unit(amount_minor: int, currency: str | None) -> str:
    return amount(10 ** trailing_zeros(amount_minor), currency)


class OutlierParams(RuleParams):
    window: Duration = timedelta(days=30)
    min_history: HistoryCount = 30
    # The false-alert budget: outlier alerts expected per trading day on a clean day (one in 50 days).
    budget: Annotated[Decimal, must(lambda v: 0 < v <= 10, "must be above 0 and at most 10 alerts a day")] = \
        Decimal("0.02")
    z_cut: PositiveDecimal = Decimal("3.5")   # a floor: never flag closer than this to the median
    flat_factor: Annotated[Decimal, must(lambda v: v > 1,
                                         "must be > 1 (a factor away from the constant amount)")] = Decimal("5")
    flag_low: bool = False
    known_count: ListPriceCount = 3


@dataclass(frozen=True, slots=True)
class OutlierCut:
    """AMT-002's threshold for one baseline: the amount above which alerts stay within the budget."""

    amount_minor: int
    z: float
    per_day: float               # the shop's sales per trading day in the window
    share: float                 # budget / per_day: the share of sales allowed above the threshold
    source: str                  # "budget" (from the fitted tail) | "floor" (z_cut; no tail to fit)


def outlier_cut(base: AmountBaseline, p: OutlierParams) -> OutlierCut:
    """The threshold that keeps the expected outlier alerts on a clean day under ``budget``.

    From the shop's own history: with ``per_day`` sales a trading day, at most ``budget / per_day``
    of sales may lie above it, and the fitted tail of large bills (agent.rules.baseline) says where
    that is. Recomputed with each baseline. Never below ``z_cut`` nor the top 0.1% actually seen.
    """
    days = base.days or max(1, round(p.window.total_seconds() / 86400))
    per_day = base.count / days
    share = float(p.budget) / per_day
    floor = max(base.p999_minor, int(math.exp(base.median_log + float(p.z_cut) * base.sigma_log)))
    at = base.tail_amount(share)
    if at is None or at <= floor:
        return OutlierCut(floor, base.modified_z(floor), per_day, share, "floor")
    return OutlierCut(at, base.modified_z(at), per_day, share, "budget")


class AmountOutlier(BaseRule[OutlierParams]):
    """AMT-002: far above this shop's range, beyond a threshold set by a false-alert budget.

    The threshold (:func:`outlier_cut`) is the amount above which the shop's own history (its fitted
    tail of large bills, its sales per day) expects no more than ``budget`` (0.02) alerts per trading
    day, recomputed with the baseline; never below modified z ``z_cut`` (3.5) or the top 0.1% seen.
    An amount with ``known_count`` (3) or more sales within 10% of it in the window (a set menu plus
    drinks) is not unusual.

    Spread: MAD, else 1.253314 x mean absolute deviation (see agent.rules.baseline).
    When every sale in the baseline had one amount (no spread at all), only an
    amount more than ``flat_factor`` (5x) away from it is flagged. Only high
    amounts by default: an overcharge hurts the card holder; small tickets (a
    bottle of water) are routine (``flag_low = true`` flags low ones beyond ``z_cut``). An
    outlier is something to verify, not a likely error: banquets and group
    orders are genuine far outliers, so staff are asked to check it.
    """

    id: ClassVar[str] = "AMT-002"
    version: ClassVar[str] = "2"
    family: ClassVar[str] = "AMT"
    default_severity: ClassVar[str] = "medium"
    specificity: ClassVar[int] = 20
    certainty: ClassVar[str] = "verify"
    action: ClassVar[str] = "check"
    title_en: ClassVar[str] = "Unusual amount"
    title_zh: ClassVar[str] = "金额异常"
    Params = OutlierParams

    def __init__(self, params: RuleParams) -> None:
        super().__init__(params)
        self._cut: tuple[AmountBaseline, OutlierCut] | None = None

    def cut(self, base: AmountBaseline) -> OutlierCut:
        """The budgeted threshold for this baseline (computed once per refresh)."""
        if self._cut is None or self._cut[0] is not base:
            self._cut = (base, outlier_cut(base, self.params))
        return self._cut[1]

    def check(self, state: RuleState, obs: Observation, now: datetime) -> list[Finding]:
        view = obs.view
        if not obs.is_new or not is_charge(view):
            return []
        base = _baseline(state, self.id, self.params.min_history)
        if base is None:
            return []
        value = view.amount_minor
        p = self.params
        extra: dict[str, Any] = {}
        if base.method == "constant":
            ratio = Decimal(value) / Decimal(base.median_minor)
            high, low = ratio > p.flat_factor, ratio * p.flat_factor < 1
            if not (high or (low and p.flag_low)):
                return []
            score: Any = f"{ratio:.2f}x"
            threshold: Any = f"{p.flat_factor}x"
        else:
            z = base.modified_z(value)
            cut = self.cut(base)
            high = value > cut.amount_minor and base.near_count(value) < p.known_count
            low = z < -float(p.z_cut)
            if not (high or (low and p.flag_low)):
                return []
            score = round(z, 2)
            threshold = round(cut.z, 2) if high else -float(p.z_cut)
            extra = {"threshold_minor": cut.amount_minor, "threshold_source": cut.source,
                     "budget_per_day": float(p.budget), "sales_per_day": round(cut.per_day, 1)}
        cur = view.txn.currency
        side_en, side_zh = ("above", "高于") if high else ("below", "低于")
        return [self.finding(
            view, [],
            f"{charge_en(view)} is far {side_en} this shop's usual amounts (median {amount(base.median_minor, cur)}, "
            f"usual range {amount(base.p05_minor, cur)}"
            f"-{amount(base.p95_minor, cur)}, score {score} > {threshold})",
            f"{charge_zh(view)}远{side_zh}本店常见金额"
            f"（中位数 {amount(base.median_minor, cur)}，常见范围 {amount(base.p05_minor, cur)}"
            f"-{amount(base.p95_minor, cur)}，评分 {score} > {threshold}）",
            evidence(score, threshold, base.to_evidence(), amount_minor=value,
                     near_amount=base.near_count(value), known_count=p.known_count, **extra),
        )]


class CeilingParams(RuleParams):
    ceiling: PositiveMoney = 5_000_000    # 50,000.00


class AmountCeiling(BaseRule[CeilingParams]):
    """AMT-003: above the shop's absolute ceiling (default 50,000.00); needs no history.

    The default is deliberately high (no ordinary shop ticket reaches it; a
    100.00 sale with three extra zeros does). Set it per shop: ``[rules.AMT-003]
    ceiling = "5000.00"``. An amount exactly at the ceiling is allowed.
    """

    id: ClassVar[str] = "AMT-003"
    version: ClassVar[str] = "1"
    family: ClassVar[str] = "AMT"
    default_severity: ClassVar[str] = "high"
    specificity: ClassVar[int] = 15
    certainty: ClassVar[str] = "error"
    title_en: ClassVar[str] = "Amount above ceiling"
    title_zh: ClassVar[str] = "金额超过上限"
    Params = CeilingParams

    def check(self, state: RuleState, obs: Observation, now: datetime) -> list[Finding]:
        view = obs.view
        if not obs.is_new or not is_charge(view):
            return []
        ceiling = in_currency(self.params.ceiling, view.txn.currency)
        if view.amount_minor <= ceiling:
            return []
        cur = view.txn.currency
        return [self.finding(
            view, [],
            f"{charge_en(view)} is above this shop's ceiling of {amount(ceiling, cur)}",
            f"{charge_zh(view)}超过本店单笔上限 {amount(ceiling, cur)}",
            evidence(view.amount_minor, ceiling),
        )]


class UnderLimitParams(RuleParams):
    limit: PositiveMoney = 100_000        # 1,000.00: UnionPay QuickPass no-PIN/no-signature limit
    band_percent: Percent = Decimal("5")
    count: Annotated[int, must(lambda v: v >= 2, "must be at least 2 (one charge is not a pattern)")] = 2
    window: Duration = timedelta(hours=24)


class JustUnderLimit(BaseRule[UnderLimitParams]):
    """AMT-004: one card charged repeatedly just under a limit (splitting to avoid the PIN).

    "Just under" is limit x (1 - band) <= amount < limit. ``count`` such charges
    (this one included) on one card within ``window`` (inclusive). The charges
    may be real purchases, so the action is "check" (ask for the PIN / ID).
    """

    id: ClassVar[str] = "AMT-004"
    version: ClassVar[str] = "1"
    family: ClassVar[str] = "AMT"
    default_severity: ClassVar[str] = "medium"
    specificity: ClassVar[int] = 10
    certainty: ClassVar[str] = "verify"
    title_en: ClassVar[str] = "Repeated amounts just under the limit"
    title_zh: ClassVar[str] = "多笔金额略低于限额"
    action: ClassVar[str] = "check"
    Params = UnderLimitParams

    def __init__(self, params: RuleParams) -> None:
        super().__init__(params)
        self._bands: dict[str | None, tuple[int, int]] = {}

    def state_horizon(self) -> timedelta:
        return self.params.window

    def _band(self, currency: str | None) -> tuple[int, int]:
        band = self._bands.get(currency)
        if band is None:
            limit = in_currency(self.params.limit, currency)
            low = (Decimal(limit) * (100 - self.params.band_percent) / 100).to_integral_value(ROUND_CEILING)
            band = self._bands[currency] = (int(low), limit)
        return band

    def check(self, state: RuleState, obs: Observation, now: datetime) -> list[Finding]:
        view = obs.view
        card = view.card
        if not obs.is_new or not is_charge(view) or not card:
            return []
        low, limit = self._band(view.txn.currency)
        if not low <= view.amount_minor < limit:
            return []
        w = self.params.window
        earlier = [v for v in state.other_charges(view, view.utc - w, view.utc) if low <= v.amount_minor < limit]
        involved = [*earlier, view]
        if len(involved) < self.params.count:
            return []
        cur = view.txn.currency
        window = format_duration(w)
        amounts = ", ".join(money(v) for v in involved)
        return [self.finding(
            view, earlier,
            f"Card {card} charged {len(involved)} times just under the {amount(limit, cur)} limit "
            f"within {window} ({amounts}; vouchers {vouchers(involved)}); check the card holder",
            f"卡 {card} 在 {window} 内 {len(involved)} 次扣款金额略低于限额 {amount(limit, cur)}"
            f"（{amounts}；凭证号 {vouchers(involved)}）；请核实持卡人",
            evidence(len(involved), self.params.count, {"limit_minor": limit, "band_low_minor": low},
                     window_seconds=int(w.total_seconds())),
        )]
