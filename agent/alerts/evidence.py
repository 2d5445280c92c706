"""Evidence that helps get the money back: what an acquirer or a payment platform asks for.

Two forms. On the alert itself (``alert.evidence``), so the webhook's CloudEvent data and the till page
carry it: ``transactions`` (every transaction of the finding, summarised), ``remedy`` (agent/alerts/remedy.py)
and, once the batch has closed, ``batch`` (its totals from the journal), ``statement_zh`` (a draft
情况说明 / 退款申请 with the facts filled in) and ``bundle`` (the folder below). As files in
``<state>/evidence/<local date>-<alert id>/`` for whoever files the claim: README.txt (shop, merchant and
terminal numbers, every transaction with its auth code and RRN, the batch totals), statement.txt, the
receipt text as printed, and evidence.json (records, sightings, reasoning, timeline, messages). Nothing in
either holds more than a masked card number (the journal never does).
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any

from agent.alerts.remedy import ShopFacts, describe
from agent.model import RETURNING_KINDS, Alert, Transaction, identity_key
from agent.store.journal import Journal
from agent.units import format_money

_KIND_ZH = {"sale": "消费", "void": "撤销", "refund": "退货", "reversal": "冲正", "preauth": "预授权",
            "preauth_complete": "预授权完成", "balance": "查余额"}
_UNKNOWN = "（请填写）"


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _local(txn: Transaction, tz: tzinfo) -> str:
    return txn.time.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S") if txn.time else "时间不明"


def summarize(transactions: tuple[Transaction, ...], tz: tzinfo) -> list[dict[str, Any]]:
    """Every transaction of a finding as a person and the page read it; the last one is the one acted on."""
    out = []
    for i, txn in enumerate(transactions):
        out.append({
            "role": "subject" if i == len(transactions) - 1 else "related",
            "label_zh": describe(txn, tz, original=False)[0],
            "time": txn.time.astimezone(tz).isoformat() if txn.time else None,
            "kind": txn.kind, "amount_minor": txn.amount_minor, "amount": format_money(txn.amount_minor, txn.currency),
            "card": txn.card, "card_type": txn.card_type, "entry_mode": txn.entry_mode,
            "voucher_no": txn.voucher_no, "rrn": txn.rrn, "auth_code": txn.auth_code, "batch_no": txn.batch_no,
            "terminal_id": txn.terminal_id, "merchant_id": txn.merchant_id,
        })
    return out


def batch_totals(journal: Journal, subject: Transaction, tz: tzinfo, now: datetime) -> dict[str, Any]:
    """The subject's batch so far (or, without a batch number, its terminal's local day): counts and amounts."""
    day = (subject.time or now).astimezone(tz).replace(hour=0, minute=0, second=0, microsecond=0)
    since, until = day, day + timedelta(days=1)
    by_kind = journal.batch_totals(subject.terminal_id, subject.batch_no, since, until)
    charges = [by_kind.get(k, (0, 0)) for k in ("sale", "preauth_complete")]
    returns = [by_kind.get(k, (0, 0)) for k in sorted(RETURNING_KINDS)]
    sales_count, sales_minor = sum(c for c, _ in charges), sum(a for _, a in charges)
    returns_count, returns_minor = sum(c for c, _ in returns), sum(a for _, a in returns)
    cur = subject.currency
    scope = "batch" if subject.batch_no else "day"
    where = f"批次 {subject.batch_no}" if subject.batch_no else "当天"
    text = (f"{where}：消费 {sales_count} 笔 {format_money(sales_minor, cur)}；撤销/退货 {returns_count} 笔 "
            f"{format_money(returns_minor, cur)}；净额 {format_money(sales_minor - returns_minor, cur)}")
    return {"scope": scope, "terminal_id": subject.terminal_id, "batch_no": subject.batch_no,
            "sales_count": sales_count, "sales_minor": sales_minor, "returns_count": returns_count,
            "returns_minor": returns_minor, "net_minor": sales_minor - returns_minor,
            "by_kind": {k: {"count": c, "amount_minor": a} for k, (c, a) in sorted(by_kind.items())}, "text_zh": text}


def _merchant(alert: Alert, shop: ShopFacts) -> tuple[str, str, str]:
    """(merchant name, merchant number, terminal number): the transactions' own, else the config's."""
    txns = alert.transactions
    merchant_id = next((t.merchant_id for t in reversed(txns) if t.merchant_id), None) or shop.merchant_id
    terminal_id = next((t.terminal_id for t in reversed(txns) if t.terminal_id), None)
    return shop.merchant_name or shop.name or _UNKNOWN, merchant_id or _UNKNOWN, terminal_id or _UNKNOWN


def _txn_line(i: int, txn: Transaction, tz: tzinfo) -> str:
    parts = [f"{i}. {_local(txn, tz)}", _KIND_ZH.get(txn.kind, txn.kind), format_money(txn.amount_minor, txn.currency)]
    for label, value in (("卡号", txn.card), ("凭证号", txn.voucher_no), ("参考号", txn.rrn), ("授权码", txn.auth_code),
                         ("批次号", txn.batch_no), ("支付方式", txn.card_type)):
        if value:
            parts.append(f"{label} {value}")
    return "  ".join(parts)


def _why_refund(alert: Alert) -> str:
    remedy = alert.evidence.get("remedy")
    if isinstance(remedy, dict) and remedy.get("where") == "app":
        return "该笔为扫码支付，终端无法撤销，需经支付平台退款。"
    return "该批次已结算，终端无法撤销。"


def statement_zh(alert: Alert, shop: ShopFacts, totals: dict[str, Any], *, tz: tzinfo, now: datetime,
                 title_zh: str) -> str:
    """A draft 情况说明 / 退款申请 for the acquirer or platform, facts filled in, blanks for what only people know."""
    name, merchant_id, terminal_id = _merchant(alert, shop)
    subject = alert.transactions[-1]
    suggestion = alert.suggestion
    refund_minor = suggestion.amount_minor if suggestion is not None else subject.amount_minor
    lines = [
        "情况说明（退款申请）",
        "",
        f"致：{shop.acquirer or '收单机构 / 支付平台'}",
        "",
        f"商户名称：{name}",
        f"商户编号：{merchant_id}",
        f"终端编号：{terminal_id}",
        "",
        f"事由：{title_zh}。{alert.reason_zh}",
        "",
        "涉及交易：",
        *(_txn_line(i, t, tz) for i, t in enumerate(alert.transactions, start=1)),
        "",
        f"需退还持卡人的是第 {len(alert.transactions)} 笔（{describe(subject, tz, original=False)[0]}），"
        f"金额 {format_money(refund_minor, subject.currency)}。{_why_refund(alert)}",
        f"结算情况：{totals['text_zh']}。",
        "",
        "特此说明，请协助办理退款。小票原文与交易记录附后。",
        "",
        f"联系人：{'_' * 10}  电话：{'_' * 12}",
        f"{name}（盖章）",
        now.astimezone(tz).strftime("%Y年%m月%d日"),
    ]
    return "\n".join(lines) + "\n"


def write_bundle(journal: Journal, alert: Alert, *, now: datetime, tz: tzinfo, root: Path, shop: ShopFacts,
                 totals: dict[str, Any], statement: str, path: Path | None = None) -> Path:
    folder = path or root / f"{now.astimezone(tz):%Y%m%d}-{alert.id}"
    folder.mkdir(parents=True, exist_ok=True)
    records: list[dict[str, Any]] = []
    receipt_lines: list[str] = []
    for txn in alert.transactions:
        key = identity_key(txn)
        txn_id = journal.txn_id_for_key(key) if key else None
        sightings = journal.sightings_of(txn_id) if txn_id is not None else []
        receipts = journal.receipts_of(txn_id) if txn_id is not None else []
        records.append({"transaction": txn.to_dict(), "sightings": sightings,
                        "receipts": [r.get("lines", []) for r in receipts]})
        for r in receipts:
            receipt_lines.append(f"# {describe(txn, tz, original=False)[0]}")
            receipt_lines.extend(r.get("lines", []))
            receipt_lines.append("-" * 32)
    name, merchant_id, terminal_id = _merchant(alert, shop)
    evidence = {
        "alert": alert.to_dict(),
        "shop": {"name": shop.name, "merchant_name": name, "merchant_id": merchant_id, "terminal_id": terminal_id,
                 "acquirer": shop.acquirer},
        "rule_reasoning": {"rule": alert.rule, "version": alert.rule_version, "reason": alert.reason,
                           "reason_zh": alert.reason_zh, "evidence": alert.evidence},
        "transactions": records,
        "batch": totals,
        "timeline": journal.alert_log(alert.id),
        "messages": journal.messages_for_alert(alert.id),
        "written": now.isoformat(),
    }
    _atomic_write(folder / "evidence.json", json.dumps(evidence, ensure_ascii=False, indent=2) + "\n")
    no_text = "（未捕获到小票文本 / no receipt text was captured）\n"
    _atomic_write(folder / "receipt.txt", "\n".join(receipt_lines) + "\n" if receipt_lines else no_text)
    _atomic_write(folder / "statement.txt", statement)
    summary = [
        "settleguard 证据包 / evidence bundle",
        "",
        f"店铺 / shop: {shop.name}",
        f"商户名称 / merchant: {name}",
        f"商户编号 / merchant no.: {merchant_id}",
        f"终端编号 / terminal no.: {terminal_id}",
        "",
        f"告警 / alert: {alert.code or '-'} {alert.id} ({alert.rule}, {alert.severity})",
        f"原因 / reason: {alert.reason_zh}",
        "",
        "交易 / transactions:",
        *(_txn_line(i, t, tz) for i, t in enumerate(alert.transactions, start=1)),
        "",
        f"结算 / batch: {totals['text_zh']}",
        "",
        "处理 / what to do:",
        alert.suggestion.steps_zh if alert.suggestion else "",
        "",
        "文件 / files: statement.txt (情况说明草稿 / draft statement), receipt.txt (小票原文 / receipt as printed),"
        " evidence.json (交易记录、规则依据、时间线 / records, reasoning, timeline)",
    ]
    _atomic_write(folder / "README.txt", "\n".join(summary) + "\n")
    return folder
