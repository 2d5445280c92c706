"""Issue 13, observation 8: a terminal whose clock is wrong must not blind the duplicate rules.

A simulated terminal on a pty plays the demo day (one exact double charge) stamped days in the
past, into the real ``settleguard run``: the double charge is flagged, staff get one "terminal clock
is wrong" notice (not one per transaction), and ``simulate`` plays today by default.
"""

from __future__ import annotations

import itertools
import re
import subprocess
import sys
from contextlib import closing
from datetime import datetime, time, timedelta
from pathlib import Path

from agent.config import parse_config
from agent.service.daemon import Daemon
from agent.sim.day import build_day
from agent.sim.terminal import PtyTerminal, encode_event
from agent.store.schema import from_utc_text, journal_path
from agent.watch.terminal_clock import RESYNC, TerminalClocks
from drivers.clock import SYSTEM_CLOCK, ManualClock
from drivers.events import Transaction
from tests.faults.support import DaemonProcess, journal
from tests.helpers import SHANGHAI, jsonl_line_config, wait_until

TEN_MIN = timedelta(minutes=10)
# A people channel (a WeCom robot) whose endpoint is a closed local port: only the outbox rows matter.
ROBOT = '\n[[channel]]\nname = "robot"\ntype = "wecom"\nkey = "k-1"\nurl = "http://127.0.0.1:9/send"\n'


def test_the_offset_is_reported_once_and_applied_steadily_so_spacing_is_kept() -> None:
    clocks = TerminalClocks()
    now = datetime(2026, 11, 30, 12, 0, tzinfo=SHANGHAI)
    behind = timedelta(days=3, minutes=7)
    used, news, _ = clocks.observe("T1", now - behind, now + timedelta(seconds=1), TEN_MIN)
    assert news is not None and news.offset == behind + timedelta(seconds=1)
    reported = [news]
    times = [used]
    for k in range(1, 6):  # transport delay wobbles; the applied offset does not
        stamped = now - behind + timedelta(minutes=k)
        used, news, _ = clocks.observe("T1", stamped, stamped + behind + timedelta(seconds=k % 3), TEN_MIN)
        reported += [news] if news else []
        times.append(used)
    assert len(reported) == 1, "one notice per terminal, not one per transaction"
    assert [b - a for a, b in itertools.pairwise(times)] == [timedelta(minutes=1)] * 5
    assert abs(times[-1] - (now + timedelta(minutes=5))) < timedelta(seconds=5)
    # Someone sets the clock right: the correction ends at once (the smallest lag is the new one).
    fixed = now + timedelta(minutes=30)
    used, news, changed = clocks.observe("T1", fixed, fixed, TEN_MIN)
    assert (used, news, changed) == (fixed, None, True) and "T1" not in clocks.wrong
    # A clock ahead is the same rule with the other sign; a small lag is no news.
    assert clocks.observe("T2", now + timedelta(hours=2), now, TEN_MIN)[0] == now
    assert clocks.observe("T3", now - timedelta(minutes=3), now, TEN_MIN) == (now - timedelta(minutes=3), None, False)
    assert clocks.observe("T4", now - timedelta(days=9), now, timedelta(0))[1] is None, "0s turns it off"
    # Re-anchored only when the old offset would leave a transaction half a day from its receive time.
    clocks.observe("T5", now - behind, now, TEN_MIN)
    later = now + timedelta(minutes=1)
    assert clocks.observe("T5", later - behind + timedelta(hours=5), later, TEN_MIN)[0] == later + timedelta(hours=5)
    jumped = now + timedelta(minutes=2)
    stamped = jumped - behind + RESYNC + timedelta(hours=1)
    used, news, changed = clocks.observe("T5", stamped, jumped, TEN_MIN)
    assert (used, news, changed) == (jumped, None, True), "a new offset, and no second notice"
    assert TerminalClocks.from_meta(clocks.to_meta()).wrong == clocks.wrong


def test_a_terminal_days_behind_on_a_pty_still_gets_its_double_charge_flagged(tmp_path: Path) -> None:
    """``simulate --pty`` as it was (a fixed day in the past) into a real ``settleguard run``."""
    term = PtyTerminal()
    cfg = tmp_path / "settleguard.toml"
    cfg.write_text(jsonl_line_config("时钟测试店", term.device, "baudrate = 115200\n" + ROBOT), encoding="utf-8")
    daemon = DaemonProcess(cfg, tmp_path / "state")
    past = SYSTEM_CLOCK.now().astimezone(SHANGHAI).date() - timedelta(days=3)
    day = [e for e in build_day("demo", seed=1, day=past) if isinstance(e.event, Transaction)]
    dup = next(e.event for e in day if e.label == "dup_exact")
    assert isinstance(dup, Transaction)
    try:
        daemon.start()
        started = SYSTEM_CLOCK.now()

        def sightings() -> int:
            with closing(journal(daemon.state)) as conn:
                return int(conn.execute("SELECT COALESCE(SUM(sightings), 0) FROM transactions").fetchone()[0])

        # One charge at a time, as a till sends them: each is journalled before the next is written
        # (written all at once, both halves of the double charge could share one batch).
        for n, e in enumerate(day, 1):
            term.write(encode_event("jsonl", e.event, reprint=e.reprint))
            wait_until(lambda n=n: sightings() == n, f"charge {n} journalled", timeout=30)  # type: ignore[misc]
        with closing(journal(daemon.state)) as conn:
            rules = [r[0] for r in conn.execute("SELECT rule FROM alerts WHERE subject_voucher = ?",
                                                (dup.voucher_no,))]
            notices = conn.execute("SELECT payload FROM outbox WHERE kind = 'device'").fetchall()
            first = from_utc_text(conn.execute("SELECT MIN(time_utc) FROM transactions").fetchone()[0])
        assert "DUP-001" in rules, f"the double charge {dup.voucher_no} was journalled without its alert"
        assert len(notices) == 1, "one 'terminal clock is wrong' notice for the terminal, on the one robot"
        # Three calendar days back, so 2 days and some hours to 3 days behind depending on the time of day.
        lag = re.search(r"终端 15221155 的时钟慢了约 (\d+) 天", notices[0][0])
        assert lag is not None and int(lag.group(1)) in (2, 3), notices[0][0]
        # The rules (and the journal's time index) place the day where it was received, not 3 days back.
        assert first >= started - timedelta(days=1)
        assert daemon.stop() == 0
    finally:
        daemon.close()
        term.close()


def test_simulate_plays_today_by_default_so_a_live_daemon_shows_the_demo_alerts(tmp_path: Path) -> None:
    today = SYSTEM_CLOCK.now().astimezone(SHANGHAI).date()
    with subprocess.Popen([sys.executable, "-m", "agent.cli", "simulate", "--pty", "--speed", "0", "--wait", "3"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as sim:
        assert sim.stdout is not None
        device = sim.stdout.readline().strip()
        loaded = parse_config(jsonl_line_config("今日演示店", device), "<test>")
        # The daemon's clock stands at noon today, as if the shop were open now.
        clock = ManualClock(datetime.combine(today, time(12, 0), tzinfo=SHANGHAI))
        daemon = Daemon(loaded, tmp_path / "state", clock=clock, use_scheduler=False, watch_config=False)
        daemon.start()
        try:
            wait_until(lambda: daemon.sources[0].state == "open", "the pty open")
            assert sim.wait(30) == 0, sim.stderr.read() if sim.stderr else ""
            wait_until(lambda: daemon.pipeline is not None and daemon.pipeline.counts["new_transactions"] >= 60,
                       "the demo day journalled", timeout=30)
            journal_file = journal_path(daemon.state_dir)
        finally:
            daemon.stop()
    with closing(journal(journal_file.parent)) as conn:
        rules = {r[0] for r in conn.execute("SELECT rule FROM alerts")}
        days = {datetime.fromisoformat(r[0]).astimezone(SHANGHAI).date()
                for r in conn.execute("SELECT json_extract(data, '$.time') FROM transactions")}
    assert days == {today}
    assert "DUP-001" in rules, rules
