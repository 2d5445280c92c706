"""``settleguard demo``: the whole product on its embedded default, on this machine.

A simulated terminal on a pty, a local webhook sink on 127.0.0.1 (a random
free port, signatures verified), the real daemon with a temporary state
directory, live alert lines in Chinese and English, and a summary table.
"""

from __future__ import annotations

import base64
import os
import tempfile
import threading
import time
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from rich.console import Console
from rich.table import Table

from agent.config import parse_config
from agent.daemon import Daemon
from agent.pipeline import AlertChange
from agent.sim.day import build_day
from agent.sim.sink import Received, WebhookSink
from agent.sim.terminal import PtyTerminal, play
from agent.units import format_money

DEMO_PROTOCOL = "jsonl"
DEMO_CONFIG = """\
# settleguard demo configuration (embedded default)
[shop]
name = "好味道餐饮 静安店"
till = "till-1"
timezone = "Asia/Shanghai"
currency = "CNY"

[settlement]
cutoff = "23:00"
review_lead = "30m"

[[source]]
name = "terminal"
protocol = "{protocol}"
port = "{device}"
baudrate = 115200

[rules.DUP-001]
window = "10m"

[delivery]
group_wait = "1s"
group_interval = "2s"

[[channel]]
name = "back-office"
type = "webhook"
url = "{url}"
secret = "{secret}"
"""

NOTICE_ZH = {"opened": "新告警", "voided": "已撤销", "dismissed": "已确认正常", "escalated": "已升级(需退货)",
             "expired": "已过期", "updated": "更新"}


def _line(change: AlertChange, tz: ZoneInfo) -> str:
    a = change.alert
    subject = a.transactions[-1] if a.transactions else None
    what = ""
    if subject is not None:
        when = subject.time.astimezone(tz).strftime("%H:%M") if subject.time else "?"
        what = f" {subject.voucher_no or subject.receipt_no} {format_money(subject.amount_minor, subject.currency)} {when}"
    zh = NOTICE_ZH.get(change.notice, change.notice)
    return (f"[{a.severity.upper():6}] {a.rule} {zh} / {change.notice}{what}\n"
            f"         {a.reason_zh}\n         {a.reason}")


def run_demo(*, fast: bool = False, console: Console | None = None, protocol: str = DEMO_PROTOCOL,
             seed: int = 7) -> int:
    console = console or Console()
    tz = ZoneInfo("Asia/Shanghai")
    secret = "whsec_" + base64.b64encode(os.urandom(24)).decode()
    received_lines: list[str] = []
    lock = threading.Lock()

    def on_receive(rec: Received) -> None:
        data = rec.body.get("data", {})
        with lock:
            received_lines.append(f"{data.get('rule')} rev {data.get('revision')} {data.get('state')}")

    sink = WebhookSink(secret=secret, on_receive=on_receive).start()
    terminal = PtyTerminal()
    today = datetime.now(tz).date() if not fast else date.today()
    events = build_day("demo", seed=seed, day=today, tz=tz)
    with tempfile.TemporaryDirectory(prefix="settleguard-demo-") as state:
        config_text = DEMO_CONFIG.format(protocol=protocol, device=terminal.device, url=sink.url, secret=secret)
        loaded = parse_config(config_text, "<demo>")
        changes: list[AlertChange] = []

        def listener(change: AlertChange) -> None:
            changes.append(change)
            console.print(_line(change, tz), highlight=False)

        daemon = Daemon(loaded, Path(state), listeners=[listener])
        console.print(f"[bold]settleguard demo[/bold] — terminal on {terminal.device} ({protocol}), "
                      f"webhook sink on {sink.url}, state in {state}")
        daemon.start()
        started = time.monotonic()
        try:
            speed = 0.0 if fast else 2000.0
            sent = play(events, terminal.write, protocol, speed=speed, max_gap=0.02 if fast else 0.4)
            # Wait until the pipeline has seen every event and delivery has drained the outbox.
            deadline = time.monotonic() + 25
            while time.monotonic() < deadline:
                p = daemon.pipeline
                stats = daemon.delivery.outbox.stats(datetime.now(UTC)) if daemon.delivery else {"pending": 1}
                if p is not None and p.counts["events"] >= sent and stats["pending"] == 0 and changes:
                    break
                time.sleep(0.05)
        finally:
            daemon.stop()
            terminal.close()
            sink.stop()
        elapsed = time.monotonic() - started
        _summary(console, daemon, changes, sink, elapsed)
    got_dup = any(r.body.get("data", {}).get("rule") == "DUP-001" for r in sink.received)
    if not got_dup:
        console.print("[red]no DUP-001 alert reached the webhook sink[/red]")
        return 1
    return 0


def _summary(console: Console, daemon: Daemon, changes: list[AlertChange], sink: WebhookSink,
             elapsed: float) -> None:
    p = daemon.pipeline
    counts: dict[str, Any] = p.counts if p else {}
    table = Table(title="settleguard demo — summary / 汇总")
    table.add_column("what / 项目")
    table.add_column("count / 数量", justify="right")
    table.add_row("events decoded / 解码事件", str(counts.get("events", 0)))
    table.add_row("transactions / 交易", str(counts.get("new_transactions", 0)))
    table.add_row("reprints (not duplicates) / 重打印", str(counts.get("reprints", 0)))
    by_rule: dict[str, int] = {}
    for c in changes:
        if c.notice == "opened":
            by_rule[c.alert.rule] = by_rule.get(c.alert.rule, 0) + 1
    for rule, n in sorted(by_rule.items()):
        table.add_row(f"alerts {rule} / 告警", str(n))
    table.add_row("alerts resolved by void / 撤销后自动解除", str(counts.get("alerts_resolved", 0)))
    table.add_row("webhooks received (signature ok) / 已送达", str(len(sink.received)))
    table.add_row("webhook requests incl. retries / 请求数", str(sink.requests))
    table.add_row("seconds / 用时", f"{elapsed:.1f}")
    console.print(table)
