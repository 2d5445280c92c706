"""``settleguard demo``: the whole product on its embedded default, on this machine.

A simulated terminal on a pty, a local webhook sink on 127.0.0.1 (a random
free port, signatures verified), the real daemon with a temporary state
directory and two weeks of seeded history, and a shop day played on
simulated time: alerts as they arrive, the pre-close review, a void that
resolves its alert, the 23:00 cutoff escalating what is still open to refund
guidance with an evidence bundle, and a summary table.

The till page (agent/web/) is served on 127.0.0.1 while the day plays, its address and the demo
staff's PINs printed first; with ``keep`` the daemon goes on serving it after the day, until Ctrl-C.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from rich.console import Console
from rich.table import Table

from agent.alerts.report import NOTICE_ZH, alert_line, opened_by_rule
from agent.messages import AlertChange, BatchClosed, ReviewNotice
from agent.pipeline import Pipeline
from agent.schedule import fire_times, plan
from agent.service.daemon import Daemon
from agent.sim.day import build_day
from agent.sim.history import seed_history
from agent.sim.rig import ShopRig
from agent.sim.sink import RobotSink, WebhookSink
from agent.sim.terminal import PtyTerminal, encode_event
from agent.store.journal import Journal
from agent.store.queries import open_read_only
from agent.store.schema import journal_path
from drivers.clock import SYSTEM_CLOCK, ManualClock

DEMO_PROTOCOL = "cn_ecr"
# The demo shop's opening hours and cutoff, added to the rig's configuration (one terminal, one webhook).
DEMO_SHOP = """\
currency = "CNY"

[shop.hours]
mon = ["09:00-21:30"]
tue = ["09:00-21:30"]
wed = ["09:00-21:30"]
thu = ["09:00-21:30"]
fri = ["09:00-22:00"]
sat = ["09:00-22:00"]
sun = ["09:00-22:00"]
holidays = "cn"

[settlement]
cutoff = "23:00"
review_lead = "30m"

# The shop's group chat, as a phone sees it: a WeCom robot stand-in on 127.0.0.1 that prints what it gets.
[[channel]]
name = "phone"
type = "wecom"
url = "{robot_url}"

[web]
listen = "{listen}"
legit_needs = "manager"

[[web.staff]]
name = "小王"
pin = "{pin_cashier}"
role = "cashier"

[[web.staff]]
name = "李店长"
pin = "{pin_manager}"
role = "manager"
"""
# The demo's staff: printed with the page's address, so whoever runs the demo can sign in.
DEMO_PINS = {"小王": ("cashier", "1234"), "李店长": ("manager", "8888")}
# Loopback and any free port: the demo never opens the page to the LAN, nor fails on a busy port.
DEMO_LISTEN = "127.0.0.1:0"

# The shop's clock jumps minutes between two events, faster than idle threads report progress on it:
# judging "stuck" on that clock would only print false alarms (a real hang still shows as the demo hanging).
DEMO_STUCK_AFTER = 7 * 24 * 3600.0
# Alerts are signed on the shop's clock and may arrive a simulated hour or two later.
DEMO_SIGNATURE_TOLERANCE = 24 * 3600


def run_demo(*, fast: bool = False, console: Console | None = None, protocol: str = DEMO_PROTOCOL,
             seed: int = 7, keep: str | None = None, listen: str = DEMO_LISTEN,
             serving: threading.Event | None = None, serve: bool = False) -> int:
    """``keep``: keep the state in that directory and the page served after the day until Ctrl-C
    (or until ``serving`` is set, for a caller in this process); ``serve``: the page served after the
    day without keeping the state (``make demo`` at a terminal)."""
    console = console or Console()
    phone = RobotSink(lambda text: _show_phone(console, text)).start()
    try:
        return _run(console, fast=fast, protocol=protocol, seed=seed, keep=keep, listen=listen, serving=serving,
                    serve=serve, phone=phone)
    finally:
        phone.stop()


def _run(console: Console, *, fast: bool, protocol: str, seed: int, keep: str | None, listen: str,
         serving: threading.Event | None, serve: bool, phone: RobotSink) -> int:
    tz = ZoneInfo("Asia/Shanghai")
    today = SYSTEM_CLOCK.now().astimezone(tz).date()
    events = build_day("demo", seed=seed, day=today, tz=tz)
    # The whole product runs on this clock, moved to each simulated event: a shop day in seconds.
    clock = ManualClock(events[0].at.astimezone(UTC) - timedelta(minutes=1))
    notes: list[Any] = []
    # The sink checks webhook timestamps against the same simulated clock: that is "now" for this shop.
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
    shop = DEMO_SHOP.format(listen=listen, pin_cashier=DEMO_PINS["小王"][1], pin_manager=DEMO_PINS["李店长"][1],
                            robot_url=phone.url)
    with ShopRig(name="好味道餐饮 静安店", protocol=protocol, shop_extra=shop, clock=clock,
                 sink_tolerance=DEMO_SIGNATURE_TOLERANCE, state=Path(keep) if keep else None) as rig:
        loaded = rig.loaded()
        journal = Journal(journal_path(rig.state))
        seeded = seed_history(journal, today=today, tz=tz)
        journal.close()

        def listener(item: Any) -> None:
            notes.append(item)
            console.print(event_line(item, tz), highlight=False)

        daemon = rig.daemon(listeners=[listener], stuck_after=DEMO_STUCK_AFTER)
        console.print(f"[bold]settleguard demo[/bold] — {loaded.config.shop.name}\n"
                      f"  simulated terminal ({protocol}) on {rig.terminal.device}\n"
                      f"  webhook sink {rig.sink.url} (signatures verified)\n"
                      f"  店铺群（企业微信机器人替身）/ the shop's group (WeCom robot stand-in) {phone.url}\n"
                      f"  state {rig.state}; {seeded} transactions of history from the last 14 days\n")
        daemon.start()
        _print_page(console, daemon)
        started = SYSTEM_CLOCK.monotonic()   # the summary reports real seconds
        try:
            _play(daemon, rig.terminal, events, loaded, clock, protocol, fast=fast)
            _wait_delivered(daemon, clock, timeout=20)
            elapsed = SYSTEM_CLOCK.monotonic() - started
            _summary(console, daemon, notes, rig.sink, elapsed, rig.state, phone)
            if keep or serve:
                _serve_until_interrupted(console, daemon, serving or threading.Event())
        finally:
            daemon.stop()
        received = list(rig.received)
    got_dup = any(r.body.get("data", {}).get("rule") == "DUP-001" for r in received)
    if not got_dup:
        console.print("[red]no DUP-001 alert reached the webhook sink[/red]")
        return 1
    return 0


def event_line(item: Any, tz: Any) -> str:
    """One short line per change as the daemon saw it; what people were told is the phone's part."""
    when = getattr(item, "at", None)
    if isinstance(item, AlertChange):
        a = item.alert
        stamp = (when or a.updated).astimezone(tz).strftime("%H:%M")
        code = f" [bold]{a.code}[/]" if a.code else ""
        return f"[dim]{stamp}[/] {a.rule}{code} {NOTICE_ZH.get(item.notice, item.notice)}"
    stamp = when.astimezone(tz).strftime("%H:%M") if when else "--:--"
    if isinstance(item, ReviewNotice):
        return f"[dim]{stamp}[/] 结算前复核：{len(item.alerts)} 条待处理"
    if isinstance(item, BatchClosed):
        return f"[dim]{stamp}[/] 批次已结算（{'结算时间到' if item.reason == 'cutoff' else '终端结算'}）"
    return alert_line(item, tz)


def _show_phone(console: Console, text: str) -> None:
    """A message the shop's group got, as its phones show it."""
    body = "\n".join(f"  [green]│[/] {line}" for line in text.splitlines() if line.strip())
    console.print(f"  [green]┌ 📱 店铺群收到 / the group got[/]\n{body}", highlight=False, markup=True)


def _print_page(console: Console, daemon: Daemon) -> None:
    if daemon.web is None:
        console.print(f"[red]the till page is not served: {daemon.web_error}[/red]")
        return
    people = "，".join(f"{name}（{role}）PIN {pin}" for name, (role, pin) in DEMO_PINS.items())
    console.print(f"  收银告警页面 / till page: {daemon.web.url()}\n  登录 / sign in: {people}\n", highlight=False)


def _serve_until_interrupted(console: Console, daemon: Daemon, serving: threading.Event) -> None:
    """The day is over; the page stays up (the day's alerts, answers still taken) until Ctrl-C."""
    url = daemon.web.url() if daemon.web is not None else "(not served)"
    try:   # before the line is printed: whoever reads it may press Ctrl-C at once
        console.print(f"\n收银告警页面仍在运行 / the till page keeps serving at {url} — 按 Ctrl-C 结束 / "
                      "Ctrl-C to stop", highlight=False)
        while not serving.wait(0.5):
            pass
    except KeyboardInterrupt:
        console.print("stopped / 已停止")


def _play(daemon: Daemon, terminal: PtyTerminal, events: list[Any], loaded: Any, clock: ManualClock,
          protocol: str, *, fast: bool) -> None:
    """Write each event at its simulated time; run the day's schedule at its simulated times."""
    jobs = [j for j in plan(loaded) if j.name in ("review", "cutoff")]
    schedule = fire_times(jobs, events[0].at, events[-1].at + timedelta(minutes=5))
    pipeline = daemon.pipeline
    assert pipeline is not None
    for ev in events:
        while schedule and schedule[0][0] <= ev.at:
            at, name = schedule.pop(0)
            clock.set(at.astimezone(UTC))
            daemon.command(name)
            _wait_delivered(daemon, clock, timeout=5)
        clock.set(ev.at.astimezone(UTC))
        decoded = _decoded_past(pipeline, pipeline.counts["events"])
        terminal.write(encode_event(protocol, ev.event, reprint=ev.reprint))
        _wait(decoded, timeout=5, pace=0.002)
        # What is due goes out before the clock moves on, as it would within seconds on a real till.
        _wait_delivered(daemon, clock, timeout=5)
        if not fast:
            time.sleep(0.05)
    for at, name in schedule:
        clock.set(at.astimezone(UTC))
        daemon.command(name)
        _wait_delivered(daemon, clock, timeout=5)


def _decoded_past(pipeline: Pipeline, before: int) -> Callable[[], bool]:
    return lambda: pipeline.counts["events"] > before


def _outbox_due(daemon: Daemon, now: Any) -> tuple[int, int]:
    """(due, held) read on a connection of our own: the delivery thread's is its alone (sqlite3
    connections are not to be shared between threads while one is in use)."""
    with open_read_only(journal_path(daemon.state_dir)) as reader:
        return reader.outbox_due(now)


def _wait_delivered(daemon: Daemon, clock: ManualClock, timeout: float) -> None:
    def delivered() -> bool:
        # Due now: what quiet hours hold back for the morning is not waited for (the summary counts it).
        if _outbox_due(daemon, clock.now())[0] == 0:
            return True
        if daemon.delivery is not None:
            daemon.delivery.wake.set()
        return False

    _wait(delivered, timeout=timeout, pace=0.05)


def _wait(condition: Callable[[], bool], *, timeout: float, pace: float) -> bool:
    """Poll ``condition`` for up to ``timeout`` real seconds; the demo goes on either way."""
    deadline = SYSTEM_CLOCK.monotonic() + timeout
    while not condition():
        if SYSTEM_CLOCK.monotonic() >= deadline:
            return False
        time.sleep(pace)
    return True


def _summary(console: Console, daemon: Daemon, notes: list[Any], sink: WebhookSink, elapsed: float,
             state: Path, phone: RobotSink) -> None:
    p = daemon.pipeline
    counts: dict[str, Any] = p.counts if p else {}
    table = Table(title="settleguard demo — 汇总 / summary")
    table.add_column("项目 / what")
    table.add_column("数量 / count", justify="right")
    table.add_row("解码事件 / events decoded", str(counts.get("events", 0)))
    table.add_row("交易 / transactions", str(counts.get("new_transactions", 0)))
    table.add_row("重打印（非重复） / reprints, not duplicates", str(counts.get("reprints", 0)))
    for rule, n in opened_by_rule(notes).items():
        table.add_row(f"告警 {rule} / alerts", str(n))
    table.add_row("撤销后自动解除 / resolved by a void", str(counts.get("alerts_resolved", 0)))
    table.add_row("结算前复核 / pre-close reviews", str(counts.get("reviews", 0)))
    table.add_row("结算后升级为退货 / escalated to refund", str(counts.get("alerts_escalated", 0)))
    table.add_row("店铺群消息 / messages to the group's phones", str(len(phone.messages)))
    held = _outbox_due(daemon, daemon.clock.now())[1]
    table.add_row("夜间静默，留待开门发送 / held for opening (quiet hours)", str(held))
    table.add_row("webhook 已送达（签名有效） / delivered, signature ok", str(len(sink.received)))
    table.add_row("webhook 请求（含重试） / requests incl. retries", str(sink.requests))
    table.add_row("用时（秒） / seconds", f"{elapsed:.1f}")
    console.print(table)
    bundles = sorted((state / "evidence").glob("*/README.txt")) if (state / "evidence").exists() else []
    if bundles:
        console.print(f"证据包 / evidence bundles: {len(bundles)} (e.g. {bundles[0].parent.name})")
