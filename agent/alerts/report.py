"""How notifications read on a console and as JSON lines (demo, replay, alerts)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from datetime import tzinfo
from typing import Any

from rich.table import Table

from agent.alerts.lifecycle import NoticeKind
from agent.alerts.remedy import reference
from agent.messages import AlertChange, BatchClosed, ReviewNotice
from agent.units import format_money

NOTICE_ZH = {NoticeKind.OPENED: "新告警", NoticeKind.VOIDED: "已撤销", NoticeKind.DISMISSED: "已确认正常",
             NoticeKind.ESCALATED: "已升级·需退货", NoticeKind.EXPIRED: "已过期", NoticeKind.REMINDER: "提醒"}
SEVERITY_STYLE = {"high": "bold red", "medium": "yellow", "low": "cyan"}


def alert_line(item: Any, tz: tzinfo) -> str:
    """One readable entry per notification, Chinese first (what a shop owner sees on the phone)."""
    if isinstance(item, ReviewNotice):
        when = item.at.astimezone(tz).strftime("%m-%d %H:%M")
        if not item.alerts:
            return f"[bold green]{when} 结算前复核 / pre-close review: 无待处理异常 / all clear[/]"
        left = ""
        if item.deadline:
            minutes = int((item.deadline - item.at).total_seconds() // 60)
            left = f"，距结算还有 {minutes} 分钟 / {minutes} min to settlement"
        lines = [f"[bold magenta]{when} 结算前复核 / pre-close review: {len(item.alerts)} 条待处理{left}[/]"]
        for a in item.alerts:
            if a.suggestion:
                lines.append(f"   • {a.rule}: {a.suggestion.steps_zh}")
        return "\n".join(lines)
    if isinstance(item, BatchClosed):
        when = item.at.astimezone(tz).strftime("%m-%d %H:%M")
        why = "结算时间到 / cutoff" if item.reason == "cutoff" else "终端结算 / settlement received"
        return f"[bold]{when} 批次已结算 / batch closed ({why})[/]"
    assert isinstance(item, AlertChange)
    a = item.alert
    subject = a.transactions[-1] if a.transactions else None
    what = ""
    if subject is not None:
        t = subject.time.astimezone(tz).strftime("%H:%M") if subject.time else "?"
        ref = reference(subject)   # None for a wallet payment with no number: say nothing, never "None"
        what = (f"{f' 凭证 {ref}' if ref else ''} "
                f"{format_money(subject.amount_minor, subject.currency)} {t}")
    when = (item.at or a.updated).astimezone(tz).strftime("%m-%d %H:%M")
    style = SEVERITY_STYLE.get(a.severity, "")
    head = (f"[{style}]{when} [{a.severity.upper()}] {a.rule} {NOTICE_ZH.get(item.notice, item.notice)}"
            f" / {item.notice}{what}[/]")
    if item.notice == NoticeKind.OPENED:
        return f"{head}\n   {a.reason_zh}\n   {a.reason}"
    if item.notice == NoticeKind.ESCALATED and a.suggestion:
        return f"{head}\n   {a.suggestion.steps_zh}\n   {a.suggestion.steps_en}"
    return head


def notification_json(item: Any) -> str | None:
    """Alert revisions as alert objects (ARCHITECTURE.md, "Alert JSON"); reviews and batch closes as their
    own small objects."""
    if isinstance(item, AlertChange):
        return json.dumps(item.alert.to_dict(), ensure_ascii=False)
    if isinstance(item, ReviewNotice):
        return json.dumps({"type": "review", "time": item.at.isoformat(),
                           "deadline": item.deadline.isoformat() if item.deadline else None,
                           "alerts": [a.id for a in item.alerts]}, ensure_ascii=False)
    if isinstance(item, BatchClosed):
        return json.dumps({"type": "batch_closed", "time": item.at.isoformat(), "terminal_id": item.terminal_id,
                           "batch_no": item.batch_no, "reason": item.reason}, ensure_ascii=False)
    return None


def opened_by_rule(notifications: Iterable[Any]) -> dict[str, int]:
    """How many alerts each rule opened, by rule name: the alert rows of a summary table."""
    opened = Counter(n.alert.rule for n in notifications
                     if isinstance(n, AlertChange) and n.notice == NoticeKind.OPENED)
    return dict(sorted(opened.items()))


def summary_table(result: Any, decoder_stats: dict[str, Any] | None = None) -> Table:
    c = result.counts
    table = Table(title="settleguard replay — 汇总 / summary")
    table.add_column("项目 / what")
    table.add_column("数量 / count", justify="right")
    if result.first and result.last:
        table.add_row("时间范围 / span", f"{result.first:%Y-%m-%d %H:%M} → {result.last:%Y-%m-%d %H:%M} UTC")
    table.add_row("事件 / events", str(c.get("events", 0)))
    table.add_row("交易 / transactions", str(c.get("new_transactions", 0)))
    table.add_row("重打印 / reprints", str(c.get("reprints", 0)))
    table.add_row("结算 / settlements", str(c.get("settlements", 0)))
    for rule, k in opened_by_rule(result.notifications).items():
        table.add_row(f"告警 {rule} / alerts", str(k))
    table.add_row("撤销解除 / resolved by void", str(c.get("alerts_resolved", 0)))
    table.add_row("复核 / reviews", str(c.get("reviews", 0)))
    table.add_row("升级退货 / escalated", str(c.get("alerts_escalated", 0)))
    for channel, k in sorted(result.outbox.items()):
        table.add_row(f"would send via {channel} / 待发送", str(k))
    for name, st in (decoder_stats or {}).items():
        if st.bytes_skipped or st.bad_frames:
            table.add_row(f"skipped in {name}", f"{st.bytes_skipped} B, {st.bad_frames} bad frames")
    return table
