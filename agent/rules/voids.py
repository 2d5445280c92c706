"""Operator voids (family VOID)."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, ClassVar

from pydantic import field_validator

from agent.rules.base import BaseRule, Finding, Observation, RuleParams, TxnView, evidence, is_charge
from agent.rules.state import RuleState
from agent.rules.text import vouchers


class VoidParams(RuleParams):
    max_voids: int = 5
    max_percent: Decimal = Decimal("5")
    min_shift_transactions: int = 20
    day_starts: time = time(0, 0)

    @field_validator("day_starts", mode="before")
    @classmethod
    def _hhmm(cls, v: Any) -> Any:
        if isinstance(v, str):
            try:
                return time.fromisoformat(v)
            except ValueError:
                raise ValueError(f"{v!r} is not a time like \"04:00\"") from None
        return v

    @field_validator("max_voids", "min_shift_transactions")
    @classmethod
    def _nonneg(cls, v: int) -> int:
        if v < 0:
            raise ValueError("must be >= 0")
        return v

    @field_validator("max_percent")
    @classmethod
    def _pct(cls, v: Decimal) -> Decimal:
        if not Decimal(0) < v < Decimal(100):
            raise ValueError("must be between 0 and 100 (percent)")
        return v


class OperatorVoids(BaseRule[VoidParams]):
    """VOID-001: an operator voids more than ``max_voids`` (5) transactions, or more than ``max_percent``
    (5%) of their charges, in one shift.

    A shift is the operator plus the local business day (starting at
    ``day_starts``, 00:00 by default; a bar open past midnight sets "05:00").
    The percentage is only judged once the operator has ``min_shift_transactions``
    (20) approved charges that shift: 1 void in 3 sales is 33% and means
    nothing. The finding is raised on the void that crosses a threshold, not on
    every void after it, so one shift makes one alert per crossing. Reversals
    (often automatic, after a time-out) are not counted.
    """

    id: ClassVar[str] = "VOID-001"
    version: ClassVar[str] = "1"
    family: ClassVar[str] = "VOID"
    default_severity: ClassVar[str] = "medium"
    specificity: ClassVar[int] = 10
    title_en: ClassVar[str] = "Many voids by one operator"
    title_zh: ClassVar[str] = "操作员撤销过多"
    action: ClassVar[str] = "check"
    Params = VoidParams

    def state_horizon(self) -> timedelta:
        return timedelta(hours=25)  # one business day, plus a DST day's extra hour

    def _exceeds(self, voids: int, charges: int) -> bool:
        p = self.params
        if voids > p.max_voids:
            return True
        return charges >= p.min_shift_transactions and charges > 0 and voids * 100 > p.max_percent * charges

    def check(self, state: RuleState, obs: Observation, now: datetime) -> list[Finding]:
        view = obs.view
        op = view.txn.operator
        if not obs.is_new or view.txn.kind != "void" or not view.approved:
            return []
        if not op:
            state.note_insufficient(self.id)
            return []
        start_local = datetime.combine(self._business_day(view), self.params.day_starts, tzinfo=state.tz)
        start = start_local.astimezone(view.utc.tzinfo)
        voids: list[TxnView] = []
        charges = 0
        for v in state.operator_history(op, start, view.utc):
            if v.key == view.key or self._business_day(v) != self._business_day(view):
                continue
            if v.approved and v.txn.kind == "void":
                voids.append(v)
            elif is_charge(v):
                charges += 1
        if not self._exceeds(len(voids) + 1, charges) or self._exceeds(len(voids), charges):
            return []
        n = len(voids) + 1
        pct = f"{Decimal(n * 100) / charges:.1f}%" if charges else "n/a"
        involved = [*voids, view]
        return [self.finding(
            view, voids,
            f"Operator {op} has voided {n} transactions this shift ({self._business_day(view)}; "
            f"{pct} of {charges} charges; vouchers {vouchers(involved)}); limit {self.params.max_voids} "
            f"or {self.params.max_percent}%",
            f"操作员 {op} 本班次（{self._business_day(view)}）已撤销 {n} 笔交易"
            f"（占 {charges} 笔消费的 {pct}；"
            f"凭证号 {vouchers(involved)}）；上限 {self.params.max_voids} 笔或 {self.params.max_percent}%",
            evidence(n, self.params.max_voids, {"charges": charges,
                                                "min_shift_transactions": self.params.min_shift_transactions},
                     max_percent=str(self.params.max_percent)),
        )]

    def _business_day(self, view: TxnView) -> date:
        starts = self.params.day_starts
        return (view.local - timedelta(hours=starts.hour, minutes=starts.minute)).date()
