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

from datetime import datetime, timedelta
from decimal import ROUND_CEILING, Decimal
from typing import Any, ClassVar

from pydantic import field_validator

from agent.rules.base import (
    BaseRule,
    Duration,
    Finding,
    Money,
    Observation,
    RuleParams,
    evidence,
    in_currency,
    is_charge,
)
from agent.rules.state import RuleState
from agent.rules.text import amount, format_duration, hhmm, money, vouchers


class SlipParams(RuleParams):
    min_history: int = 30
    max_power: int = 3            # 10x, 100x, 1000x
    z_cut: Decimal = Decimal("3.3")
    z_cut_unrounded: Decimal = Decimal("5.0")
    meant_z: Decimal = Decimal("2.0")

    @field_validator("min_history")
    @classmethod
    def _min(cls, v: int) -> int:
        if v < 10:
            raise ValueError("must be at least 10 (percentiles of fewer amounts mean little)")
        return v

    @field_validator("max_power")
    @classmethod
    def _power(cls, v: int) -> int:
        if not 1 <= v <= 4:
            raise ValueError("must be 1 to 4")
        return v

    @field_validator("z_cut", "z_cut_unrounded", "meant_z")
    @classmethod
    def _positive(cls, v: Decimal) -> Decimal:
        if v <= 0:
            raise ValueError("must be > 0")
        return v


class DecimalSlip(BaseRule[SlipParams]):
    """AMT-001: an extra zero (or two, or three): 1,280.00 keyed for 128.00.

    Needs two pieces of evidence on the log scale of the shop's own amounts
    (robust z-score: (ln amount - median) / spread, see agent.rules.baseline):

    * the amount itself is far above the shop's amounts: z >= ``z_cut`` (3.3);
    * amount / 10^k is an ordinary amount here: |z| <= ``meant_z`` (2.0), and the
      amount is an exact multiple of 10^k (a slip appends zeros);
    * amount / 10^k is rounded the way this shop's prices usually are (the
      baseline's ``usual_step``, e.g. whole yuan). A slip keeps the rounding of
      the amount meant and adds zeros, while an honest big ticket (a banquet,
      a carton of cigarettes) is rounded like any other ticket: 680.00 keyed
      for 68.00 ends in 0.00, a table of eight paying 683.00 does not. A meant
      amount off the usual step needs the stronger ``z_cut_unrounded`` (5.0).

    Of the k in 1..max_power that fit, the one whose meant amount is closest
    to the median is named. "Above P95 and amount/10 inside P05..P95" (version 1)
    was evidence of nothing: every whole-yuan amount is a multiple of 10 fen and
    a tenth of any large ticket is an ordinary one. The cut is tuned on simulated
    shops (agent.sim.evaluate, EVALUATION.md): a tenfold slip moves ln(amount) by
    2.30, which is z = 2.30 / spread; shops whose spread is wide (a convenience
    store, spread ~0.75) cannot tell a slipped 18.00 from an honest 180.00, and
    this rule stays quiet there rather than cry wolf.
    """

    id: ClassVar[str] = "AMT-001"
    version: ClassVar[str] = "2"
    family: ClassVar[str] = "AMT"
    default_severity: ClassVar[str] = "high"
    specificity: ClassVar[int] = 30
    title_en: ClassVar[str] = "Decimal slip"
    title_zh: ClassVar[str] = "金额疑似多输了零"
    Params = SlipParams

    def __init__(self, params: RuleParams) -> None:
        super().__init__(params)
        self._z_cut = float(self.params.z_cut)
        self._z_cut_unrounded = float(self.params.z_cut_unrounded)
        self._meant_z = float(self.params.meant_z)

    def check(self, state: RuleState, obs: Observation, now: datetime) -> list[Finding]:
        view = obs.view
        if not obs.is_new or not is_charge(view):
            return []
        base = state.baseline
        if base is None or base.count < self.params.min_history:
            state.note_insufficient(self.id)
            return []
        value = view.amount_minor
        z = base.modified_z(value)
        if z < min(self._z_cut, self._z_cut_unrounded):
            return []
        best: tuple[float, int, int, float] | None = None
        for k in range(1, self.params.max_power + 1):
            factor = 10**k
            if value % factor:
                break  # not a multiple of 10^k, so not of 10^(k+1) either
            meant = value // factor
            cut = self._z_cut if meant % base.usual_step == 0 else self._z_cut_unrounded
            meant_z = abs(base.modified_z(meant))
            if z >= cut and meant_z <= self._meant_z and (best is None or meant_z < best[0]):
                best = (meant_z, factor, meant, cut)
        if best is None:
            return []
        meant_z, factor, meant, cut = best
        cur = view.txn.currency
        usual = f"{amount(base.p05_minor, cur)}-{amount(base.p95_minor, cur)}"
        med = amount(base.median_minor, cur)
        return [self.finding(
            view, [],
            f"{money(view)} at {hhmm(view)} (voucher {view.voucher_label}) is far above this shop's amounts "
            f"(score {z:.1f} >= {cut:g}; median {med}, usual range {usual}) and is exactly {factor}x "
            f"{amount(meant, cur)}, an ordinary amount here; was {amount(meant, cur)} meant?",
            f"{hhmm(view)} 的 {money(view)}（凭证号 {view.voucher_label}）远高于本店常见金额"
            f"（评分 {z:.1f} >= {cut:g}；中位数 {med}，常见范围 {usual}），"
            f"且恰为常见金额 {amount(meant, cur)} 的 {factor} 倍；是否应为 {amount(meant, cur)}？",
            evidence(round(z, 2), cut, base.to_evidence(), factor=factor, meant_minor=meant,
                     meant_score=round(meant_z, 2), meant_threshold=self._meant_z),
        )]


class OutlierParams(RuleParams):
    window: Duration = timedelta(days=30)
    min_history: int = 30
    z_cut: Decimal = Decimal("3.5")
    flat_factor: Decimal = Decimal("5")
    flag_low: bool = False

    @field_validator("z_cut")
    @classmethod
    def _z(cls, v: Decimal) -> Decimal:
        if v <= 0:
            raise ValueError("must be > 0")
        return v

    @field_validator("flat_factor")
    @classmethod
    def _flat(cls, v: Decimal) -> Decimal:
        if v <= 1:
            raise ValueError("must be > 1 (a factor away from the constant amount)")
        return v

    @field_validator("min_history")
    @classmethod
    def _min(cls, v: int) -> int:
        if v < 10:
            raise ValueError("must be at least 10")
        return v


class AmountOutlier(BaseRule[OutlierParams]):
    """AMT-002: far outside this shop's range: modified z-score of ln(amount) above ``z_cut`` (3.5)
    and, on the high side, above the top 0.1% of the baseline's amounts (P99.9).

    Spread: MAD, else 1.253314 x mean absolute deviation (see agent.rules.baseline).
    When every sale in the baseline had one amount (no spread at all), only an
    amount more than ``flat_factor`` (5x) away from it is flagged. Only high
    amounts by default: an overcharge hurts the card holder and must be voided
    before settlement; small tickets (a bottle of water) are routine
    (``flag_low = true`` flags both sides).
    """

    id: ClassVar[str] = "AMT-002"
    version: ClassVar[str] = "1"
    family: ClassVar[str] = "AMT"
    default_severity: ClassVar[str] = "medium"
    specificity: ClassVar[int] = 20
    title_en: ClassVar[str] = "Unusual amount"
    title_zh: ClassVar[str] = "金额异常"
    Params = OutlierParams

    def check(self, state: RuleState, obs: Observation, now: datetime) -> list[Finding]:
        view = obs.view
        if not obs.is_new or not is_charge(view):
            return []
        base = state.baseline
        if base is None or base.count < self.params.min_history:
            state.note_insufficient(self.id)
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
            # median only an amount beyond the top 0.1% of the shop's own last 30 days is unusual.
            high, low = z > float(p.z_cut) and value > base.p999_minor, z < -float(p.z_cut)
            if not (high or (low and p.flag_low)):
                return []
            score, threshold = round(z, 2), float(p.z_cut)
        cur = view.txn.currency
        side_en, side_zh = ("above", "高于") if high else ("below", "低于")
        return [self.finding(
            view, [],
            f"{money(view)} at {hhmm(view)} (voucher {view.voucher_label}) "
            f"is far {side_en} this shop's usual amounts (median {amount(base.median_minor, cur)}, "
            f"usual range {amount(base.p05_minor, cur)}"
            f"-{amount(base.p95_minor, cur)}, score {score} > {threshold})",
            f"{hhmm(view)} 的 {money(view)}（凭证号 {view.voucher_label}）远{side_zh}本店常见金额"
            f"（中位数 {amount(base.median_minor, cur)}，常见范围 {amount(base.p05_minor, cur)}"
            f"-{amount(base.p95_minor, cur)}，评分 {score} > {threshold}）",
            evidence(score, threshold, base.to_evidence(), amount_minor=value),
        )]


class CeilingParams(RuleParams):
    ceiling: Money = 5_000_000    # 50,000.00

    @field_validator("ceiling")
    @classmethod
    def _positive(cls, v: int) -> int:
        if v <= 0:
            raise ValueError("must be more than 0")
        return v


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
            f"{money(view)} at {hhmm(view)} (voucher {view.voucher_label}) is above this shop's ceiling "
            f"of {amount(ceiling, cur)}",
            f"{hhmm(view)} 的 {money(view)}（凭证号 {view.voucher_label}）"
            f"超过本店单笔上限 {amount(ceiling, cur)}",
            evidence(view.amount_minor, ceiling),
        )]


class UnderLimitParams(RuleParams):
    limit: Money = 100_000        # 1,000.00: UnionPay QuickPass no-PIN/no-signature limit
    band_percent: Decimal = Decimal("5")
    count: int = 2
    window: Duration = timedelta(hours=24)

    @field_validator("band_percent")
    @classmethod
    def _band(cls, v: Decimal) -> Decimal:
        if not Decimal(0) < v < Decimal(100):
            raise ValueError("must be between 0 and 100 (percent)")
        return v

    @field_validator("count")
    @classmethod
    def _count(cls, v: int) -> int:
        if v < 2:
            raise ValueError("must be at least 2 (one charge is not a pattern)")
        return v

    @field_validator("limit")
    @classmethod
    def _limit(cls, v: int) -> int:
        if v <= 0:
            raise ValueError("must be more than 0")
        return v


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
        earlier = [v for v in state.card_history(card, view.utc - w, view.utc)
                   if v.key != view.key and is_charge(v) and low <= v.amount_minor < limit
                   and state.voided_by(v) is None]
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
