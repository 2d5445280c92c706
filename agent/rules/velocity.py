"""Card velocity (family VEL)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, ClassVar

from agent.rules.base import BaseRule, Finding, Observation, evidence, is_charge
from agent.rules.params import Duration, RuleParams, must
from agent.rules.state import RuleState
from agent.rules.text import format_duration, hhmm, money, vouchers


class VelocityParams(RuleParams):
    count: Annotated[int, must(lambda v: v >= 2, "must be at least 2")] = 3
    window: Duration = timedelta(minutes=10)


class CardVelocity(BaseRule[VelocityParams]):
    """VEL-001: one card approved ``count`` (3) or more times within ``window`` (10 min), any amounts.

    Counts approved charges on the card in [this one - window, this one]
    (inclusive) that were not voided; each further charge in the burst is
    flagged too, since each is one more to look at. Amounts may differ (a
    stolen card run through several tickets), so the action is "check".
    """

    id: ClassVar[str] = "VEL-001"
    version: ClassVar[str] = "1"
    family: ClassVar[str] = "VEL"
    default_severity: ClassVar[str] = "medium"
    specificity: ClassVar[int] = 10
    certainty: ClassVar[str] = "verify"
    title_en: ClassVar[str] = "Card used repeatedly"
    title_zh: ClassVar[str] = "同卡短时多次消费"
    action: ClassVar[str] = "check"
    Params = VelocityParams

    def state_horizon(self) -> timedelta:
        return self.params.window

    def check(self, state: RuleState, obs: Observation, now: datetime) -> list[Finding]:
        view = obs.view
        card = view.card
        if not obs.is_new or not is_charge(view) or not card:
            return []
        w = self.params.window
        earlier = state.other_charges(view, view.utc - w, view.utc)
        involved = [*earlier, view]
        if len(involved) < self.params.count:
            return []
        window = format_duration(w)
        amounts = ", ".join(money(v) for v in involved)
        return [self.finding(
            view, earlier,
            f"Card {card} was charged {len(involved)} times within {window} ({amounts}; vouchers "
            f"{vouchers(involved)}; last at {hhmm(view)})",
            f"卡 {card} 在 {window} 内被扣款 {len(involved)} 次（{amounts}；凭证号 {vouchers(involved)}；"
            f"最近一笔 {hhmm(view)}）",
            evidence(len(involved), self.params.count, window_seconds=int(w.total_seconds())),
        )]
