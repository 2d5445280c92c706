"""What staff should do about a finding: void before the cutoff, refund after it.

The steps follow the usual UnionPay-style terminal menus (管理 / 撤销); the
wording is kept here, in one place, so every channel says the same thing.
"""

from __future__ import annotations

from datetime import datetime, time, timedelta, tzinfo

from agent.model import Suggestion, Transaction
from agent.units import format_money


def next_cutoff(after: datetime, cutoff: time | None, tz: tzinfo) -> datetime | None:
    """The first settlement cutoff strictly after ``after`` on the shop's wall clock (None = manual)."""
    if cutoff is None:
        return None
    local = after.astimezone(tz)
    for days in range(0, 3):
        day = local.date() + timedelta(days=days)
        # Round-trip through UTC so a cutoff inside a DST gap lands on a real instant.
        candidate = datetime.combine(day, cutoff, tzinfo=tz).astimezone(tz)
        if candidate > local:
            return candidate
    raise AssertionError("unreachable: a cutoff exists within two days")


def _ref(txn: Transaction) -> tuple[str, str]:
    """(label_zh, value) naming the voucher staff must type in."""
    if txn.voucher_no:
        return "原凭证号", txn.voucher_no
    if txn.receipt_no:
        return "原票据号 (receipt no.)", txn.receipt_no
    if txn.trace_no:
        return "原流水号 (trace no.)", txn.trace_no
    return "原交易参考号 (RRN)", txn.rrn or "?"


def void_suggestion(txn: Transaction, *, deadline: datetime | None, tz: tzinfo) -> Suggestion:
    label, ref = _ref(txn)
    amount = format_money(txn.amount_minor, txn.currency)
    when = txn.time.astimezone(tz).strftime("%H:%M") if txn.time else "?"
    by = deadline.strftime("%H:%M") if deadline else "结算前 / before settlement"
    card = f"，卡号 {txn.card}" if txn.card else ""
    card_en = f", card {txn.card}" if txn.card else ""
    operator = f"，操作员 {txn.operator}" if txn.operator else ""
    steps_zh = (
        f"请在 {by} 前撤销凭证号 {ref}（{amount}，{when}{card}{operator}）：在收款终端按 管理 → 撤销，"
        f"输入主管密码，输入{label} {ref}，核对金额 {amount} 后确认。"
        "撤销只能全额、且只能撤销本批次（当天未结算）的交易。"
    )
    steps_en = (
        f"Void voucher {ref} ({amount}, {when}{card_en}) before {by}: on the terminal choose "
        f"Manage → Void (撤销), enter the supervisor password, enter original voucher {ref}, check the amount "
        f"{amount} and confirm. A void is full-amount only and only for this open batch (same day, not settled)."
    )
    return Suggestion(action="void", voucher_no=ref, amount_minor=txn.amount_minor, steps_zh=steps_zh,
                      steps_en=steps_en, deadline=deadline)


def check_suggestion(txn: Transaction, *, deadline: datetime | None, tz: tzinfo) -> Suggestion:
    _, ref = _ref(txn)
    amount = format_money(txn.amount_minor, txn.currency)
    by = deadline.strftime("%H:%M") if deadline else "结算前 / before settlement"
    return Suggestion(
        action="check", voucher_no=ref, amount_minor=txn.amount_minor,
        steps_zh=f"请核对凭证号 {ref}（{amount}）：确认无误可标记为正常；如有错误，请在 {by} 前撤销。",
        steps_en=(f"Check voucher {ref} ({amount}): if it is legitimate, mark it so; if it is wrong, void it "
                  f"before {by}."),
        deadline=deadline,
    )


def refund_suggestion(txn: Transaction, *, tz: tzinfo, evidence_path: str | None) -> Suggestion:
    _, ref = _ref(txn)
    amount = format_money(txn.amount_minor, txn.currency)
    date = txn.time.astimezone(tz).strftime("%Y-%m-%d") if txn.time else "?"
    rrn = txn.rrn or "（见签购单 / see the slip）"
    where = f" 证据包 / evidence: {evidence_path}" if evidence_path else ""
    steps_zh = (
        f"该批次已结算，无法撤销，只能退货：在终端选择 管理 → 退货，输入主管密码、原交易参考号 {rrn}、"
        f"原交易日期 {date} 和退货金额（可部分退货，最多 {amount}）。退款约 3–5 个工作日到账；"
        f"如终端无法退货，请联系收单机构或支付平台并提供证据。{where}"
    )
    steps_en = (
        f"The batch has settled, so a void is no longer possible; refund (退货) instead: on the terminal choose "
        f"Manage → Refund, enter the supervisor password, the original reference number {rrn}, the original "
        f"date {date} and the amount (partial allowed, at most {amount}). The money returns in 3–5 working "
        f"days; if the terminal cannot refund, contact the acquirer or payment platform with the evidence.{where}"
    )
    return Suggestion(action="refund", voucher_no=ref, amount_minor=txn.amount_minor, steps_zh=steps_zh,
                      steps_en=steps_en, deadline=None)
