"""Issue 13, observation 7: a silent wire must not look like a quiet day.

The real daemon on a ManualClock reads a pty; the test moves the shop's clock through opening
hours and looks at what staff are sent (outbox rows of a people channel), what ``doctor`` says
and what the evening all-clear states.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import closing, contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from agent.config import parse_config
from agent.messages import Command
from agent.rules.calendar import HoursConfig, ShopCalendar
from agent.service.daemon import Daemon
from agent.service.doctor import failed, run_checks
from agent.service.metrics import Snapshot as MetricsSnapshot
from agent.service.metrics import read_journal, render
from agent.sim.terminal import PtyTerminal, encode_event
from agent.watch.wires import derive_silence, open_time
from drivers.clock import ManualClock
from drivers.protocols.escpos import encode_text_receipt
from tests.faults.support import journal
from tests.helpers import SHANGHAI, Harness, config, jsonl_line_config, sale, wait_until

HOURS = '\n[shop.hours]\nmon = ["09:00-22:00"]\ntue = ["09:00-22:00"]\nwed = ["09:00-22:00"]\nthu = ["09:00-22:00"]\n' \
        'fri = ["09:00-22:00"]\nsat = ["09:00-22:00"]\nsun = ["09:00-22:00"]\n'
ROBOT = '\n[[channel]]\nname = "robot"\ntype = "wecom"\nkey = "k-1"\nurl = "http://127.0.0.1:9/send"\n'
OPEN = datetime(2026, 11, 25, 10, 0, tzinfo=SHANGHAI)   # a Wednesday


def shop_config(device: str, source_extra: str = "") -> str:
    # jsonl_line_config ends inside the [[source]] table: its keys first, then the other tables.
    text = jsonl_line_config("线路测试店", device, "baudrate = 115200\n" + source_extra + ROBOT)
    return text.replace("\n\n[[source]]", HOURS + "\n[[source]]", 1)


@contextmanager
def running(tmp_path: Path, text: str, clock: ManualClock) -> Iterator[Daemon]:
    cfg = tmp_path / "settleguard.toml"
    cfg.write_text(text, encoding="utf-8")
    daemon = Daemon(parse_config(text, str(cfg)), tmp_path / "state", clock=clock, use_scheduler=False,
                    watch_config=False)
    daemon.start()
    try:
        wait_until(lambda: all(r.state == "open" for r in daemon.sources), "the sources open")
        yield daemon
    finally:
        daemon.stop()


def checked(daemon: Daemon) -> None:
    """Wait for a dead-wire check at the clock's present time (the housekeeping thread sends one every 30 s)."""
    assert daemon.pipeline is not None
    now = daemon.clock.now()
    wait_until(lambda: daemon.pipeline is not None and daemon.pipeline.wires.checked is not None
               and daemon.pipeline.wires.checked >= now, "a dead-wire check at the present time")
    daemon.command("tick")  # queued behind it: its reply means that check is committed


def notices(state: Path, kind: str = "device") -> list[dict[str, Any]]:
    with closing(journal(state)) as conn:
        return [json.loads(r[0]) for r in conn.execute("SELECT payload FROM outbox WHERE kind = ? ORDER BY id",
                                                       (kind,))]


def step(daemon: Daemon, clock: ManualClock, delta: timedelta) -> None:
    clock.advance(delta.total_seconds())
    checked(daemon)


def test_a_wire_silent_through_opening_hours_is_one_notice_a_doctor_failure_and_clears_itself(
        tmp_path: Path) -> None:
    term = PtyTerminal()
    os.chmod(term.device, 0o666)  # readable by the service's group, so doctor's device check passes
    clock = ManualClock(OPEN)
    state = tmp_path / "state"
    try:
        with running(tmp_path, shop_config(term.device, 'silence = "45m"\n'), clock) as daemon:
            term.write(encode_event("jsonl", sale("000001", 2500, clock.now())))
            wait_until(lambda: daemon.pipeline is not None and daemon.pipeline.counts["new_transactions"] == 1,
                       "the first sale journalled")
            step(daemon, clock, timedelta(minutes=30))
            assert notices(state) == [], "30 minutes of quiet is a quiet spell, not a dead wire"
            for _ in range(20):  # the wire stays dead: checks every 30 s of shop time ... one notice
                step(daemon, clock, timedelta(seconds=30))
            step(daemon, clock, timedelta(minutes=10))
            sent = notices(state)
            assert [n["title"][0] for n in sent] == ["线路无数据"], sent
            assert "terminal：自 11-25 10:00 起没有任何数据" in sent[0]["lines"][0]

            bad = failed(run_checks(tmp_path / "settleguard.toml", state, clock=clock))
            assert [c.name for c in bad] == ["source terminal"], bad
            assert "no bytes at all since 2026-11-25 10:00" in bad[0].detail
            cli = subprocess.run([sys.executable, "-m", "agent.cli", "doctor", "--config",
                                  str(tmp_path / "settleguard.toml"), "--state", str(state)],
                                 capture_output=True, text=True, timeout=60)
            assert cli.returncode == 1 and "since 2026-11-25 10:00" in cli.stdout, cli.stdout + cli.stderr

            metrics = render(MetricsSnapshot((), read_journal(state / "settleguard.sqlite3", clock.now()), {}))
            assert 'settleguard_source_quiet{source="terminal",kind="silent"} 1' in metrics

            term.write(encode_event("jsonl", sale("000002", 3100, clock.now())))
            wait_until(lambda: daemon.pipeline is not None and daemon.pipeline.counts["new_transactions"] == 2,
                       "the sale after the wire came back")
            step(daemon, clock, timedelta(seconds=30))
            assert [n["title"][0] for n in notices(state)] == ["线路无数据", "线路已恢复"]
            assert not failed(run_checks(tmp_path / "settleguard.toml", state, clock=clock))

            # Evening: the all-clear says what the day was, so "clear" is not "saw nothing".
            clock.set(OPEN.replace(hour=22, minute=30))
            daemon.command("review")
            clear = notices(state, "all_clear")
            assert len(clear) == 1 and clear[0]["lines"][0] == "今日交易 2 笔，合计 RMB 56.00", clear
    finally:
        term.close()


def test_a_tap_that_sees_receipts_but_no_transactions_is_a_blind_tap(tmp_path: Path) -> None:
    term = PtyTerminal()
    clock = ManualClock(OPEN)
    state = tmp_path / "state"
    text = shop_config(term.device, 'silence = "45m"\n').replace('protocol = "jsonl"', 'protocol = "escpos"')
    try:
        with running(tmp_path, text, clock) as daemon:
            for minute in range(0, 60, 10):  # the printer prints; no template reads it
                clock.set(OPEN + timedelta(minutes=minute))
                term.write(encode_text_receipt(["欢迎光临", "谢谢惠顾", f"第 {minute} 分"]))
                wait_until(lambda m=minute: daemon.sources[0].stats is not None and  # type: ignore[misc]
                           daemon.sources[0].stats.counters.get("unmatched_receipts", 0) == m // 10 + 1,
                           "the receipt read (and matched by no template)")
            step(daemon, clock, timedelta(minutes=1))
            sent = notices(state)
            assert [n["title"][0] for n in sent] == ["收到数据但读不出交易"], sent
            doctor = {c.status for c in run_checks(tmp_path / "settleguard.toml", state, clock=clock)
                      if c.name == "source terminal" and "today" in c.detail}
            assert doctor == {"warn"}
            daemon.command("review")
            lines = notices(state, "all_clear")[0]["lines"]
            assert lines[0].startswith("今日没有收到任何交易") and "未识别的小票 6 张" in lines
            assert notices(state, "all_clear")[0]["title"][0] == "今日未收到任何交易"
    finally:
        term.close()


def test_the_default_silence_comes_from_the_shops_own_gaps_with_a_floor(tmp_path: Path) -> None:
    calendar = ShopCalendar(HoursConfig.model_validate({"mon": ["09:00-22:00"], "tue": ["09:00-22:00"],
                                                        "wed": ["09:00-22:00"], "thu": ["09:00-22:00"],
                                                        "fri": ["09:00-22:00"], "sat": ["09:00-22:00"],
                                                        "sun": ["09:00-22:00"]}), SHANGHAI)
    h = Harness(tmp_path, config(HOURS), start=OPEN - timedelta(days=12))
    voucher = 0
    for day in range(10):
        base = OPEN - timedelta(days=12 - day)
        # Every 10 minutes, except one 50-minute gap a day, and the night between days (closed time).
        times = [base + timedelta(minutes=10 * k) for k in range(6)] + [base + timedelta(minutes=100)]
        for at in times:
            voucher += 1
            h.clock.set(at)
            h.feed(sale(f"{voucher:06d}", 1000 + voucher, at, card=f"622576******{voucher:04d}"), source="terminal")
    assert derive_silence(h.journal, calendar, "terminal", OPEN) == timedelta(minutes=100)
    assert derive_silence(h.journal, calendar, "printer", OPEN) == timedelta(hours=2), "no history: 2 h"
    # Overnight closed time does not count as quiet.
    assert open_time(calendar, OPEN.replace(hour=21), OPEN.replace(hour=9) + timedelta(days=1, minutes=5)) \
        == timedelta(hours=1, minutes=5)
    h.pipeline.process([Command("review")])
    lines = [json.loads(r[0])["lines"] for r in
             h.journal.conn.execute("SELECT payload FROM outbox WHERE kind IN ('all_clear', 'review')")]
    assert lines and lines[-1][0].startswith("今日交易 "), lines
    h.journal.close()
