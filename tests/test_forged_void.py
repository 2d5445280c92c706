"""A forged void slip does not clear a real alert (issue 14, observation 4: "Corroboration for remedies").

Observed: with a terminal line and a printer pass-through configured, a hand-made "消费撤销(VOID)" slip
sent to the printer port resolved a duplicate-charge alert as voided, recorded as the terminal's.
Now the slip only marks the alert ``void_printed`` (recorded as the printer's); the terminal's own void on
its line resolves it. Real parts: the terminal on a pty (JSON lines), the printer port a TCP
pass-through on 127.0.0.1 in front of a fake printer, the daemon in-process on a ManualClock.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from agent.alerts.book import has_terminal_line
from agent.alerts.lifecycle import STATE_LABELS, AlertState, Cause, printed_cause
from agent.config import parse_config
from agent.messages import Command
from agent.model import Alert, Settlement
from agent.service.daemon import Daemon
from agent.sim.terminal import PtyTerminal, encode_event
from agent.sim.wire_escpos import encode as encode_slip
from agent.sim.wire_escpos import slip_lines
from agent.store.journal import Journal
from drivers.clock import ManualClock
from drivers.protocols.escpos import encode_text_receipt
from tests.helpers import SHANGHAI, Harness, committed_alerts, config, sale, wait_until
from tests.test_transport_tcp import FakePrinter

NOW = datetime(2026, 11, 27, 14, 30, tzinfo=SHANGHAI)
PRINTER_TAP = """
[[source]]
name = "printer"
protocol = "escpos"
listen = "127.0.0.1:0"
forward = "127.0.0.1:{port}"
"""
TERMINAL_LINE = """
[[source]]
name = "terminal"
protocol = "jsonl"
port = "{device}"
"""
SHOP = """
[shop]
name = "撤销单测试店"
till = "t1"
timezone = "Asia/Shanghai"

[rules.DUP-001]
window = "10m"
"""


@pytest.fixture
def printer() -> Iterator[FakePrinter]:
    p = FakePrinter()
    yield p
    p.close()


def forged_void_slip(voucher: str, original: str) -> bytes:
    """What anyone who can print to the till can send: a UnionPay void slip naming the flagged voucher."""
    void = sale(voucher, 12800, NOW - timedelta(minutes=2), kind="void", original=original, source="escpos")
    lines = slip_lines(void)
    assert "交易类型(TRANS TYPE):消费撤销(VOID)" in lines and f"原凭证号(ORIG VOUCHER NO):{original}" in lines
    return encode_text_receipt(lines)


def print_to(address: tuple[str, int], job: bytes) -> None:
    with socket.create_connection(address, timeout=10) as till:
        till.sendall(job)
        till.shutdown(socket.SHUT_WR)
        while till.recv(4096):
            pass


def the_alert(state: Path) -> tuple[Alert, list[dict[str, object]]]:
    j = Journal(state / "settleguard.sqlite3")
    try:
        (alert,) = j.alerts()
        return alert, j.alert_log(alert.id)
    finally:
        j.close()


def charged_twice_with_a_printer_tap(tmp_path: Path, printer: FakePrinter) -> tuple[Daemon, PtyTerminal,
                                                                                     tuple[str, int]]:
    """The daemon with a JSON-lines terminal on a pty and a TCP printer tap, after a duplicate charge
    (one DUP-001 alert): the printer port's address is where the attacker prints."""
    term = PtyTerminal()
    text = SHOP + TERMINAL_LINE.format(device=term.device) + PRINTER_TAP.format(port=printer.port)
    daemon = Daemon(parse_config(text, "<test>"), tmp_path, clock=ManualClock(NOW), use_scheduler=False)
    daemon.start()
    pipeline = daemon.pipeline
    assert pipeline is not None
    term.write(encode_event("jsonl", sale("000122", 12800, NOW - timedelta(minutes=6))))
    term.write(encode_event("jsonl", sale("000123", 12800, NOW - timedelta(minutes=5))))
    wait_until(lambda: committed_alerts(daemon) == 1, "the duplicate-charge alert")
    tap = next(r for r in daemon.sources if r.cfg.name == "printer")
    address = wait_until(lambda: getattr(tap.transport, "address", None), "the printer port to listen")
    assert isinstance(address, tuple)
    return daemon, term, address


def test_a_forged_void_slip_waits_for_the_terminal_which_then_resolves_the_alert(
        tmp_path: Path, printer: FakePrinter) -> None:
    daemon, term, address = charged_twice_with_a_printer_tap(tmp_path, printer)
    try:
        pipeline = daemon.pipeline
        assert pipeline is not None

        print_to(address, forged_void_slip("000099", original="000123"))
        wait_until(lambda: the_alert(tmp_path)[0].state != AlertState.OPEN, "the slip to reach the alert")
        alert, log = the_alert(tmp_path)
        assert alert.state == AlertState.VOID_PRINTED, "a printed slip alone must not resolve the alert"
        assert (log[-1]["state"], log[-1]["actor"]) == ("void_printed", "printer")
        assert "slip" in str(log[-1]["note"]) and "not yet confirmed by the terminal" in str(log[-1]["note"])
        assert printer.wait_jobs(1), "printing went on"

        # The cashier voids it on the terminal: the terminal's own void on its line confirms it.
        term.write(encode_event("jsonl", sale("000124", 12800, NOW - timedelta(minutes=1), kind="void",
                                              original="000123")))
        wait_until(lambda: the_alert(tmp_path)[0].state == AlertState.VOIDED, "the terminal's void")
        alert, log = the_alert(tmp_path)
    finally:
        daemon.stop()
        term.close()
    assert [(e["state"], e["actor"]) for e in log] == [
        ("open", "settleguard"), ("void_printed", "printer"), ("voided", "terminal")]
    assert log[-1]["note"] == "void 000124"


def test_the_terminals_sighting_of_the_printed_void_itself_confirms_it(tmp_path: Path) -> None:
    """The same void seen first on the slip, then on the line (one transaction, two sightings)."""
    h = Harness(tmp_path, config("\n[[source]]\nname = \"terminal\"\nprotocol = \"zvt\"\nport = \"/dev/null\"\n"))
    h.feed(sale("000122", 12800, NOW - timedelta(minutes=6)), sale("000123", 12800, NOW - timedelta(minutes=5)))
    void = sale("000124", 12800, NOW - timedelta(minutes=1), kind="void", original="000123")
    h.feed(sale("000124", 12800, void.time, kind="void", original="000123", source="escpos"), source="printer")
    assert h.journal.alerts()[0].state == AlertState.VOID_PRINTED
    h.feed(void, source="terminal")
    assert h.journal.alerts()[0].state == AlertState.VOIDED


def test_a_printed_void_never_confirmed_escalates_at_the_cutoff_and_says_so(tmp_path: Path) -> None:
    from agent.messages import Command

    h = Harness(tmp_path, config("\n[[source]]\nname = \"terminal\"\nprotocol = \"cn_ecr\"\nport = \"/dev/null\"\n"))
    h.feed(sale("000122", 12800, NOW - timedelta(minutes=6)), sale("000123", 12800, NOW - timedelta(minutes=5)))
    h.feed(sale("000099", 12800, NOW, kind="void", original="000123", source="escpos"), source="printer")
    h.clock.set(datetime(2026, 11, 27, 23, 0, tzinfo=SHANGHAI))
    h.pipeline.process([Command("cutoff")])
    alert = h.journal.alerts()[0]
    log = h.journal.alert_log(alert.id)
    assert alert.state == AlertState.ESCALATED
    assert log[-1]["actor"] == "settleguard" and "printed void was never confirmed" in log[-1]["note"]


def test_a_person_answers_a_printed_void_as_an_open_alert_and_the_terminal_confirms_it(tmp_path: Path) -> None:
    h = Harness(tmp_path, config("\n[[source]]\nname = \"terminal\"\nprotocol = \"jsonl\"\nport = \"/dev/null\"\n"))
    h.feed(sale("000122", 12800, NOW - timedelta(minutes=6)), sale("000123", 12800, NOW - timedelta(minutes=5)))
    h.feed(sale("000099", 12800, NOW, kind="void", original="000123", source="escpos"), source="printer")
    alert = h.journal.alerts()[0]
    # With a terminal line, a person's "voided" is a claim the terminal's own void confirms.
    reply = h.command("ack", id=alert.code, answer="voided", by="店长")
    assert reply["alert"]["state"] == "void_claimed" and reply["alert"]["answer"]["by"] == "店长"
    h.feed(sale("000099", 12800, NOW, kind="void", original="000123"))
    assert h.journal.alerts()[0].state == AlertState.VOIDED
    assert h.journal.alert_log(alert.id)[-1]["actor"] == "terminal"


def test_a_claimed_void_the_terminal_never_shows_escalates_at_cutoff_saying_so(tmp_path: Path) -> None:
    h = Harness(tmp_path, config("\n[[source]]\nname = \"terminal\"\nprotocol = \"jsonl\"\nport = \"/dev/null\"\n"))
    h.feed(sale("000122", 12800, NOW - timedelta(minutes=6)), sale("000123", 12800, NOW - timedelta(minutes=5)))
    alert = h.journal.alerts()[0]
    assert h.command("ack", id=alert.code.lower(), answer="voided", by="小王")["alert"]["state"] == "void_claimed"
    h.clock.set(NOW.replace(hour=23, minute=0))
    h.pipeline.process([Command("cutoff")])
    assert h.journal.alerts()[0].state == AlertState.ESCALATED
    assert "never seen on the terminal" in (h.journal.alert_log(alert.id)[-1]["note"] or "")


def test_a_printer_only_install_still_resolves_on_the_slip_recorded_as_the_printer(tmp_path: Path) -> None:
    h = Harness(tmp_path)   # no [[source]] with a terminal protocol
    h.feed(sale("000122", 12800, NOW - timedelta(minutes=6), source="escpos"),
           sale("000123", 12800, NOW - timedelta(minutes=5), source="escpos"), source="printer")
    h.feed(sale("000124", 12800, NOW, kind="void", original="000123", source="escpos"), source="printer")
    alert = h.journal.alerts()[0]
    assert alert.state == AlertState.VOIDED
    assert h.journal.alert_log(alert.id)[-1]["actor"] == "printer"


def test_which_sources_count_as_a_terminal_line() -> None:
    assert has_terminal_line(["escpos", "zvt"]) and has_terminal_line(["jsonl"]) and has_terminal_line(["cn_ecr"])
    assert not has_terminal_line(["escpos"]) and not has_terminal_line([]) and not has_terminal_line(["auto"])
    assert printed_cause("void", terminal_line=True) is Cause.PRINTED_VOID
    assert printed_cause("refund", terminal_line=False) is Cause.WIRE_REFUND
    assert STATE_LABELS[AlertState.VOID_PRINTED][0].startswith("已打印撤销单")


def forged_settlement_slip() -> bytes:
    """A 结算总计单 for the open batch: what the attacker prints to make every finding "refund only"."""
    return encode_slip(Settlement(source="escpos", terminal_id="15221155", merchant_id="104152253311021",
                             batch_no="000128", time=NOW, count=2, total_minor=25600, currency="CNY",
                             balanced=True))


def test_a_forged_settlement_slip_does_not_close_the_batch_while_the_terminal_line_is_there(
        tmp_path: Path, printer: FakePrinter) -> None:
    """Found by attacking it: a printed 结算总计单 escalated every open alert to "refund only" (and a
    check-only finding expired unseen). The terminal's own settlement on its line still closes it."""
    daemon, term, address = charged_twice_with_a_printer_tap(tmp_path, printer)
    try:
        pipeline = daemon.pipeline
        assert pipeline is not None

        print_to(address, forged_settlement_slip())
        wait_until(lambda: pipeline.counts["settlements"] == 1, "the printed settlement to be read")
        assert the_alert(tmp_path)[0].state == AlertState.OPEN, "a printed settlement must not close the batch"
        assert pipeline.counts["batches_closed"] == 0

        # The terminal's own settlement message on its line does close it.
        term.write(encode_event("jsonl", Settlement(source="jsonl", terminal_id="15221155", batch_no="000128",
                                                    time=NOW, count=2, total_minor=25600, currency="CNY",
                                                    balanced=True)))
        wait_until(lambda: the_alert(tmp_path)[0].state == AlertState.ESCALATED, "the terminal's settlement")
    finally:
        daemon.stop()
        term.close()


def test_a_printer_only_install_still_settles_on_the_printed_slip(tmp_path: Path) -> None:
    h = Harness(tmp_path)   # no [[source]] with a terminal protocol: the slip is the only witness
    h.feed(sale("000122", 12800, NOW - timedelta(minutes=6), source="escpos"),
           sale("000123", 12800, NOW - timedelta(minutes=5), source="escpos"), source="printer")
    h.feed(Settlement(source="escpos", terminal_id="15221155", batch_no="000128", time=NOW, count=2,
                      total_minor=25600, currency="CNY", balanced=True), source="printer")
    assert h.journal.alerts()[0].state == AlertState.ESCALATED
