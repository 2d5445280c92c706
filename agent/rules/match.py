"""The till's sale against the terminal's charge (family MATCH, issue 17): certain where both are seen.

These rules do not guess from statistics: agent/match.py pairs each charge on the terminal line with a
tender of a sale the till recorded (its printed 小票 or its JSON line), and asks these classes to word
what it found. So ``check`` (the per-transaction hook every rule has) finds nothing; the findings come
from :meth:`found`, called by the matcher when a charge's grace is over. They are still rules: they
appear in the catalogue, take ``[rules.MATCH-00x] enabled / severity`` and open alerts through the
alert book like any other.

Specificity: MATCH-004 (approved after the till gave up, 50) > MATCH-002 (a second charge for one sale, 40)
> MATCH-001 (the wrong amount, 30) > MATCH-003 (no sale at all, 10); one of them is decided per charge, so
they never fold. MATCH-004 comes from the ECR link (agent/ecr_link.py), not from the till's orders.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, ClassVar

from agent.rules.base import BaseRule, Finding, Observation, TxnView, evidence
from agent.rules.params import RuleParams
from agent.rules.state import RuleState
from agent.rules.text import amount, charge_en, charge_zh, format_duration


class MatchParams(RuleParams):
    pass


class _MatchRule(BaseRule[MatchParams]):
    family: ClassVar[str] = "MATCH"
    version: ClassVar[str] = "1"
    Params = MatchParams

    def check(self, state: RuleState, obs: Observation, now: datetime) -> list[Finding]:
        return []   # decided by agent/match.py, which calls found()

    def _found(self, subject: TxnView, related: Sequence[TxnView], en: str, zh: str,
               ev: dict[str, Any]) -> Finding:
        return replace(self.finding(subject, related, en, zh, ev), certainty=self.certainty)


def _sale(order_no: str | None) -> tuple[str, str]:
    return (f"sale {order_no}" if order_no else "the sale", f"收银单 {order_no}" if order_no else "收银单")


class ChargeDiffersFromSale(_MatchRule):
    """MATCH-001: the terminal charged another amount than the sale's card (or QR) tender.

    Any difference, not only an extra zero: 680.00 or 86.00 for a 68.00 sale. The remedy is a void and
    a new charge of the intended amount (``evidence["intended_minor"]``).
    """

    id: ClassVar[str] = "MATCH-001"
    certainty: ClassVar[str] = "error"      # the till says what was sold: not a guess
    default_severity: ClassVar[str] = "high"
    specificity: ClassVar[int] = 30
    title_en: ClassVar[str] = "Charge differs from the sale"
    title_zh: ClassVar[str] = "扣款金额与收银单不符"

    def found(self, charge: TxnView, *, intended_minor: int, method: str, order_no: str | None,
              order_total_minor: int, seconds_apart: int, also: Sequence[str] = ()) -> Finding:
        cur = charge.txn.currency
        meant = amount(intended_minor, cur)
        sale_en, sale_zh = _sale(order_no)
        how_zh = "扫码" if method == "qr" else "刷卡"
        return self._found(
            charge, [],
            f"{charge_en(charge)} but the till's {sale_en} asked {meant} by {method}: void it and charge "
            f"{meant}",
            f"{sale_zh}{how_zh}应收 {meant}，终端实扣 {charge_zh(charge)}：请撤销后重新收取 {meant}",
            evidence(charge.amount_minor, intended_minor, intended_minor=intended_minor,
                     charged_minor=charge.amount_minor, order_no=order_no, order_total_minor=order_total_minor,
                     tender_method=method, seconds_apart=seconds_apart, **_also(also)))


class SecondChargeForSale(_MatchRule):
    """MATCH-002: two charges for one sale: its tender was already matched to an earlier charge.

    Certain whatever the gap between the two (up to ``[match] duplicate_window`` after the sale).
    """

    id: ClassVar[str] = "MATCH-002"
    certainty: ClassVar[str] = "error"      # the till says what was sold: not a guess
    default_severity: ClassVar[str] = "high"
    specificity: ClassVar[int] = 40
    title_en: ClassVar[str] = "Charged twice for one sale"
    title_zh: ClassVar[str] = "同一笔销售扣款两次"

    def found(self, charge: TxnView, first: TxnView, *, order_no: str | None, also: Sequence[str] = ()) -> Finding:
        sale_en, sale_zh = _sale(order_no)
        gap = int(abs((charge.utc - first.utc).total_seconds()))
        return self._found(
            charge, [first],
            f"{charge_en(charge)} is a second charge for the till's {sale_en}, already paid by voucher "
            f"{first.voucher_label} {format_duration_s(gap)} earlier: void it",
            f"{sale_zh}已由凭证号 {first.voucher_label} 扣款，{charge_zh(charge)}为重复扣款"
            f"（相隔 {format_duration_s(gap)}）：请撤销",
            evidence(gap, None, unit="seconds between charges", order_no=order_no,
                     first_voucher=first.voucher_label, **_also(also)))


class ChargeWithoutSale(_MatchRule):
    """MATCH-003: a charge no sale of the till accounts for, after the grace.

    An unrecorded sale (money taken outside the till) or a sale the till gave up on: a person checks.
    """

    id: ClassVar[str] = "MATCH-003"
    default_severity: ClassVar[str] = "medium"
    specificity: ClassVar[int] = 10
    title_en: ClassVar[str] = "Charge with no sale"
    title_zh: ClassVar[str] = "扣款无对应收银单"
    action: ClassVar[str] = "check"
    certainty: ClassVar[str] = "verify"

    def found(self, charge: TxnView, *, grace_seconds: int, also: Sequence[str] = ()) -> Finding:
        return self._found(
            charge, [],
            f"{charge_en(charge)} matches no sale on the till (waited {format_duration_s(grace_seconds)} for "
            f"its receipt): check what it was for",
            f"{charge_zh(charge)}无对应收银单（已等待 {format_duration_s(grace_seconds)}）：请核实这笔扣款",
            evidence(charge.amount_minor, None, grace_seconds=grace_seconds, **_also(also)))


class ApprovedAfterGivingUp(_MatchRule):
    """MATCH-004: the terminal approved a request the till had already aborted or timed out on.

    The till shows "failed", the cashier charges again, the customer pays twice. The charge to void is
    the late-approved one: the till's records (and the customer's receipt from the till) follow the
    retry, the charge the till saw succeed. The exception, the till recorded the late charge itself (its
    sale of that amount is paid by no other charge), is decided before this is called
    (agent/match.py): then nothing is wrong and nothing is raised.
    """

    id: ClassVar[str] = "MATCH-004"
    certainty: ClassVar[str] = "error"      # the wire shows the till giving up before the approval
    default_severity: ClassVar[str] = "high"
    specificity: ClassVar[int] = 50
    title_en: ClassVar[str] = "Approved after the till gave up"
    title_zh: ClassVar[str] = "收银机已放弃后终端才批准"

    def found(self, charge: TxnView, *, how: str, asked_minor: int | None, gave_up_seconds: int,
              late_seconds: int, retry: TxnView | None = None, request_id: str | None = None,
              also: Sequence[str] = ()) -> Finding:
        aborted = how == "aborted"
        why_en = "aborted" if aborted else f"timed out after {format_duration_s(gave_up_seconds)}"
        why_zh = "已取消" if aborted else f"等待 {format_duration_s(gave_up_seconds)} 后已超时"
        if retry is not None:
            keep_en = f"the till's sale is paid by the retry, voucher {retry.voucher_label}"
            keep_zh = f"收银机记录的是重新收取的凭证号 {retry.voucher_label}"
        else:
            keep_en = "the till shows this payment as failed"
            keep_zh = "收银机显示此笔支付失败"
        return self._found(
            charge, [retry] if retry is not None else [],
            f"{charge_en(charge)} was approved {format_duration_s(late_seconds)} after the till {why_en} its "
            f"request; {keep_en}: void this late charge, not the one the till recorded",
            f"收银机请求{why_zh}，终端在 {format_duration_s(late_seconds)} 后仍批准了 {charge_zh(charge)}；"
            f"{keep_zh}：请撤销这笔迟到的扣款，保留收银机记录的那笔",
            evidence(late_seconds, gave_up_seconds, unit="seconds after the till gave up", gave_up=how,
                     late_seconds=late_seconds, gave_up_after_seconds=gave_up_seconds,
                     asked_minor=asked_minor, request_id=request_id,
                     retry_voucher=retry.voucher_label if retry is not None else None, **_also(also)))


def format_duration_s(seconds: int) -> str:
    return format_duration(timedelta(seconds=max(seconds, 0)))


def _also(rules: Sequence[str]) -> dict[str, Any]:
    # The statistical findings held for this charge (agent/match.py) ride along, as fold_by_family does.
    return {"also_matched": sorted(rules)} if rules else {}
