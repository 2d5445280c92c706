"""Operator voids (family VOID)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Annotated, Any, ClassVar

from pydantic import field_validator

from agent.rules.base import BaseRule, Finding, Observation, TxnView, evidence, is_charge
from agent.rules.params import Percent, RuleParams, must
from agent.rules.state import RuleState
from agent.rules.text import vouchers

Tally = Annotated[int, must(lambda v: v >= 0, "must be >= 0")]


class VoidParams(RuleParams):
    max_voids: Tally = 5
    max_percent: Percent = Decimal("5")
    min_shift_transactions: Tally = 20
    # The percentage needs this many voids too: two voids early in a shift (2 of 25 charges is 8%) happen to
    # honest cashiers about one day a month at a 0.4% void rate; three that early, a few times a year.
    min_percent_voids: Annotated[int, must(lambda v: v >= 1, "must be at least 1")] = 3
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


class OperatorVoids(BaseRule[VoidParams]):
    """VOID-001: an operator voids more than ``max_voids`` (5) transactions, or more than ``max_percent``
    (5%) of their charges, in one shift.

    A shift is the operator plus the local business day (starting at
    ``day_starts``, 00:00 by default; a bar open past midnight sets "05:00").
    The percentage is only judged once the operator has ``min_shift_transactions``
    (20) approved charges that shift and ``min_percent_voids`` (3) voids: 1 void
    in 3 sales is 33% and means nothing, nor do 2 in the first 25. Counts are
    kept per shift as transactions are observed (O(1) per transaction; a warm
    restart replays the last day into them). The finding is raised on the void
    that crosses a threshold, not on every void after it, so one shift makes
    one alert per crossing. Reversals (often automatic,
    after a time-out) are not counted.
    """

    id: ClassVar[str] = "VOID-001"
    version: ClassVar[str] = "2"
    family: ClassVar[str] = "VOID"
    default_severity: ClassVar[str] = "medium"
    specificity: ClassVar[int] = 10
    certainty: ClassVar[str] = "verify"
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
        return (charges >= p.min_shift_transactions and charges > 0 and voids >= p.min_percent_voids
                and voids * 100 > p.max_percent * charges)

    def _shifts(self, state: RuleState) -> dict[tuple[str, date], Shift]:
        shifts: dict[tuple[str, date], Shift] = state.tallies.setdefault(self.id, {})
        return shifts

    def observe(self, state: RuleState, view: TxnView) -> None:
        op = view.txn.operator
        if not op:
            return
        is_void = view.approved and view.txn.kind == "void"
        if not is_void and not is_charge(view):
            return
        shift = self._shifts(state).setdefault((op, self._business_day(view)), Shift())
        shift.last_utc = max(shift.last_utc, view.utc) if shift.last_utc else view.utc
        if is_void:
            shift.voids += 1
            shift.recent_voids.append(view)
        else:
            shift.charges += 1

    def prune(self, state: RuleState, now: datetime) -> None:
        cutoff = now - state.horizon
        shifts = self._shifts(state)
        for key in [k for k, s in shifts.items() if s.last_utc is not None and s.last_utc < cutoff]:
            del shifts[key]

    def check(self, state: RuleState, obs: Observation, now: datetime) -> list[Finding]:
        view = obs.view
        op = view.txn.operator
        if not obs.is_new or view.txn.kind != "void" or not view.approved:
            return []
        if not op:
            state.note_insufficient(self.id)
            return []
        day = self._business_day(view)
        shift = self._shifts(state).get((op, day)) or Shift()
        charges, before = shift.charges, shift.voids
        if not self._exceeds(before + 1, charges) or self._exceeds(before, charges):
            return []
        n = before + 1
        voids = list(shift.recent_voids)
        pct = f"{Decimal(n * 100) / charges:.1f}%" if charges else "n/a"
        involved = [*voids, view]
        return [self.finding(
            view, voids,
            f"Operator {op} has voided {n} transactions this shift ({day}; "
            f"{pct} of {charges} charges; vouchers {vouchers(involved)}); limit {self.params.max_voids} "
            f"or {self.params.max_percent}%",
            f"操作员 {op} 本班次（{day}）已撤销 {n} 笔交易"
            f"（占 {charges} 笔消费的 {pct}；"
            f"凭证号 {vouchers(involved)}）；上限 {self.params.max_voids} 笔或 {self.params.max_percent}%",
            evidence(n, self.params.max_voids, {"charges": charges,
                                                "min_shift_transactions": self.params.min_shift_transactions},
                     max_percent=str(self.params.max_percent)),
        )]

    def _business_day(self, view: TxnView) -> date:
        starts = self.params.day_starts
        return (view.local - timedelta(hours=starts.hour, minutes=starts.minute)).date()


@dataclass(slots=True)
class Shift:
    """Running counts for one operator and business day (mutable: updated on every observe)."""

    charges: int = 0
    voids: int = 0
    # The evidence lists the latest voids; older ones are only counted.
    recent_voids: deque[TxnView] = field(default_factory=lambda: deque(maxlen=20))
    last_utc: datetime | None = None
