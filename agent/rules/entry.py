"""Card entry mode (family ENTRY)."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

from agent.rules.base import BaseRule, Finding, Observation, evidence, is_charge
from agent.rules.params import Money, RuleParams
from agent.rules.state import RuleState
from agent.rules.text import amount, hhmm, money
from agent.units import in_currency


class ManualEntryParams(RuleParams):
    min_amount: Money = 0


class ManualEntry(BaseRule[ManualEntryParams]):
    """ENTRY-001: a card number keyed by hand on a card-present terminal.

    At a shop till the card is there to be dipped or tapped; keying the number
    skips chip and PIN and is how stolen card numbers are charged. It is also
    what staff do when a chip is damaged, so the action is "check" (compare the
    card and the holder's ID), not void. ``min_amount`` ignores small tickets.
    """

    id: ClassVar[str] = "ENTRY-001"
    version: ClassVar[str] = "1"
    family: ClassVar[str] = "ENTRY"
    default_severity: ClassVar[str] = "medium"
    specificity: ClassVar[int] = 10
    certainty: ClassVar[str] = "verify"
    title_en: ClassVar[str] = "Card number keyed by hand"
    title_zh: ClassVar[str] = "手工输入卡号"
    action: ClassVar[str] = "check"
    Params = ManualEntryParams

    def check(self, state: RuleState, obs: Observation, now: datetime) -> list[Finding]:
        view = obs.view
        if not obs.is_new or not is_charge(view) or view.txn.entry_mode != "manual":
            return []
        floor = in_currency(self.params.min_amount, view.txn.currency)
        if view.amount_minor < floor:
            return []
        who = f" by operator {view.txn.operator}" if view.txn.operator else ""
        who_zh = f"（操作员 {view.txn.operator}）" if view.txn.operator else ""
        return [self.finding(
            view, [],
            f"{money(view)} at {hhmm(view)} on card {view.card or '?'} was keyed by hand{who} "
            f"(voucher {view.voucher_label}); check the card and the card holder",
            f"{hhmm(view)} 卡 {view.card or '?'} 的 {money(view)} 为手工输入卡号{who_zh}"
            f"（凭证号 {view.voucher_label}）；请核对卡片与持卡人",
            evidence("manual", ["chip", "contactless", "swipe", "qr"],
                     {"min_amount_minor": floor}, floor_text=amount(floor, view.txn.currency)),
        )]
