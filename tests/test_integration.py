"""End to end on real parts: a pty terminal, the daemon, SQLite, and an HTTP server on 127.0.0.1."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

from agent.service.daemon import Daemon
from agent.sim.day import build_day
from agent.sim.rig import ShopRig
from agent.sim.sink import Received
from agent.sim.terminal import encode_event
from agent.store.schema import journal_path
from drivers.clock import SYSTEM_CLOCK
from drivers.pan import contains_full_pan
from tests.helpers import SHANGHAI, wait_until
from tests.web_support import kept_demo


def run_day_through_daemon(tmp_path: Path, protocol: str) -> tuple[list[Received], Daemon, list[str]]:
    # Today's date keeps the transactions inside DUP-001's window relative to each other, whatever the clock.
    events = build_day("demo", seed=3, day=SYSTEM_CLOCK.now().astimezone(SHANGHAI).date(), tz=SHANGHAI,
                       settle=False)
    with ShopRig(name="集成测试店", protocol=protocol, state=tmp_path) as rig:
        daemon = rig.daemon()
        daemon.start()
        try:
            for ev in events:
                rig.terminal.write(encode_event(protocol, ev.event, reprint=ev.reprint))
            assert rig.sink.wait_for(lambda got: any(r.body["data"]["rule"] == "DUP-001" for r in got), timeout=15)
            pipeline = daemon.pipeline
            assert pipeline is not None
            wait_until(lambda: pipeline.counts["events"] >= len(events), f"all {len(events)} events decoded",
                       detail=lambda: f"decoded {pipeline.counts['events']}")
        finally:
            daemon.stop()
        rejected = rig.sink.rejected
        assert rejected == 0, "every request must carry a valid Standard Webhooks signature"
        received = list(rig.received)
    return received, daemon, [ev.event.card for ev in events if getattr(ev.event, "card", None)]  # type: ignore[misc]


@pytest.mark.parametrize("protocol", ["jsonl", "cn_ecr"])
def test_duplicate_charge_on_a_pty_reaches_a_local_webhook(tmp_path: Path, protocol: str) -> None:
    received, daemon, _ = run_day_through_daemon(tmp_path, protocol)
    dup = [r for r in received if r.body["data"]["rule"] == "DUP-001"]
    assert dup, "the DUP-001 alert must arrive at the receiver"
    alert = dup[0].body["data"]
    assert alert["suggestion"]["action"] == "void"
    assert alert["transactions"][-1]["amount_minor"] == 12800
    assert daemon.pipeline is not None and daemon.pipeline.counts["reprints"] >= 1


def test_full_card_numbers_never_reach_the_journal_or_the_wire_out(tmp_path: Path) -> None:
    received, _, cards = run_day_through_daemon(tmp_path, "cn_ecr")
    # The simulated terminal sent full, Luhn-valid PANs on the wire ...
    assert any(contains_full_pan(c) for c in cards)
    # ... none of which survives in any journal row ...
    conn = sqlite3.connect(journal_path(tmp_path))
    dump = "\n".join(conn.iterdump())
    conn.close()
    assert "INSERT" in dump and not contains_full_pan(dump)
    # ... or in any payload that left the till.
    for rec in received:
        assert not contains_full_pan(json.dumps(rec.body, ensure_ascii=False))


def test_bad_config_exits_78_naming_file_line_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "settleguard.toml"
    bad.write_text('[shop]\nname = "x"\n\n[[source]]\nname = "terminal"\nprotocol = "zvt"\n'
                   'port = "/dev/ttyUSB0"\nbaudrate = "fast"\n', encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "agent.cli", "run", "--config", str(bad), "--state",
                           str(tmp_path / "state")], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 78
    assert str(bad) in proc.stderr and "line 8" in proc.stderr and "source[0] (terminal).baudrate" in proc.stderr


def test_check_config_accepts_the_example_config() -> None:
    example = Path(__file__).resolve().parents[1] / "config" / "settleguard.example.toml"
    # Only the enabled WeCom channel needs its key; the disabled DingTalk one must not.
    env = {**os.environ, "SETTLEGUARD_WECOM_KEY": "test-key-0000"}
    proc = subprocess.run([sys.executable, "-m", "agent.cli", "check-config", str(example)], capture_output=True,
                          text=True, timeout=30, env=env)
    assert proc.returncode == 0, proc.stderr


def test_decode_round_trips_the_design_example(tmp_path: Path) -> None:
    from tests.test_model import EVENT_JSON_EXAMPLE

    capture = tmp_path / "one.jsonl"
    capture.write_text(EVENT_JSON_EXAMPLE + "\n", encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "agent.cli", "decode", "--protocol", "jsonl", "--tz",
                           "Asia/Shanghai", str(capture)], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == EVENT_JSON_EXAMPLE + "\n"


def test_the_demo_runs_end_to_end(tmp_path: Path) -> None:
    # --keep serves the till page after the day until Ctrl-C (tests/web_support.py presses it).
    status, stdout = kept_demo(tmp_path)
    assert status == 0, stdout
    assert "DUP-001" in stdout and "pre-close review" in stdout and "escalated" in stdout
    assert list((tmp_path / "evidence").glob("*/evidence.json"))


def test_decode_reads_hex_dumps_and_takes_decoder_options(tmp_path: Path) -> None:
    vector = tmp_path / "sale.hex"
    shutil.copy(Path(__file__).parent / "data" / "cn-ecr" / "ingposcom_l165_sale_response_frame.hex", vector)
    # The frame has no year; decode places it relative to the capture's mtime: pin that.
    taken = datetime(2026, 9, 20, 12, 0, tzinfo=SHANGHAI).timestamp()
    os.utime(vector, (taken, taken))
    strict = subprocess.run([sys.executable, "-m", "agent.cli", "decode", "--protocol", "cn_ecr", "--tz",
                             "Asia/Shanghai", str(vector)], capture_output=True, text=True, timeout=30)
    assert strict.returncode == 65 and "LRC mismatch" in strict.stderr  # masked after capture: LRC is off
    lenient = subprocess.run([sys.executable, "-m", "agent.cli", "decode", "--protocol", "cn_ecr", "--tz",
                              "Asia/Shanghai", "--option", "verify_lrc=false", str(vector)],
                             capture_output=True, text=True, timeout=30)
    assert lenient.returncode == 0, lenient.stderr
    event = json.loads(lenient.stdout)
    assert (event["voucher_no"], event["amount_minor"], event["time"]) == (
        "000005", 20, "2026-09-11T15:42:13+08:00")
