"""settleguard doctor on real files, a real pty, a real journal and real sockets."""

from __future__ import annotations

import grp
import json
import os
import socket
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from agent.service.doctor import Check, check_clock, check_device, check_endpoint, endpoints, run_checks
from agent.sim.terminal import PtyTerminal
from agent.store.journal import Journal
from drivers.clock import ManualClock

CONFIG = """
[shop]
name = "体检测试店"
timezone = "Asia/Shanghai"

[shop.hours]
mon = ["09:00-21:00"]
holidays = "cn"

[[source]]
name = "terminal"
protocol = "cn_ecr"
port = "{device}"

[[channel]]
name = "hq"
type = "webhook"
url = "http://127.0.0.1:{port}/hook"
"""

NOW = datetime(2026, 11, 27, 13, 0, tzinfo=UTC)


def by_name(checks: list[Check]) -> dict[str, Check]:
    return {c.name: c for c in checks}


def test_a_pty_owned_by_group_tty_is_unreachable_for_the_service_in_group_dialout() -> None:
    term = PtyTerminal()
    try:
        os.chmod(term.device, 0o620)
        check = check_device("source terminal", Path(term.device), "dialout")
    finally:
        term.close()
    assert check.status == "fail"
    assert "cannot read and write" in check.detail and "60-settleguard.rules" in (check.fix or "")


def test_a_device_in_the_service_group_with_0660_is_fine(tmp_path: Path) -> None:
    term = PtyTerminal()
    try:
        group = grp.getgrgid(os.stat(term.device).st_gid).gr_name
        os.chmod(term.device, 0o660)
        ok = check_device("source terminal", Path(term.device), group)
        missing = check_device("source terminal", tmp_path / "ttyUSB9", group)
    finally:
        term.close()
    assert ok.status == "ok" and f"group {group}" in ok.detail
    assert missing.status == "fail" and "does not exist" in missing.detail


def test_a_healthy_till_has_nothing_to_fix(tmp_path: Path) -> None:
    term = PtyTerminal()
    os.chmod(term.device, 0o666)
    cfg = tmp_path / "settleguard.toml"
    cfg.write_text(CONFIG.format(device=term.device, port=1), encoding="utf-8")
    (tmp_path / "state").mkdir()
    Journal(tmp_path / "state" / "settleguard.sqlite3").close()
    try:
        checks = by_name(run_checks(cfg, tmp_path / "state", clock=ManualClock(NOW)))
    finally:
        term.close()
    assert {n: c.status for n, c in checks.items()} == {
        "config": "ok", "source terminal": "ok", "state directory": "ok", "journal": "ok",
        "dead letters": "ok", "quarantine": "ok", "holiday calendar": "ok", "clock": "ok", "daemon": "skip",
        "wires": "skip"}


def test_dead_letters_a_clock_behind_the_journal_and_a_missing_calendar_year_are_reported(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    Journal(state / "settleguard.sqlite3").close()
    conn = sqlite3.connect(state / "settleguard.sqlite3")
    conn.execute("INSERT INTO outbox(message_id, channel, kind, payload, state, next_at, created, updated, last_error)"
                 " VALUES('a.1', 'hq', 'opened', '{}', 'dead', 'x', 'x', 'x', 'HTTP 401: bad signature')")
    conn.execute("INSERT INTO transactions(key, kind, result, amount_minor, time_utc, data, first_seen, last_seen)"
                 " VALUES('k1', 'sale', 'approved', 100, '2026-12-30T10:00:00.000000Z', '{}', 'x', 'x')")
    conn.commit()
    conn.close()
    cfg = tmp_path / "settleguard.toml"
    cfg.write_text(CONFIG.format(device="/dev/null", port=1), encoding="utf-8")
    checks = by_name(run_checks(cfg, state, clock=ManualClock(NOW)))
    assert checks["dead letters"].status == "fail" and "HTTP 401" in checks["dead letters"].detail
    assert checks["clock"].status == "fail" and "behind the journal" in checks["clock"].detail
    assert checks["journal"].status == "ok"
    far = by_name(run_checks(cfg, state, clock=ManualClock(datetime(2041, 3, 1, tzinfo=UTC))))
    assert far["holiday calendar"].status == "fail" and "2041" in far["holiday calendar"].detail
    assert check_clock(datetime(2001, 1, 1, tzinfo=UTC), None).status == "fail"


def test_a_channel_locked_out_that_keeps_retrying_is_reported_though_nothing_is_dead(tmp_path: Path) -> None:
    """A NATS channel whose password was changed on the server retries for ever (the messages are kept), so it
    never makes a dead letter; doctor still says it is failing, and why."""
    state = tmp_path / "state"
    state.mkdir()
    Journal(state / "settleguard.sqlite3").close()
    conn = sqlite3.connect(state / "settleguard.sqlite3")
    refused = "nats hq: NATS 拒绝登录 (authorization refused): check user/password ..."
    for i, attempts in enumerate((7, 3)):
        conn.execute("INSERT INTO outbox(message_id, channel, kind, payload, state, attempts, next_at, created,"
                     " updated, last_error) VALUES(?, 'hq', 'opened', '{}', 'pending', ?, 'x', 'x', ?, ?)",
                     (f"a.{i}", attempts, f"2026-11-27T12:0{i}:00Z", refused))
    conn.execute("INSERT INTO outbox(message_id, channel, kind, payload, state, attempts, next_at, created, updated)"
                 " VALUES('b.1', 'shop', 'opened', '{}', 'pending', 0, 'x', 'x', 'x')")     # not tried yet: fine
    conn.execute("INSERT INTO outbox(message_id, channel, kind, payload, state, attempts, next_at, created, updated,"
                 " last_error) VALUES('c.1', 'shop', 'opened', '{}', 'pending', 1, 'x', 'x', 'x', 'HTTP 502')")
    conn.execute("INSERT INTO outbox(message_id, channel, kind, payload, state, attempts, next_at, created, updated,"
                 " last_error) VALUES('d.1', 'gone', 'opened', '{}', 'pending', 9, 'x', 'x', 'x', 'HTTP 404')")
    conn.commit()
    conn.close()
    cfg = tmp_path / "settleguard.toml"
    shop = '\n[[channel]]\nname = "shop"\ntype = "webhook"\nurl = "http://127.0.0.1:2/hook"\n'
    cfg.write_text(CONFIG.format(device="/dev/null", port=1) + shop, encoding="utf-8")
    checks = by_name(run_checks(cfg, state, clock=ManualClock(NOW)))
    assert checks["dead letters"].status == "ok"
    locked = checks["channel hq delivery"]
    assert locked.status == "warn" and "2 message(s)" in locked.detail and "up to 7" in locked.detail
    # one transient failure waiting for its retry, and a channel taken out of the config: no line
    assert "拒绝登录" in locked.detail
    assert "channel shop delivery" not in checks and "channel gone delivery" not in checks
    from agent.config import parse_config

    for url, port in [("nats://hq.example.com", 4222), ("wss://hq.example.com", 443), ("ws://hq.example.com", 80)]:
        nats = parse_config(f'[[channel]]\nname = "chain"\ntype = "nats"\nurl = "{url}"\n')
        assert endpoints(nats) == [("chain", "hq.example.com", port)], url


def test_network_check_connects_to_the_channel_host_and_sends_nothing(tmp_path: Path) -> None:
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    cfg = tmp_path / "settleguard.toml"
    cfg.write_text(CONFIG.format(device="/dev/null", port=port), encoding="utf-8")
    from agent.config import load_config

    assert endpoints(load_config(cfg)) == [("hq", "127.0.0.1", port)]
    assert check_endpoint("hq", "127.0.0.1", port, 2.0).status == "ok"
    conn, _ = server.accept()
    conn.settimeout(0.2)
    try:
        assert conn.recv(1) == b"", "doctor must not send a single byte"
    finally:
        conn.close()
        server.close()
    closed = check_endpoint("hq", "127.0.0.1", port, 2.0)
    assert closed.status == "fail" and f"127.0.0.1:{port}" in closed.detail


def test_doctor_json_exits_1_and_lists_what_to_fix(tmp_path: Path) -> None:
    cfg = tmp_path / "settleguard.toml"
    cfg.write_text('[shop]\nname = "x"\ncolour = "red"\n', encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "agent.cli", "doctor", "--config", str(cfg), "--state",
                           str(tmp_path / "state"), "--json"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1, proc.stderr
    report = json.loads(proc.stdout)
    assert report["ok"] is False
    bad = [c for c in report["checks"] if c["status"] == "fail"]
    assert [c["name"] for c in bad] == ["config"] and "shop.colour" in bad[0]["detail"] and bad[0]["fix"]
    human = subprocess.run([sys.executable, "-m", "agent.cli", "doctor", "--config", str(cfg), "--state",
                            str(tmp_path / "state")], capture_output=True, text=True, timeout=30)
    assert human.returncode == 1 and "To fix:" in human.stdout and "1. config:" in human.stdout
