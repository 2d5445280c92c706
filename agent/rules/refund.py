"""Refund checks (family REF)."""

from __future__ import annotations

from datetime import datetime, timedelta
from itertools import chain
from typing import ClassVar

from agent.rules.base import BaseRule, Finding, Observation, TxnView, evidence, is_charge
from agent.rules.params import Duration, RuleParams
from agent.rules.state import RuleState
from agent.rules.text import amount, day, money


class RefundParams(RuleParams):
    window: Duration = timedelta(days=30)


class UnmatchedRefund(BaseRule[RefundParams]):
    """REF-001: a refund with no sale on that card in the last 30 days, or larger than its sale.

    Sales come from the journal (``History.sales_for_card``) plus the rules'
    own memory. The original is the sale the refund names (original RRN or
    voucher) when it names one, else any sale on the card. "No matching sale"
    is only claimed when the journal covers the whole look-back
    (``History.earliest()`` at or before its start); before that the rule
    counts "insufficient history" and stays silent. A refund larger than the
    sale it matched is flagged whatever the coverage. The action is "check":
    a refund cannot be voided into safety by the rules.
    """

    id: ClassVar[str] = "REF-001"
    version: ClassVar[str] = "1"
    family: ClassVar[str] = "REF"
    default_severity: ClassVar[str] = "medium"
    specificity: ClassVar[int] = 10
    certainty: ClassVar[str] = "verify"
    title_en: ClassVar[str] = "Refund without a matching sale"
    title_zh: ClassVar[str] = "退货无对应消费"
    action: ClassVar[str] = "check"
    Params = RefundParams

    def check(self, state: RuleState, obs: Observation, now: datetime) -> list[Finding]:
        view = obs.view
        t = view.txn
        if not obs.is_new or t.kind != "refund" or not view.approved:
            return []
        if not view.card:
            state.note_insufficient(self.id)
            return []
        since = view.utc - self.params.window
        sales = _sales(state, view.card, since, view.utc)
        named = bool(t.original_rrn or t.original_voucher_no)
        if named:
            candidates = [s for s in sales if (t.original_rrn and s.txn.rrn == t.original_rrn) or (
                t.original_voucher_no and s.txn.voucher_no == t.original_voucher_no
                and (t.terminal_id is None or s.txn.terminal_id in (None, t.terminal_id)))]
        else:
            candidates = sales
        if candidates:
            best = max(candidates, key=lambda s: s.amount_minor)
            if view.amount_minor <= best.amount_minor:
                return []
            return [self._larger(view, best, named)]
        if not _covers(state, since):
            state.note_insufficient(self.id)
            return []
        original = f"RRN {t.original_rrn}" if t.original_rrn else f"voucher {t.original_voucher_no}"
        original_zh = f"RRN {t.original_rrn}" if t.original_rrn else f"凭证号 {t.original_voucher_no}"
        ref = f" (original {original})" if named else ""
        ref_zh = f"（原交易 {original_zh}）" if named else ""
        days = self.params.window.days
        return [self.finding(
            view, [],
            f"Refund {money(view)} on card {view.card} (voucher {view.voucher_label}, {day(view)}) has no "
            f"matching sale on that card in the last {days} days{ref}",
            f"退货 {money(view)}（卡 {view.card}，凭证号 {view.voucher_label}，{day(view)}）"
            f"在最近 {days} 天内找不到该卡的对应消费{ref_zh}",
            evidence(view.amount_minor, None, {"sales_on_card": len(sales), "window_days": days}),
        )]

    def _larger(self, view: TxnView, sale: TxnView, named: bool) -> Finding:
        cur = view.txn.currency
        which_en = "the sale it refunds" if named else "any sale on that card"
        which_zh = "原消费" if named else "该卡任何一笔消费"
        return self.finding(
            view, [sale],
            f"Refund {money(view)} on card {view.card} (voucher {view.voucher_label}) "
            f"is larger than {which_en} "
            f"({amount(sale.amount_minor, cur)}, voucher {sale.voucher_label}, {day(sale)})",
            f"退货 {money(view)}（卡 {view.card}，凭证号 {view.voucher_label}）超过{which_zh}"
            f"（{amount(sale.amount_minor, cur)}，凭证号 {sale.voucher_label}，{day(sale)}）",
            evidence(view.amount_minor, sale.amount_minor),
        )


def _sales(state: RuleState, card: str, since: datetime, until: datetime) -> list[TxnView]:
    seen: dict[str, TxnView] = {}
    for v in chain(state.history.sales_for_card(card, since, until), state.card_history(card, since, until)):
        if is_charge(v):
            seen.setdefault(v.key, v)
    return sorted(seen.values(), key=lambda v: v.utc)


def _covers(state: RuleState, since: datetime) -> bool:
    if not state.has_history:
        return False
    earliest = getattr(state.history, "earliest", None)
    if earliest is None:
        return False
    first = earliest()
    return first is not None and first <= since
