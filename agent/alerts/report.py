"""How notifications read on a console and as JSON lines (demo, replay, alerts)."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime, tzinfo
from typing import Any

from rich.table import Table

from agent.alerts.lifecycle import NoticeKind
from agent.alerts.remedy import reference
from agent.messages import AlertChange, BatchClosed, ReviewNotice
from agent.units import format_money

NOTICE_ZH = {NoticeKind.OPENED: "新告警", NoticeKind.VOIDED: "已撤销", NoticeKind.DISMISSED: "已确认正常",
             NoticeKind.ESCALATED: "已升级·需退货", NoticeKind.EXPIRED: "已过期", NoticeKind.REMINDER: "提醒",
             NoticeKind.REFUNDED: "已退货", NoticeKind.VOID_CLAIMED: "已报撤销，待终端确认",
             NoticeKind.VOID_PRINTED: "已打印撤销单，待终端确认"}
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


_ISO_INSTANT = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?([+-]\d\d:\d\d|Z)")


def in_zone(value: Any, tz: tzinfo) -> Any:
    """Every timestamp in a JSON-ready value, in the shop's offset: one offset per output, never
    +00:00 beside +08:00."""
    if isinstance(value, str) and _ISO_INSTANT.fullmatch(value):
        return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(tz).isoformat()
    if isinstance(value, dict):
        return {k: in_zone(v, tz) for k, v in value.items()}
    if isinstance(value, list):
        return [in_zone(v, tz) for v in value]
    return value


def notification_json(item: Any, tz: tzinfo | None = None) -> str | None:
    """Alert revisions as alert objects (ARCHITECTURE.md, "Alert JSON") with the notice's ``kind`` and
    ``at`` (a reminder is told apart from the opening it repeats); reviews and batch closes as their
    own small objects. With ``tz`` every time is in that zone's offset."""
    obj: dict[str, Any]
    if isinstance(item, AlertChange):
        at = item.at or item.alert.updated
        obj = {**item.alert.to_dict(), "notice": str(item.notice), "at": at.isoformat()}
    elif isinstance(item, ReviewNotice):
        obj = {"type": "review", "notice": "review" if item.alerts else "all_clear", "time": item.at.isoformat(),
               "deadline": item.deadline.isoformat() if item.deadline else None,
               "alerts": [a.id for a in item.alerts]}
    elif isinstance(item, BatchClosed):
        obj = {"type": "batch_closed", "time": item.at.isoformat(), "terminal_id": item.terminal_id,
               "batch_no": item.batch_no, "reason": item.reason}
    else:
        return None
    return json.dumps(in_zone(obj, tz) if tz is not None else obj, ensure_ascii=False)


def opened_by_rule(notifications: Iterable[Any]) -> dict[str, int]:
    """How many alerts each rule opened, by rule name: the alert rows of a summary table."""
    opened = Counter(n.alert.rule for n in notifications
                     if isinstance(n, AlertChange) and n.notice == NoticeKind.OPENED)
    return dict(sorted(opened.items()))


def summary_table(result: Any, decoder_stats: dict[str, Any] | None = None, tz: tzinfo | None = None) -> Table:
    c = result.counts
    table = Table(title="settleguard replay — 汇总 / summary")
    table.add_column("项目 / what")
    table.add_column("数量 / count", justify="right")
    if result.first and result.last:
        zone = tz or UTC
        first, last = result.first.astimezone(zone), result.last.astimezone(zone)
        table.add_row("时间范围 / span", f"{first:%Y-%m-%d %H:%M} → {last:%Y-%m-%d %H:%M} (UTC{first:%z})")
    table.add_row("事件 / events", str(c.get("events", 0)))
    table.add_row("交易 / transactions", str(c.get("new_transactions", 0)))
    table.add_row("重打印 / reprints", str(c.get("reprints", 0)))
    table.add_row("结算 / settlements", str(c.get("settlements", 0)))
    for rule, k in opened_by_rule(result.notifications).items():
        table.add_row(f"告警 {rule} / alerts", str(k))
    table.add_row("撤销解除 / resolved by void", str(c.get("alerts_resolved", 0)))
    table.add_row("复核 / reviews", str(c.get("reviews", 0)))
    table.add_row("升级退货 / escalated", str(c.get("alerts_escalated", 0)))
    for rule, n in sorted(getattr(result, "silent", {}).items()):
        table.add_row(f"{rule} 缺历史数据未判断 / silent, too little history", f"{n} txns")
    for channel, k in sorted(result.outbox.items()):
        table.add_row(f"outbox rows for {channel} / 队列条数", str(k))
    for name, st in (decoder_stats or {}).items():
        if st.bytes_skipped or st.bad_frames:
            table.add_row(f"skipped in {name}", f"{st.bytes_skipped} B, {st.bad_frames} bad frames"
                          + (f"; last: {st.last_error}" if st.last_error else ""))
    return table


def phone_table(days: Iterable[Any]) -> Table:
    """What each phone (people channel) would have received per shop-local day: the noise budget's view."""
    table = Table(title="每部手机每天收到的消息 / messages per phone per day")
    for col in ("日期 / day", "渠道 / channel", "条数 / count", "按规则 / by rule", "按小时 / by hour",
                "静默时段 / in quiet hours"):
        table.add_column(col)
    for d in days:
        table.add_row(f"{d.day:%Y-%m-%d %a}", d.channel, str(d.count),
                      ", ".join(f"{k} {v}" for k, v in d.by_rule.items()) or "-",
                      ", ".join(f"{h:02d}h×{n}" for h, n in d.by_hour.items()) or "-",
                      f"{d.quiet} ({d.quiet_not_critical} not critical)" if d.quiet else "0")
    return table
