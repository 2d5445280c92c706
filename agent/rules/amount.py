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
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_CEILING, Decimal
from typing import Annotated, Any, ClassVar

from agent.rules.base import BaseRule, Finding, Observation, evidence, is_charge
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
    min_score: PositiveDecimal = Decimal("4.0")
    known_count: ListPriceCount = 3


@dataclass(frozen=True, slots=True)
class SlipEvidence:
    """Why ``amount`` looks like ``meant`` x ``factor``: the two likelihood ratios, in the shop's own data."""

    factor: int
    meant_minor: int
    near_meant: int               # sales within 10% of the amount meant (last 30 days)
    near_amount: int              # sales within 10% of the amount charged
    rounded_meant: float          # share of sales rounded like the amount meant
    rounded_amount: float         # share of sales rounded like the amount charged
    score: float                  # ln(likelihood ratio): slip of ``meant`` versus an honest ``amount``


class DecimalSlip(BaseRule[SlipParams]):
    """AMT-001: an extra zero (or two, or three): 1,280.00 keyed for 128.00.

    Weighs two explanations of a charge ``a`` above the shop's usual range
    (above P95) that is an exact multiple of 10^k: an honest sale of ``a``, or
    a slip on an honest sale of ``m = a / 10^k``. The score is the log of how
    much likelier the slip is, from the shop's last 30 days (agent.rules.baseline):

    * how common amounts near ``m`` are against amounts near ``a`` (within 10%;
      the count is averaged with what the shop's log-normal fit expects there,
      so a month of few sales does not read an empty neighbourhood as proof);
    * how common ``m``'s rounding is against ``a``'s: a slip appends zeros to a
      normally rounded price, so 180.00 (rounded to 10 yuan, rare in a shop that
      prices to the yuan or ten fen) is likelier a slip than 186.00.

    It fires when the score reaches ``min_score`` (4.0: the slip is e^4 ~ 55
    times likelier). An amount the shop charged ``known_count`` (3) or more
    times in the window is a list price (a set menu, a carton of one brand),
    never a slip. Version 2's z-score cuts treated every banquet and carton as
    a far outlier; here the neighbourhood counts see them. Known limit: in a
    shop with a wide spread of baskets (a convenience store) a slipped 18.00 is
    an ordinary-looking 180.00, and about a third of tenfold slips stay below
    the score (EVALUATION.md).
    """

    id: ClassVar[str] = "AMT-001"
    version: ClassVar[str] = "3"
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

    def check(self, state: RuleState, obs: Observation, now: datetime) -> list[Finding]:
        view = obs.view
        if not obs.is_new or not is_charge(view):
            return []
        base = _baseline(state, self.id, self.params.min_history)
        if base is None:
            return []
        value = view.amount_minor
        if value <= base.p95_minor or base.price_count(value) >= self.params.known_count:
            return []
        best = self.weigh(base, value)
        if best is None or best.score < self._min_score:
            return []
        cur = view.txn.currency
        meant = amount(best.meant_minor, cur)
        unit_a, unit_m = _rounding_unit(value, cur), _rounding_unit(best.meant_minor, cur)
        pct_a, pct_m = f"{best.rounded_amount:.1%}", f"{best.rounded_meant:.1%}"
        return [self.finding(
            view, [],
            f"{charge_en(view)} is exactly {best.factor}x {meant}: "
            f"in the last 30 days this shop charged amounts near {meant} {best.near_meant} times and near "
            f"{money(view)} {best.near_amount} times, and {pct_m} of its amounts are rounded to {unit_m} like "
            f"{meant} against {pct_a} rounded to {unit_a} (slip score {best.score:.1f} >= {self._min_score:g}); "
            f"was {meant} meant?",
            f"{charge_zh(view)}恰为 {meant} 的 {best.factor} 倍："
            f"最近 30 天本店金额接近 {meant} 的交易 {best.near_meant} 笔，接近 {money(view)} 的仅 "
            f"{best.near_amount} 笔；像 {meant} 这样取整到 {unit_m} 的金额占 {pct_m}，"
            f"取整到 {unit_a} 的占 {pct_a}（多输零评分 {best.score:.1f} >= {self._min_score:g}）；"
            f"是否应为 {meant}？",
            evidence(round(best.score, 2), self._min_score, base.to_evidence(), factor=best.factor,
                     meant_minor=best.meant_minor, near_meant=best.near_meant, near_amount=best.near_amount,
                     rounded_meant=round(best.rounded_meant, 4), rounded_amount=round(best.rounded_amount, 4),
                     charged_before=base.price_count(value), known_count=self.params.known_count,
                     # What a phone shows as "why" (the reason above keeps the figures for the record).
                     plain_zh=f"{money(view)} 是本店常见金额 {meant} 的 {best.factor} 倍",
                     plain_en=f"{money(view)} is {best.factor}x this shop's common amount {meant}"),
        )]

    def weigh(self, base: AmountBaseline, value: int) -> SlipEvidence | None:
        """The likeliest slip behind ``value`` (highest score over 10x .. 10^max_power x), if any fits."""
        best: SlipEvidence | None = None
        near_amount = base.near_count(value)
        density_amount = _density(near_amount, base.near_expected(value))
        rounded_amount = base.rounding_share(value)
        for k in range(1, self.params.max_power + 1):
            factor = 10**k
            if value % factor:
                break  # not a multiple of 10^k, so not of 10^(k+1) either
            meant = value // factor
            near_meant = base.near_count(meant)
            rounded_meant = base.rounding_share(meant)
            score = (math.log(_density(near_meant, base.near_expected(meant)) / density_amount)
                     + math.log(rounded_meant / rounded_amount))
            if best is None or score > best.score:
                best = SlipEvidence(factor, meant, near_meant, near_amount, rounded_meant, rounded_amount, score)
        return best


def _baseline(state: RuleState, rule_id: str, min_history: int) -> AmountBaseline | None:
    """The shop's baseline if it holds ``min_history`` amounts; otherwise None, counted as "insufficient history"."""
    base = state.baseline
    if base is None or base.count < min_history:
        state.note_insufficient(rule_id)
        return None
    return base


def _density(observed: int, expected: float) -> float:
    """Sales near an amount: the count seen, shrunk halfway to the log-normal fit, never zero.

    Half a sale is the floor: "none seen in a month" is evidence of rarity, not of impossibility.
    """
    return (observed + expected) / 2 + 0.5


def _rounding_unit(amount_minor: int, currency: str | None) -> str:
    return amount(10 ** trailing_zeros(amount_minor), currency)


class OutlierParams(RuleParams):
    window: Duration = timedelta(days=30)
    min_history: HistoryCount = 30
    z_cut: PositiveDecimal = Decimal("3.5")
    flat_factor: Annotated[Decimal, must(lambda v: v > 1,
                                         "must be > 1 (a factor away from the constant amount)")] = Decimal("5")
    flag_low: bool = False
    known_count: ListPriceCount = 3


class AmountOutlier(BaseRule[OutlierParams]):
    """AMT-002: far outside this shop's range: modified z-score of ln(amount) above ``z_cut`` (3.5)
    and, on the high side, above the top 0.1% of the baseline's amounts (P99.9) and with fewer than
    ``known_count`` (3) sales within 10% of it in the window: an amount next to a list price the shop
    charges every week (a set menu plus drinks) is not unusual.

    Spread: MAD, else 1.253314 x mean absolute deviation (see agent.rules.baseline).
    When every sale in the baseline had one amount (no spread at all), only an
    amount more than ``flat_factor`` (5x) away from it is flagged. Only high
    amounts by default: an overcharge hurts the card holder; small tickets (a
    bottle of water) are routine (``flag_low = true`` flags both sides). An
    outlier is something to verify, not a likely error: banquets and group
    orders are genuine far outliers, so staff are asked to check it.
    """

    id: ClassVar[str] = "AMT-002"
    version: ClassVar[str] = "1"
    family: ClassVar[str] = "AMT"
    default_severity: ClassVar[str] = "medium"
    specificity: ClassVar[int] = 20
    certainty: ClassVar[str] = "verify"
    action: ClassVar[str] = "check"
    title_en: ClassVar[str] = "Unusual amount"
    title_zh: ClassVar[str] = "金额异常"
    Params = OutlierParams

    def check(self, state: RuleState, obs: Observation, now: datetime) -> list[Finding]:
        view = obs.view
        if not obs.is_new or not is_charge(view):
            return []
        base = _baseline(state, self.id, self.params.min_history)
        if base is None:
            return []
        value = view.amount_minor
        p = self.params
        if base.method == "constant":
            ratio = Decimal(value) / Decimal(base.median_minor)
            high, low = ratio > p.flat_factor, ratio * p.flat_factor < 1
            if not (high or (low and p.flag_low)):
                return []
            score: Any = f"{ratio:.2f}x"
            threshold: Any = f"{p.flat_factor}x"
        else:
            z = base.modified_z(value)
            # Banquets and cartons of cigarettes sit far out on the z scale yet recur every week: above the
            # median only an amount beyond the top 0.1% of the shop's own last 30 days, with fewer than
            # known_count sales within 10% of it (a set menu plus drinks is near the set menu), is unusual.
            high = (z > float(p.z_cut) and value > base.p999_minor
                    and base.near_count(value) < p.known_count)
            low = z < -float(p.z_cut)
            if not (high or (low and p.flag_low)):
                return []
            score, threshold = round(z, 2), float(p.z_cut)
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
                     near_amount=base.near_count(value), known_count=p.known_count),
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
