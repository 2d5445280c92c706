"""Duplicate-charge rules (family DUP)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, ClassVar

from pydantic import BeforeValidator

from agent.rules.base import Finding, Observation, RuleParams, duration_field
from agent.rules.state import RuleState
from agent.rules.text import hhmm, money, vouchers
from agent.units import format_duration

Duration = Annotated[timedelta, BeforeValidator(duration_field)]


class ExactDuplicate:
    """DUP-001: the same masked card charged the same amount twice, on different vouchers."""

    id: ClassVar[str] = "DUP-001"
    version: ClassVar[str] = "1"
    family: ClassVar[str] = "DUP"
    default_severity: ClassVar[str] = "high"
    specificity: ClassVar[int] = 30
    title_en: ClassVar[str] = "Duplicate charge"
    title_zh: ClassVar[str] = "重复扣款"

    class Params(RuleParams):
        window: Duration = timedelta(minutes=10)

    def __init__(self, params: RuleParams) -> None:
        assert isinstance(params, self.Params)
        self.params = params
        self.severity = params.severity or self.default_severity

    def check(self, state: RuleState, obs: Observation, now: datetime) -> list[Finding]:
        view = obs.view
        t = view.txn
        if not obs.is_new or t.kind != "sale" or not view.approved or not t.card:
            return []
        since = view.utc - self.params.window
        earlier = [
            v for v in state.card_history(t.card, since)
            if v.key != view.key and v.utc <= view.utc and v.txn.kind == "sale" and v.approved
            and v.amount_minor == t.amount_minor and v.voucher_label != view.voucher_label
        ]
        if not earlier:
            return []
        gap = view.utc - earlier[-1].utc
        window = format_duration(self.params.window)
        involved = [*earlier, view]
        return [Finding(
            rule=self.id, version=self.version, family=self.family, severity=self.severity,
            specificity=self.specificity, subject=view, related=tuple(earlier),
            reason_en=(f"Same card {t.card} charged {money(view)} {len(involved)} times within {window} "
                       f"(vouchers {vouchers(involved)}; last at {hhmm(view)})"),
            reason_zh=(f"同一张卡 {t.card} 在 {window} 内被扣 {money(view)} 共 {len(involved)} 次"
                       f"（凭证号 {vouchers(involved)}；最近一笔 {hhmm(view)}）"),
            evidence={"value": int(gap.total_seconds()), "threshold": int(self.params.window.total_seconds()),
                      "unit": "seconds between charges", "count": len(involved)},
        )]
