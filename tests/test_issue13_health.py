"""Regressions for issue 13, observations 3 (health side), 4, 5 and 9, on real parts.

Each test uses only what main already had (the Daemon, its health step, the CLI as a subprocess),
so on main it fails for the reason the issue describes, not for a missing name.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import threading
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from agent.config import load_config, parse_config
from agent.messages import AlertChange, EventBatch
from agent.service.daemon import Daemon
from agent.sim.terminal import PtyTerminal
from agent.store.schema import journal_path
from drivers.clock import SYSTEM_CLOCK, ManualClock
from tests.helpers import (
    BASE_CONFIG,
    SHANGHAI,
    committed_alerts,
    daemon_on_pty,
    quiet_request,
    sale,
    sale_line,
    wait_until,
)

CLI = [sys.executable, "-m", "agent.cli"]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- observation 3: a pipeline that cannot write must not stay healthy ----------------------------------
@pytest.mark.parametrize(("setting", "stall"), [("", 300), ('\n[health]\njournal_stall = "60s"\n', 60)],
                         ids=["default-stall", "configured-stall"])
def test_obs3_an_ack_the_journal_cannot_store_never_leaves_a_blind_daemon_healthy(
        tmp_path: Path, setting: str, stall: int) -> None:
    """``"by": {"x": 1}`` made the journal write fail and the pipeline retry forever while the health
    step kept feeding the watchdog. Either the request is refused and the next sale is journalled, or
    the daemon reports itself unhealthy once the stall ([health] journal_stall) has passed."""
    term = PtyTerminal()
    daemon = daemon_on_pty(tmp_path, term, setting)
    try:
        assert daemon.pipeline is not None and isinstance(daemon.clock, ManualClock)
        pipeline = daemon.pipeline
        term.write(sale_line("000001") + sale_line("000002"))
        wait_until(lambda: committed_alerts(daemon) >= 1, "the double charge flagged")
        alert_id = pipeline.journal.alerts()[0].id
        sock = tmp_path / "state" / "control.sock"
        payload = {"cmd": "ack", "id": alert_id, "answer": "legit", "by": {"x": 1}}
        threading.Thread(target=quiet_request, args=(sock, payload), daemon=True).start()
        term.write(sale_line("000003", amount=777))
        wait_until(lambda: pipeline.counts["new_transactions"] == 3 or pipeline.journal_error is not None,
                   "the next sale journalled, or the pipeline retrying a write that fails")
        if pipeline.counts["new_transactions"] == 3:
            return  # refused cleanly (the control-socket boundary): the pipeline still sees
        assert daemon.notify_systemd() == (), "the stall starts counting"
        daemon.clock.advance(stall + 1)
        wait_until(lambda: any(p.startswith(f"journal not written for {stall + 1}s") for p in daemon.notify_systemd()),
                   "the blind pipeline reported unhealthy", detail=daemon.health_problems)
    finally:
        daemon.stop()
        term.close()


def test_obs3_a_journal_that_refuses_every_write_turns_unhealthy_after_journal_stall(tmp_path: Path) -> None:
    """The health side of observation 3 with a real SQLite failure: SQLITE_FULL on every write (the
    journal may not grow by a page). Main retried forever and fed the watchdog; now a stall longer than
    [health] journal_stall (default 5 minutes) is a problem, and writing resumes when the journal can."""
    term = PtyTerminal()
    daemon = daemon_on_pty(tmp_path, term)
    clock = daemon.clock
    try:
        assert daemon.pipeline is not None and isinstance(clock, ManualClock)
        pipeline = daemon.pipeline
        conn = pipeline.journal.conn
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count={pages}")
        for i in range(40):
            term.write(sale_line(f"{i:06d}", amount=10000 + i))
        wait_until(lambda: pipeline.journal_error is not None, "the pipeline retrying a write that fails")
        assert daemon.notify_systemd() == (), "a short stall is ridden out"
        clock.advance(301)
        # Idle threads note progress on the moved clock within a second; the journal cannot.
        wait_until(lambda: any(p.startswith("journal not written for 301s: ") for p in daemon.health_problems())
                   and len(daemon.health_problems()) == 1, "only the journal judged unhealthy",
                   detail=daemon.health_problems)
        problems = daemon.notify_systemd()
        assert "full" in problems[0], "the real cause (SQLITE_FULL), not a failed ROLLBACK"
        conn.execute("PRAGMA max_page_count=1073741823")
        # The counts move inside the commit, the error clears just after it: wait for both.
        wait_until(lambda: pipeline.counts["new_transactions"] == 40 and pipeline.journal_error is None,
                   "every held sale written once the journal grows again", timeout=60,
                   detail=lambda: (pipeline.counts["new_transactions"], pipeline.journal_error))
        assert daemon.notify_systemd() == ()
    finally:
        daemon.stop()
        term.close()


# -- observation 4: values that validate but fail at run time; state errors --------------------------------
LEAD = BASE_CONFIG.replace('cutoff = "23:00"', 'cutoff = "23:00"\nreview_lead = "999999d"')
BAD_SECRET = BASE_CONFIG + '\n[[channel]]\nname = "hook"\ntype = "webhook"\nurl = "http://127.0.0.1:9/"\n' \
                           'secret = "whsec_!!!not-base64!!!"\n'


def one_plain_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert "Traceback" not in stderr, stderr
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.mark.parametrize(("text", "field"), [(LEAD, "review_lead"), (BAD_SECRET, "whsec_")],
                         ids=["review_lead", "webhook_secret"])
def test_obs4_check_config_refuses_values_that_fail_at_run_time(tmp_path: Path, text: str, field: str) -> None:
    cfg = tmp_path / "settleguard.toml"
    cfg.write_text(text, encoding="utf-8")
    proc = subprocess.run([*CLI, "check-config", str(cfg)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 78, proc.stdout + proc.stderr
    assert field in one_plain_line(proc.stderr)


def test_obs4_run_refuses_a_review_lead_it_cannot_plan_with_exit_78(tmp_path: Path) -> None:
    cfg = tmp_path / "settleguard.toml"
    cfg.write_text(LEAD, encoding="utf-8")
    proc = subprocess.run([*CLI, "run", "--config", str(cfg), "--state", str(tmp_path / "state")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 78, proc.stderr
    assert "review_lead" in one_plain_line(proc.stderr)


def _run_state(tmp_path: Path, state: Path) -> subprocess.CompletedProcess[str]:
    cfg = tmp_path / "settleguard.toml"
    cfg.write_text(BASE_CONFIG, encoding="utf-8")
    return subprocess.run([*CLI, "run", "--config", str(cfg), "--state", str(state)], capture_output=True,
                          text=True, timeout=60)


def test_obs4_a_corrupt_journal_exits_78_with_one_plain_line(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    journal_path(state).write_bytes(b"this is not an SQLite database, a disk ate it\n" * 200)
    proc = _run_state(tmp_path, state)
    assert proc.returncode == 78, proc.stderr
    line = one_plain_line(proc.stderr)
    assert str(journal_path(state)) in line and "not a database" in line


def test_obs4_a_state_directory_that_cannot_be_made_exits_78_with_one_plain_line(tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the state directory's parent should be")
    proc = _run_state(tmp_path, blocker / "state")
    assert proc.returncode == 78, proc.stderr
    one_plain_line(proc.stderr)


def test_obs4_a_read_only_state_directory_exits_78_with_one_plain_line(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    if os.geteuid() == 0:
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(state)],
                                 capture_output=True, text=True)
        if mounted.returncode != 0:
            pytest.skip(f"cannot mount a read-only tmpfs here ({mounted.stderr.strip()})")
    else:
        state.chmod(0o500)
    try:
        proc = _run_state(tmp_path, state)
    finally:
        if os.geteuid() == 0:
            subprocess.run(["umount", "-l", str(state)], check=False)
        else:
            state.chmod(0o700)
    assert proc.returncode == 78, proc.stderr
    one_plain_line(proc.stderr)


def test_obs4_a_reload_that_cannot_plan_keeps_the_running_scheduler_and_says_so(tmp_path: Path) -> None:
    """On main the reload stopped the old scheduler, then the new one failed: no cutoff ran again."""
    path = tmp_path / "settleguard.toml"
    path.write_text(BASE_CONFIG, encoding="utf-8")
    clock = ManualClock(datetime(2026, 11, 27, 14, 0, tzinfo=SHANGHAI))
    daemon = Daemon(load_config(path), tmp_path / "state", clock=clock, watch_config=False)
    daemon.start()
    try:
        running = daemon.scheduler
        assert running is not None
        path.write_text(LEAD, encoding="utf-8")
        assert daemon.reload() is False
        assert daemon.scheduler is running and running._thread.is_alive(), "the old schedule still runs"
        status = daemon.status()
        assert "review_lead" in (status["reload"]["error"] or "")
        assert daemon.loaded.config.settlement.review_lead == timedelta(minutes=30)
    finally:
        daemon.stop()


# -- observation 5: a cutoff missed while down is caught up at start, once -------------------------------
def notices(heard: list[object]) -> list[str]:
    return [c.notice for c in heard if isinstance(c, AlertChange)]


def _start(state: Path, at: datetime, changes: list[AlertChange]) -> Daemon:
    daemon = Daemon(parse_config(BASE_CONFIG, "<test>"), state, clock=ManualClock(at), listeners=[changes.append])
    daemon.start()
    return daemon


def _escalations(state: Path) -> list[str]:
    conn = sqlite3.connect(f"file:{journal_path(state)}?mode=ro", uri=True)
    try:
        return [r[0] for r in conn.execute("SELECT alert_id FROM alert_log WHERE state='escalated'")]
    finally:
        conn.close()


def test_obs5_a_cutoff_missed_while_down_escalates_once_at_start(tmp_path: Path) -> None:
    state = tmp_path / "state"
    evening = datetime(2026, 11, 27, 22, 0, tzinfo=SHANGHAI)
    day1: list[AlertChange] = []
    daemon = _start(state, evening, day1)
    try:
        charge = evening - timedelta(minutes=5)
        daemon.inbox.put(EventBatch("jsonl", (sale("000201", 12800, charge),
                                              sale("000202", 12800, charge + timedelta(seconds=40))), evening))
        daemon.command("tick")          # everything queued before it is handled
        assert notices(day1) == ["opened"]
    finally:
        daemon.stop()                   # down at 22:00: the 23:00 cutoff passes while nobody runs

    day2: list[AlertChange] = []
    daemon = _start(state, evening + timedelta(hours=11), day2)
    try:
        wait_until(lambda: "escalated" in notices(day2), "the missed cutoff caught up at start",
                   detail=lambda: notices(day2))
        daemon.command("tick")
        escalated = [c.alert for c in day2 if isinstance(c, AlertChange) and c.notice == "escalated"]
        assert len(escalated) == 1
        assert escalated[0].suggestion is not None and escalated[0].suggestion.action == "refund"
    finally:
        daemon.stop()

    day2_later: list[AlertChange] = []
    daemon = _start(state, evening + timedelta(hours=11, minutes=5), day2_later)
    try:
        daemon.command("tick")
        assert notices(day2_later) == []
    finally:
        daemon.stop()
    assert len(_escalations(state)) == 1, "escalated once, not again on the second restart"


# -- observations 5 and 9 through `settleguard run`: catch-up, and files private whoever starts it ----------
def test_obs5_obs9_run_by_hand_catches_up_and_keeps_its_files_private(tmp_path: Path) -> None:
    state = tmp_path / "state"
    cfg = tmp_path / "settleguard.toml"
    cfg.write_text(BASE_CONFIG, encoding="utf-8")
    # Yesterday evening, in-process: an open double charge, then the daemon goes down before 23:00.
    evening = datetime.combine(SYSTEM_CLOCK.now().astimezone(SHANGHAI).date() - timedelta(days=1),
                               datetime.min.time(), tzinfo=SHANGHAI) + timedelta(hours=22)
    daemon = _start(state, evening, [])
    try:
        daemon.inbox.put(EventBatch("jsonl", (sale("000301", 9900, evening - timedelta(minutes=3)),
                                              sale("000302", 9900, evening - timedelta(minutes=2))), evening))
        daemon.command("tick")
    finally:
        daemon.stop()
    os.chmod(state, 0o755)                           # as an older settleguard or a careless mkdir left it
    os.chmod(journal_path(state), 0o644)

    proc = subprocess.Popen([*CLI, "run", "--config", str(cfg), "--state", str(state)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: os.umask(0o022))  # the shell's usual umask
    try:
        wait_until(lambda: _escalations(state) or proc.poll() is not None, "the missed cutoff caught up by run",
                   timeout=60)
        assert proc.poll() is None, proc.communicate()
        assert len(_escalations(state)) == 1
        sock = state / "control.sock"
        wait_until(sock.exists, "the control socket")
        checked = {state: 0o700 if mode(state) & 0o070 == 0 else 0o750}   # group bits kept for systemd's 0750
        assert mode(state) & 0o007 == 0, oct(mode(state))
        files = [journal_path(state), *(journal_path(state).with_name(journal_path(state).name + s)
                                        for s in ("-wal", "-shm"))]
        evidence = sorted((state / "evidence").rglob("*"))
        assert evidence, "the escalation wrote its refund evidence"
        for path in files + evidence:
            if path.is_dir():
                checked[path] = 0o700
            elif path.exists():
                checked[path] = 0o600
        assert {p: oct(mode(p)) for p in checked} == {p: oct(m) for p, m in checked.items()}
        assert mode(sock) == 0o660, "the control socket keeps its group mode"
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err


def test_obs9_a_state_directory_made_by_run_is_0700(tmp_path: Path) -> None:
    cfg = tmp_path / "settleguard.toml"
    cfg.write_text(BASE_CONFIG, encoding="utf-8")
    state = tmp_path / "fresh" / "state"
    proc = subprocess.Popen([*CLI, "run", "--config", str(cfg), "--state", str(state)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: os.umask(0o022))  # the shell's usual umask
    try:
        wait_until(lambda: (state / "control.sock").exists() or proc.poll() is not None, "the daemon up",
                   timeout=60)
        assert proc.poll() is None, proc.communicate()
        assert oct(mode(state)) == oct(0o700)
        assert oct(mode(journal_path(state))) == oct(0o600)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)


# -- observation 9: `alerts` never cuts silently ------------------------------------------------------------
def _journal_with_alerts(tmp_path: Path, n: int) -> Path:
    from tests.helpers import Harness

    state = tmp_path / "state"
    state.mkdir()
    h = Harness(state)
    start = datetime(2026, 11, 27, 9, 0, tzinfo=SHANGHAI)
    for i in range(n):
        at = start + timedelta(minutes=2 * i)
        card = f"622576******{i:04d}"
        h.feed(sale(f"{2 * i:06d}", 12800, at, card=card), sale(f"{2 * i + 1:06d}", 12800, at + timedelta(seconds=30),
                                                                   card=card))
    assert len(h.opened()) == n
    h.journal.close()
    return state


def _alerts(state: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, "alerts", "--json", "--state", str(state), "--config", "/nonexistent", *extra],
                          capture_output=True, text=True, timeout=60)


def test_obs9_alerts_pages_and_says_how_many_it_left_out(tmp_path: Path) -> None:
    state = _journal_with_alerts(tmp_path, 3)
    shown = _alerts(state, "--limit", "2")
    assert shown.returncode == 0, shown.stderr
    rows = [json.loads(line) for line in shown.stdout.splitlines()]
    assert len(rows) == 2 and "1 older alert(s) not shown" in shown.stderr
    everything = _alerts(state, "--all")
    all_rows = [json.loads(line) for line in everything.stdout.splitlines()]
    assert len(all_rows) == 3 and "not shown" not in everything.stderr
    assert [r["id"] for r in all_rows[1:]] == [r["id"] for r in rows], "the newest are the ones shown"


def test_obs9_alerts_by_default_says_what_it_left_out(tmp_path: Path) -> None:
    from agent.cli.alerts import DEFAULT_LIMIT

    state = _journal_with_alerts(tmp_path, DEFAULT_LIMIT + 1)
    shown = _alerts(state)
    assert len(shown.stdout.splitlines()) == DEFAULT_LIMIT
    assert "1 older alert(s) not shown" in shown.stderr
