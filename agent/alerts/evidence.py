"""The evidence bundle for a refund: files a shop owner can hand to the acquirer.

Written to ``<state>/evidence/<local date>-<alert id>/`` when a finding is
escalated after settlement: the transaction record, the receipt text as
printed, the rule's reasoning, and the timeline of sightings and messages.
Nothing in it holds more than a masked card number (the journal never does).
"""

from __future__ import annotations

import json
import os
from datetime import datetime, tzinfo
from pathlib import Path
from typing import Any

from agent.model import Alert, identity_key
from agent.store.journal import Journal
from agent.units import format_money


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def write_bundle(journal: Journal, alert: Alert, *, now: datetime, tz: tzinfo, root: Path,
                 path: Path | None = None) -> Path:
    subject = alert.transactions[-1]
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
            receipt_lines.extend(r.get("lines", []))
            receipt_lines.append("-" * 32)
    timeline = journal.alert_log(alert.id)
    messages = journal.messages_for_alert(alert.id)
    evidence = {
        "alert": alert.to_dict(),
        "rule_reasoning": {"rule": alert.rule, "version": alert.rule_version, "reason": alert.reason,
                           "reason_zh": alert.reason_zh, "evidence": alert.evidence},
        "transactions": records,
        "timeline": timeline,
        "messages": messages,
        "written": now.isoformat(),
    }
    _atomic_write(folder / "evidence.json", json.dumps(evidence, ensure_ascii=False, indent=2) + "\n")
    no_text = "（未捕获到小票文本 / no receipt text was captured）\n"
    _atomic_write(folder / "receipt.txt", "\n".join(receipt_lines) + "\n" if receipt_lines else no_text)
    when = subject.time.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S") if subject.time else "?"
    amount = format_money(subject.amount_minor, subject.currency)
    summary = [
        "settleguard 证据包 / evidence bundle",
        "",
        f"告警 / alert: {alert.id} ({alert.rule}, {alert.severity})",
        f"原因 / reason: {alert.reason_zh}",
        f"               {alert.reason}",
        "",
        f"交易 / transaction: 凭证号 voucher {subject.voucher_no or '-'}  参考号 RRN {subject.rrn or '-'}",
        f"                    终端 terminal {subject.terminal_id or '-'}  批次 batch {subject.batch_no or '-'}",
        f"                    金额 amount {amount}  时间 time {when}  卡号 card {subject.card or '-'}",
        "",
        "处理 / what to do:",
        alert.suggestion.steps_zh if alert.suggestion else "",
        alert.suggestion.steps_en if alert.suggestion else "",
        "",
        "文件 / files: evidence.json (交易记录、规则依据、时间线 / record, reasoning, timeline),"
        " receipt.txt (小票原文 / receipt as printed)",
    ]
    _atomic_write(folder / "README.txt", "\n".join(summary) + "\n")
    return folder
