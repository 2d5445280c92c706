"""The rich tables of ``settleguard fleet``, headed as the CLI's other tables (English / 中文)."""

from __future__ import annotations

from datetime import datetime, timedelta

from agent.fleet.view import OK, STATUS_ZH, FleetView
from agent.units import format_duration, format_money


def _ago(seconds: int | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 0:
        return "ahead / 时钟超前"      # the till's clock is ahead of ours: say so rather than print "-3m"
    return format_duration(timedelta(seconds=seconds - seconds % 60 if seconds >= 120 else seconds))


def _local(value: str | None) -> str:
    """A till's ISO time as the till wrote it (its own zone), short."""
    if not value:
        return "-"
    try:
        return datetime.fromisoformat(value).strftime("%m-%d %H:%M")
    except ValueError:
        return value


def render(view: FleetView) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    summary = view.to_json()["summary"]
    tills = Table(title=f"settleguard fleet — {summary['shops']} shop(s), {summary['tills']} till(s), "
                        f"{summary['stale']} stale / 失联", show_lines=True)
    for column in ("shop / 门店", "till / 收银台", "status / 状态", "last heartbeat / 最后心跳",
                   "alerts / 告警", "outbox / 待发", "problems / 问题"):
        tills.add_column(column, overflow="fold")
    for t in view.tills:
        hb = t.heartbeat or {}
        status = f"{STATUS_ZH[t.status]} {t.status}"
        style = None if t.status == OK else "bold red"
        outbox = hb.get("outbox") if isinstance(hb.get("outbox"), dict) else {}
        beat = "-" if not hb else f"{_local(hb.get('at'))}\n{_ago(t.age_s)} ago"
        if t.stale_after_s is not None and t.status != OK:
            beat += f" (> {_ago(t.stale_after_s)})"
        tills.add_row(f"{hb.get('shop') or ''}\n{t.shop_id}".strip(), f"{hb.get('till') or ''}\n{t.till_id}".strip(),
                      status, beat, str(hb.get("open_alerts", "-")),
                      f"{outbox.get('pending', '-')} pending, {outbox.get('dead', '-')} dead" if outbox else "-",
                      "\n".join(str(p) for p in hb.get("problems") or []), style=style)
    console.print(tills)

    if view.alerts:
        alerts = Table(title=f"open alerts / 未处理告警: {len(view.alerts)}", show_lines=True)
        for column in ("shop / till", "code", "rule / state", "amount", "deadline / 截止", "why / 原因"):
            alerts.add_column(column, overflow="fold")
        for a in view.alerts:
            data = a.alert
            amount, currency = a.amount()
            deadline = a.deadline
            when = "-" if deadline is None else deadline.strftime("%m-%d %H:%M")
            if deadline is not None and deadline <= view.now:
                when += "\n已过期 overdue"
            rule = f"{data.get('rule')} {data.get('severity')}\n{data.get('state')} (rev {data.get('revision')})"
            alerts.add_row(f"{a.shop_id}\n{a.till_id}", str(data.get("code") or data.get("id") or "-"), rule,
                           format_money(amount, currency) if amount is not None else "-", when,
                           str(data.get("reason_zh") or data.get("reason") or ""))
        console.print(alerts)
    else:
        console.print("no open alerts / 无未处理告警", highlight=False)

    dead = view.dead_letters()
    if dead:
        console.print(f"dead letters / 发送失败: {sum(d['dead'] for d in dead)} message(s) the tills could not "
                      f"deliver (see `settleguard doctor` on the till):", highlight=False)
        for d in dead:
            console.print(f"  {d['shop_id']}/{d['till_id']}: {d['dead']} dead, {d['pending']} pending", highlight=False)
    if view.skipped:
        console.print(f"{view.skipped} message(s) in the stream were not settleguard CloudEvents (skipped)",
                      highlight=False)
