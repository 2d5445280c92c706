"""Know instead of guess (issue 17): the till's orders matched against the terminal's charges.

The order event (JSON, the boundary, the jsonl decoder, ``decode``), orders read from a printed 小票
(GBK / GB18030 ESC/POS through the escpos decoder), and the MATCH rules on a pipeline with a real
SQLite journal and a ManualClock; then the daemon itself with a JSON-lines terminal on a pty and the
till's printer behind the TCP pass-through.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from agent.config import parse_config
from agent.pipeline import Pipeline
from agent.service.daemon import Daemon
from agent.sim.terminal import PtyTerminal, encode_event
from agent.store.journal import Journal
from agent.store.orders import OrderStore
from drivers.boundary import admit
from drivers.clock import ManualClock
from drivers.events import EventError, Order, Tender, event_from_json, event_to_json
from drivers.pan import contains_full_pan
from drivers.protocols import build_decoder
from drivers.protocols.escpos import encode_text_receipt
from tests.helpers import BASE_CONFIG, SHANGHAI, Harness, committed_alerts, config, sale, wait_until
from tests.test_forged_void import print_to
from tests.test_transport_tcp import FakePrinter

NOW = datetime(2026, 11, 27, 14, 30, tzinfo=SHANGHAI)
TILL = """
[[source]]
name = "terminal"
protocol = "jsonl"
port = "/dev/null"

[[source]]
name = "till"
protocol = "jsonl"
port = "/dev/null"

[match]
sources = ["till"]
window = "5m"
grace = "2m"
"""


def order(no: str, at: datetime, *tenders: tuple[str, int], total: int | None = None) -> Order:
    parts = tuple(Tender(method=m, amount_minor=a) for m, a in tenders)
    return Order(source="jsonl", time=at, total_minor=total if total is not None else sum(a for _, a in tenders),
                 order_no=no, currency="CNY", tenders=parts)


def receipt(no: str, when: str, *tail: str) -> list[str]:
    return ["      好运来便利店", f"单号: {no}", f"日期: {when}", "收银员: 01", "-" * 26,
            "品名        数量    金额", "可乐         2      7.00", "薯片         1     61.00", "-" * 26, *tail,
            "谢谢惠顾，欢迎再来"]


def till(tmp: Path, extra: str = "") -> Harness:
    return Harness(tmp, config(TILL + extra), start=NOW - timedelta(minutes=30))


def after_grace(h: Harness, minutes: float = 2.5) -> None:
    h.clock.advance(timedelta(minutes=minutes))
    h.command("tick")


def verdicts(h: Harness) -> dict[str, str]:
    rows = h.journal.conn.execute("SELECT txn_key, outcome FROM order_matches").fetchall()
    return {r[0]: r[1] for r in rows}


# -- the event ------------------------------------------------------------------------------------
def test_the_order_event_round_trips_in_schema_order_and_refuses_what_is_not_an_order() -> None:
    o = order("A1024", NOW, ("card", 5000), ("qr", 1800))
    line = event_to_json(o)
    assert list(json.loads(line)) == ["type", "source", "order_no", "time", "total_minor", "currency", "tenders"]
    assert json.loads(line)["tenders"][0] == {"method": "card", "amount_minor": 5000, "hint": None}
    assert event_from_json(line) == o
    bad = {"type": "order", "source": "till", "order_no": "A1", "time": None, "total_minor": 6800,
           "currency": "CNY", "tenders": [{"method": "cheque", "amount_minor": 6800}]}
    with pytest.raises(EventError, match="method must be one of card, qr, cash, other"):
        event_from_json(json.dumps(bad))
    bad["tenders"] = [{"method": "card", "amount_minor": 68.0}]
    with pytest.raises(EventError, match="amount_minor must be an integer"):
        event_from_json(json.dumps(bad))


def test_the_boundary_masks_card_hints_and_refuses_amounts_out_of_range() -> None:
    o = Order(source="till", time=NOW, total_minor=6800, order_no="A1",
              tenders=(Tender("card", 6800, "银行卡 6225 7600 1234 5678"), Tender("qr", 0, "微信")))
    clean, why = admit(o, "till")
    assert why is None and isinstance(clean, Order)
    assert clean.tenders[0].hint == "银行卡 622576******5678"   # not Luhn-valid, masked all the same
    assert not contains_full_pan(event_to_json(clean))
    _, why = admit(Order(source="till", time=NOW, total_minor=10**13), "till")
    assert why is not None and "total_minor" in why.reason
    _, why = admit(Order(source="till", time=NOW, total_minor=1, tenders=(Tender("card", -5),)), "till")
    assert why is not None and "tenders[0].amount_minor" in why.reason


def test_the_jsonl_decoder_accepts_order_lines_and_decode_shows_them(tmp_path: Path) -> None:
    line = ('{"type": "order", "source": "till", "order_no": "A1024", "time": "2026-11-27T14:25:00+08:00", '
            '"total_minor": 6800, "tenders": [{"method": "card", "amount_minor": 6800, '
            '"hint": "6225760012346691"}]}\n')
    (events, ) = [build_decoder("jsonl", tz=SHANGHAI).feed(line.encode())]
    assert len(events) == 1 and isinstance(events[0], Order) and events[0].tenders[0].hint == "622576******6691"
    capture = tmp_path / "till.jsonl"
    capture.write_text(line)
    shown = subprocess.run([sys.executable, "-m", "agent.cli", "decode", "--protocol", "jsonl", str(capture)],
                           capture_output=True, text=True, check=True).stdout.splitlines()
    assert [json.loads(x)["type"] for x in shown] == ["order"] and "6225760012346691" not in shown[0]


# -- the printed 小票 --------------------------------------------------------------------------------
def decode_receipt(lines: list[str], encoding: str) -> list[Order]:
    decoder = build_decoder("escpos", tz=SHANGHAI)
    events = decoder.feed(encode_text_receipt(lines, encoding=encoding), NOW) + decoder.flush(NOW)
    assert not decoder.take_rejected()
    return [e for e in events if isinstance(e, Order)]


def test_a_cash_receipt_in_gbk_is_one_cash_tender_net_of_change() -> None:
    (o,) = decode_receipt(receipt("A1024", "2026-11-27 14:25:33", "合计: 2件 68.00", "应收: 68.00", "实收: 100.00",
                                  "找零: -32.00", "支付方式: 现金"), "gbk")
    assert (o.order_no, o.total_minor, o.time) == ("A1024", 6800, datetime(2026, 11, 27, 14, 25, 33,
                                                                             tzinfo=SHANGHAI))
    assert o.tenders == (Tender("cash", 6800, "现金"),)


def test_split_tenders_in_gb18030_each_become_a_tender_and_the_due_amount_wins_over_the_total() -> None:
    (o,) = decode_receipt(receipt("B77", "11-27 14:26", "合计: 90.00", "优惠: 4.00", "应收: 86.00",
                                  "银行卡(尾号6691): 50.00", "微信支付 ￥36.00", "实收: 86.00"), "gb18030")
    assert o.total_minor == 8600
    assert o.tenders == (Tender("card", 5000, "银行卡(尾号6691)"), Tender("qr", 3600, "微信支付"))


def test_decode_shows_the_order_a_printed_receipt_records(tmp_path: Path) -> None:
    capture = tmp_path / "till.bin"
    capture.write_bytes(encode_text_receipt(receipt("A1024", "2026-11-27 14:25:33", "合计: 68.00",
                                                    "银行卡: 68.00"), encoding="gbk"))
    shown = subprocess.run([sys.executable, "-m", "agent.cli", "decode", "--protocol", "escpos", "--tz",
                            "Asia/Shanghai", str(capture)], capture_output=True, text=True, check=True).stdout
    (line,) = shown.splitlines()
    assert json.loads(line) == {"type": "order", "source": "escpos", "order_no": "A1024",
                                "time": "2026-11-27T14:25:33+08:00", "total_minor": 6800, "currency": "CNY",
                                "tenders": [{"method": "card", "amount_minor": 6800, "hint": "银行卡"}]}


def test_a_terminal_slip_is_still_a_transaction_not_an_order() -> None:
    from agent.sim.wire_escpos import slip_lines

    decoder = build_decoder("escpos", tz=SHANGHAI)
    events = decoder.feed(encode_text_receipt(slip_lines(sale("000123", 6800, NOW, source="escpos"))), NOW)
    assert [e.type for e in events] == ["receipt", "transaction"]


# -- the rules ----------------------------------------------------------------------------------------
def test_a_matched_sale_raises_nothing_whichever_prints_first(tmp_path: Path) -> None:
    h = till(tmp_path)
    h.feed(order("A1", NOW - timedelta(minutes=1), ("card", 6800)), source="till")
    h.feed(sale("000001", 6800, NOW, card="436742******0001"))
    h.feed(sale("000002", 8600, NOW + timedelta(minutes=1), card="436742******0002"))   # the receipt after
    h.feed(order("A2", NOW + timedelta(minutes=1, seconds=30), ("card", 8600)), source="till")
    h.feed(order("A3", NOW + timedelta(minutes=2), ("card", 5000), ("qr", 3600), ("cash", 1400)), source="till")
    h.feed(sale("000003", 3600, NOW + timedelta(minutes=2, seconds=30), card="436742******0003"))  # split
    h.feed(sale("000004", 5000, NOW + timedelta(minutes=3), card="436742******0004"))
    after_grace(h, 10)
    assert h.opened() == []
    assert sorted(verdicts(h).values()) == ["match"] * 4
    orders = {o.id: o.order.order_no for o in OrderStore(h.journal.conn).recent(NOW - timedelta(hours=1))}
    rows = h.journal.conn.execute("SELECT txn_key, order_id, tender FROM order_matches").fetchall()
    assert {r[0][-6:]: (orders[r[1]], r[2]) for r in rows} == {
        "000001": ("A1", 0), "000002": ("A2", 0), "000003": ("A3", 1), "000004": ("A3", 0)}
    assert h.pipeline.counts["orders"] == 3


def test_match_001_a_68_sale_charged_680_says_void_and_charge_68(tmp_path: Path) -> None:
    h = till(tmp_path)
    h.feed(order("A1024", NOW - timedelta(seconds=40), ("card", 6800)), source="till")
    h.feed(sale("000123", 68000, NOW))
    assert h.opened() == [], "waits the grace: the right charge may still come"
    after_grace(h)
    (change,) = h.opened()
    alert = change.alert
    assert (alert.rule, alert.certainty, alert.suggestion.action) == ("MATCH-001", "error", "void")
    assert alert.evidence["intended_minor"] == 6800 and alert.evidence["charged_minor"] == 68000
    assert "请撤销后重新收取 RMB 68.00" in alert.reason_zh and "A1024" in alert.reason_zh
    assert alert.suggestion.voucher_no == "000123"
    # Voided and charged again correctly: the corrected charge pays the sale, nothing more is raised.
    h.feed(sale("000124", 68000, NOW + timedelta(minutes=3), kind="void", original="000123"))
    h.feed(sale("000125", 6800, NOW + timedelta(minutes=4)))
    after_grace(h)
    assert [c.alert.rule for c in h.opened()] == ["MATCH-001"]
    assert h.journal.alerts()[0].state == "voided"
    assert verdicts(h)["v:15221155:000128:000125"] == "match"


def test_match_001_sees_a_typo_no_power_of_ten_rule_sees(tmp_path: Path) -> None:
    h = till(tmp_path)
    h.feed(sale("000200", 8600, NOW))                                      # 86.00 for a 68.00 sale
    h.feed(order("A1025", NOW + timedelta(seconds=20), ("card", 6800)), source="till")
    after_grace(h)
    (change,) = h.opened()
    assert change.alert.rule == "MATCH-001" and change.alert.evidence["intended_minor"] == 6800


def test_match_002_a_second_charge_for_one_sale_whatever_the_gap(tmp_path: Path) -> None:
    h = till(tmp_path)
    h.feed(order("A1", NOW, ("card", 12800)), source="till")
    h.feed(sale("000001", 12800, NOW + timedelta(seconds=30)))
    # 25 minutes later, on another card: no duplicate rule's window or card test reaches it.
    h.feed(sale("000002", 12800, NOW + timedelta(minutes=25), card="436742******1234"))
    after_grace(h)
    (change,) = h.opened()
    alert = change.alert
    assert (alert.rule, alert.certainty, alert.suggestion.voucher_no) == ("MATCH-002", "error", "000002")
    assert [t.voucher_no for t in alert.transactions] == ["000001", "000002"]


def test_match_002_speaks_instead_of_dup_001_for_an_exact_duplicate(tmp_path: Path) -> None:
    h = till(tmp_path)
    h.feed(order("A1", NOW, ("card", 12800)), source="till")
    h.feed(sale("000001", 12800, NOW + timedelta(seconds=30)), sale("000002", 12800, NOW + timedelta(seconds=50)))
    assert h.opened() == [], "DUP-001 is held while the charge waits for a sale"
    after_grace(h)
    (change,) = h.opened()
    assert change.alert.rule == "MATCH-002" and change.alert.evidence["also_matched"] == ["DUP-001"]


def test_two_sales_of_one_amount_on_one_card_are_no_duplicate(tmp_path: Path) -> None:
    h = till(tmp_path)
    h.feed(order("A1", NOW, ("card", 12800)), order("A2", NOW + timedelta(minutes=1), ("card", 12800)), source="till")
    h.feed(sale("000001", 12800, NOW + timedelta(seconds=30)), sale("000002", 12800, NOW + timedelta(minutes=1)))
    after_grace(h)
    assert h.opened() == []
    # The same charges without the till: DUP-001, as today.
    (tmp_path / "standalone").mkdir()
    standalone = Harness(tmp_path / "standalone", start=NOW - timedelta(minutes=30))
    standalone.feed(sale("000001", 12800, NOW + timedelta(seconds=30)),
                    sale("000002", 12800, NOW + timedelta(minutes=1)))
    assert [c.alert.rule for c in standalone.opened()] == ["DUP-001"]


def test_match_003_a_charge_with_no_sale_counts_only_after_the_grace(tmp_path: Path) -> None:
    h = till(tmp_path)
    h.feed(order("A1", NOW, ("cash", 6800)), source="till")               # cash: nothing to match
    h.feed(sale("000300", 6800, NOW + timedelta(seconds=10)))
    after_grace(h, 1.5)
    assert h.opened() == []
    after_grace(h, 1)
    (change,) = h.opened()
    assert (change.alert.rule, change.alert.certainty, change.alert.suggestion.action) == ("MATCH-003", "verify",
                                                                                          "check")
    assert verdicts(h) == {"v:15221155:000128:000300": "no_sale"}


def test_matching_survives_a_restart(tmp_path: Path) -> None:
    h = till(tmp_path)
    h.feed(order("A1", NOW, ("card", 6800)), source="till")
    h.feed(sale("000001", 6800, NOW + timedelta(seconds=10)))
    h.feed(sale("000002", 6800, NOW + timedelta(seconds=40)))            # waiting when the till restarts
    again = Pipeline(config(TILL), Journal(tmp_path / "settleguard.sqlite3"), clock=h.clock, channels=("hook",))
    h.clock.advance(timedelta(minutes=3))
    from agent.messages import Command
    again.process([Command("tick")])
    (alert,) = again.journal.alerts()
    assert alert.rule == "MATCH-002"


def test_a_matched_banquet_raises_no_amount_alert_which_it_would_without_the_till(tmp_path: Path) -> None:
    def history(h: Harness) -> None:
        for i in range(40):
            h.feed(sale(f"{i:06d}", 5000 + 100 * (i % 30), NOW - timedelta(days=1, minutes=300 - 5 * i),
                        card=f"436742******{i:04d}"))
        h.command("baseline")
        h.changes.clear()

    (tmp_path / "a").mkdir()
    without = Harness(tmp_path / "a", start=NOW - timedelta(days=2))
    history(without)
    without.feed(sale("000900", 328000, NOW))
    assert [c.alert.rule[:3] for c in without.opened()] == ["AMT"], "the control: a statistical alert"

    (tmp_path / "b").mkdir()
    with_till = Harness(tmp_path / "b", config(TILL), start=NOW - timedelta(days=2))
    history(with_till)
    after_grace(with_till)
    with_till.changes.clear()    # the history had no sales on the till (MATCH-003s): not this test's point
    with_till.feed(order("B9", NOW - timedelta(minutes=2), ("card", 328000)), source="till")
    with_till.feed(sale("000900", 328000, NOW))
    after_grace(with_till)
    assert with_till.opened() == []


def test_a_till_without_match_sources_behaves_as_before(tmp_path: Path) -> None:
    h = Harness(tmp_path, config(TILL.split("[match]")[0]), start=NOW - timedelta(minutes=30))
    h.feed(order("A1", NOW, ("card", 6800)), source="till")
    h.feed(sale("000001", 68000, NOW + timedelta(seconds=10)))
    after_grace(h, 60)
    assert h.opened() == [] and verdicts(h) == {}
    assert OrderStore(h.journal.conn).count() == 1, "the order is journalled all the same"


def test_match_sources_must_name_a_source() -> None:
    from agent.config import ConfigError

    with pytest.raises(ConfigError, match="no \\[\\[source\\]\\] is named 'till'"):
        parse_config(BASE_CONFIG + '\n[match]\nsources = ["till"]\n', "<test>")


# -- real parts: the printed 小票 through the printer pass-through, the charge on a pty ---------------------
@pytest.fixture
def printer() -> Iterator[FakePrinter]:
    p = FakePrinter()
    yield p
    p.close()


def test_a_printed_receipt_through_the_pass_through_is_matched_to_the_charge_on_the_terminal_line(
        tmp_path: Path, printer: FakePrinter) -> None:
    term = PtyTerminal()
    text = (BASE_CONFIG + f'\n[[source]]\nname = "terminal"\nprotocol = "jsonl"\nport = "{term.device}"\n'
            f'\n[[source]]\nname = "till"\nprotocol = "escpos"\nlisten = "127.0.0.1:0"\n'
            f'forward = "127.0.0.1:{printer.port}"\n\n[match]\nsources = ["till"]\ngrace = "2m"\n')
    clock = ManualClock(NOW)
    daemon = Daemon(parse_config(text, "<test>"), tmp_path, clock=clock, use_scheduler=False)
    daemon.start()
    try:
        pipeline = daemon.pipeline
        assert pipeline is not None
        tap = next(r for r in daemon.sources if r.cfg.name == "till")
        address = wait_until(lambda: getattr(tap.transport, "address", None), "the printer port to listen")
        assert isinstance(address, tuple)
        job = encode_text_receipt(receipt("A1024", "2026-11-27 14:29:40", "合计: 68.00", "银行卡: 68.00",
                                          "实收: 68.00"), encoding="gbk")
        print_to(address, job)
        wait_until(lambda: pipeline.counts["orders"] == 1, "the 小票 read as an order")
        assert printer.wait_jobs(1) and printer.jobs[0] == job, "the printer got the job byte for byte"
        term.write(encode_event("jsonl", sale("000123", 6800, NOW)))
        term.write(encode_event("jsonl", sale("000124", 68000, NOW + timedelta(seconds=20))))
        wait_until(lambda: pipeline.counts["new_transactions"] == 2, "both charges")
        clock.advance(timedelta(minutes=3))      # the idle pipeline judges the waiting charge on its own
        wait_until(lambda: committed_alerts(daemon) == 1, "the charge with no sale")
    finally:
        daemon.stop()
        term.close()
    j = Journal(tmp_path / "settleguard.sqlite3")
    try:
        (alert,) = j.alerts()
        got = dict(j.conn.execute("SELECT txn_key, outcome FROM order_matches").fetchall())
        (stored,) = OrderStore(j.conn).recent(NOW - timedelta(hours=1))
    finally:
        j.close()
    assert got["v:15221155:000128:000123"] == "match"
    assert alert.rule == "MATCH-003" and alert.suggestion is not None and alert.suggestion.voucher_no == "000124"
    assert stored.order.tenders == (Tender("card", 6800, "银行卡"),) and stored.source == "till"
