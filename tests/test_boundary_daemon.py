"""Issue 13, observations 1 and 2, on real parts: poison input reaches the running daemon through a pty and
through the TCP printer pass-through; it is quarantined, the events around it are journalled, nothing dies.
"""

from __future__ import annotations

import json
import socket
import sqlite3
from datetime import datetime, timedelta
from pathlib import Path

from agent.config import parse_config
from agent.service.daemon import Daemon
from agent.sim.terminal import PtyTerminal
from agent.sim.wire_escpos import slip_lines
from agent.store.schema import journal_path
from drivers.protocols.escpos import encode_text_receipt
from tests.helpers import SHANGHAI, sale, wait_until
from tests.test_sources import FakePrinter, free_port

BASE = """
[shop]
name = "边界测试店"
till = "t1"
timezone = "Asia/Shanghai"
"""

JSONL_SOURCE = """
[[source]]
name = "terminal"
protocol = "jsonl"
port = "{device}"
baudrate = 115200
"""

PRINTER_SOURCE = """
[[source]]
name = "printer"
protocol = "escpos"
listen = "127.0.0.1:{port}"
forward = "127.0.0.1:{printer}"
"""




def journal_figures(state: Path) -> tuple[list[str], list[sqlite3.Row]]:
    """(voucher numbers journalled, quarantine rows), read as doctor would: read-only, from outside."""
    path = journal_path(state)
    if not path.exists():
        return [], []
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    conn.row_factory = sqlite3.Row
    try:
        vouchers = [r[0] for r in conn.execute("SELECT voucher_no FROM transactions ORDER BY id")]
        try:
            rows = conn.execute("SELECT * FROM quarantine ORDER BY id").fetchall()
        except sqlite3.OperationalError:
            rows = []  # today's main has no quarantine table
        return vouchers, rows
    finally:
        conn.close()


def line(voucher: str, at: datetime, **override: object) -> str:
    obj = sale(voucher, 1000 + int(voucher), at).to_dict()
    obj.update(override)
    return json.dumps(obj)


def test_poison_json_lines_on_a_pty_are_quarantined_and_every_other_line_is_journalled(tmp_path: Path) -> None:
    now = datetime.now(SHANGHAI).replace(microsecond=0)
    term = PtyTerminal()
    loaded = parse_config(BASE + JSONL_SOURCE.format(device=term.device))
    daemon = Daemon(loaded, tmp_path, use_scheduler=False)
    poison = [
        line("000002", now, amount_minor=2**63),                             # SQLite's INTEGER overflows
        line("000003", now, time="9999-12-31T23:00:00-05:00"),               # UTC would be year 10000
        line("000004", now, time="0001-01-01T00:00:00+08:00"),               # UTC would be year 0
        line("000005", now, operator="\ud800"),                              # a lone surrogate (JSON escape)
        line("000006", now).replace('"amount_minor": 1006', '"amount_minor": ' + "9" * 5000),  # json's 4300 digits
    ]
    assert "9" * 5000 in poison[-1] and "\\ud800" in poison[3]
    first_read = [line("000001", now), *poison, line("000007", now)]
    daemon.start()
    stopped = False
    try:
        # Bytes written before the reader opens the port would be flushed with its input buffer.
        wait_until(lambda: daemon.sources[0].state == "open", "the reader has the pty open")
        term.write(("\n".join(first_read) + "\n").encode())
        wait_until(lambda: len(journal_figures(tmp_path)[1]) == 5 and len(journal_figures(tmp_path)[0]) == 2,
                   "five lines quarantined and the two around them journalled", timeout=15,
                   detail=lambda: journal_figures(tmp_path))
        # Later lines still reach the journal: neither the pipeline nor the reader died.
        term.write((line("000008", now + timedelta(seconds=5)) + "\n").encode())
        wait_until(lambda: len(journal_figures(tmp_path)[0]) == 3, "a later line journalled", timeout=15)
        # A half line is pending when the daemon stops: the idle flush at SIGTERM must not crash on it.
        term.write(b'{"type": "transaction", "amount_minor": ' + b"1" * 5000)
        wait_until(lambda: daemon.sources[0].stats is not None
                   and daemon.sources[0].stats.bytes_in > sum(len(x) + 1 for x in first_read) + 5000,
                   "the half line read", timeout=15)
        daemon.stop()
        stopped = True
    finally:
        if not stopped:
            daemon.stop()
        term.close()
    vouchers, quarantined = journal_figures(tmp_path)
    assert vouchers == ["000001", "000007", "000008"]
    assert len(quarantined) == 6  # the five poison lines and the half line flushed at stop
    reasons = [r["reason"] for r in quarantined]
    assert reasons[0].startswith("amount_minor: outside")
    assert reasons[1].startswith("time: year 9999") and reasons[2].startswith("time: year 1")
    assert "lone surrogate" in reasons[3]
    assert "4300" in reasons[4] and "4300" in reasons[5]
    assert all(r["source"] == "terminal" for r in quarantined)
    assert '"000002"' in quarantined[0]["raw"] and "\\ud800" in quarantined[3]["raw"]
    assert daemon.pipeline is not None and daemon.pipeline.counts["quarantined"] == 6


def test_a_slip_with_a_22_digit_amount_through_the_printer_pass_through_is_quarantined(tmp_path: Path) -> None:
    printer = FakePrinter()
    port = free_port()
    loaded = parse_config(BASE + PRINTER_SOURCE.format(port=port, printer=printer.port))
    daemon = Daemon(loaded, tmp_path, use_scheduler=False)
    now = datetime.now(SHANGHAI).replace(microsecond=0)
    bad = [x if not x.startswith("金额") else "金额(AMOUNT):RMB 99999999999999999999.00"
           for x in slip_lines(sale("000041", 12800, now))]
    assert "金额(AMOUNT):RMB 99999999999999999999.00" in bad
    jobs = [encode_text_receipt(bad), encode_text_receipt(slip_lines(sale("000042", 4500, now)))]
    daemon.start()
    try:
        wait_until(lambda: daemon.sources[0].state == "open", "the pass-through listening")
        for job in jobs:
            with socket.create_connection(("127.0.0.1", port)) as till:
                till.sendall(job)
            # One job per connection, as a till prints: the printer must get each unchanged.
            wait_until(lambda job=job: bytes(printer.received).endswith(job), "the job printed")  # type: ignore[misc]
        wait_until(lambda: journal_figures(tmp_path)[0] == ["000042"] and len(journal_figures(tmp_path)[1]) == 1,
                   "the good slip journalled, the bad one quarantined", timeout=15)
    finally:
        daemon.stop()
        printer.close()
    assert bytes(printer.received) == b"".join(jobs)
    vouchers, quarantined = journal_figures(tmp_path)
    assert vouchers == ["000042"]
    [row] = quarantined
    assert row["source"] == "printer" and row["stage"] == "limits"
    assert row["reason"].startswith("amount_minor: outside") and '"000041"' in row["raw"]
