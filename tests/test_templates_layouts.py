"""Templates tolerant by construction (issue 18): layouts that vary read the same, and a slip seen but not
understood says so instead of vanishing."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drivers.events import Order, ReceiptText, Settlement, Tender, Transaction
from drivers.receipts import load_templates, normalise
from drivers.receipts.extract import read_receipt
from tests.templates_support import (
    LAYOUTS,
    RECEIVED,
    SHANGHAI,
    decode_lines,
    read_events,
    variation,
)

# The issue's own example, written from scratch (not from the shared test data): a GBK 签购单 with the
# amount as a currency code and a colon on the line after its label, a full-width colon after one label,
# the entry-mode letter after a space, values alone on the next line.
ISSUE_SLIP = [
    "            POS签购单",
    "        商户存根 MERCHANT COPY",
    "商户名称:川味小馆",
    "商户编号: 104152253311021",
    "终端编号：",
    "   63000123",
    "操作员号: 01",
    "卡号:",
    "   621700******2580 C",
    "交易类型: 消费",
    "批次号: 000417",
    "凭证号:",
    "   002391",
    "参考号: 331212345678",
    "日期/时间: 2026/11/27 13:45:09",
    "金额:",
    "   RMB:86.50",
    "持卡人签名:",
]


def test_the_issues_gbk_slip_with_ordinary_variations_yields_its_transaction() -> None:
    events = decode_lines(ISSUE_SLIP, encoding="gbk")
    sales = [e for e in events if isinstance(e, Transaction)]
    assert len(sales) == 1, events
    sale = sales[0]
    assert (sale.kind, sale.amount_minor, sale.currency) == ("sale", 8650, "CNY")
    assert (sale.merchant_id, sale.terminal_id, sale.batch_no, sale.voucher_no, sale.rrn) == (
        "104152253311021", "63000123", "000417", "002391", "331212345678")
    assert sale.entry_mode == "chip"
    assert sale.card == "621700******2580"
    assert sale.time == datetime(2026, 11, 27, 13, 45, 9, tzinfo=SHANGHAI)
    receipt = next(e for e in events if isinstance(e, ReceiptText))
    assert receipt.unread is None


def test_normalise_makes_printer_habits_the_same_line() -> None:
    assert normalise("金额：ＲＭＢ：１，２８０．００") == "金额:RMB 1,280.00"
    assert normalise("  卡号（CARD NO）：  6225   76** ") == "卡号(CARD NO): 6225 76**"
    assert normalise("AGENCY: 12") == "AGENCY: 12"           # a colon after a word ending in "CY" stays
    assert normalise("金额:￥: 12.00") == "金额:¥ 12.00"


def _same(layout: str, varied: list[str]) -> None:
    expected = read_events(decode_lines(LAYOUTS[layout]))
    assert expected, f"the bundled template reads nothing from the {layout} layout itself"
    got = read_events(decode_lines(varied))
    assert got == expected, "\n".join(varied)


PROPERTY = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(st.data())
def test_unionpay_sale_variations_yield_the_same_transaction(data: st.DataObject) -> None:
    _same("unionpay_sale", data.draw(variation(LAYOUTS["unionpay_sale"])))


@PROPERTY
@given(st.data())
def test_unionpay_void_variations_yield_the_same_transaction(data: st.DataObject) -> None:
    _same("unionpay_void", data.draw(variation(LAYOUTS["unionpay_void"])))


@PROPERTY
@given(st.data())
def test_settlement_variations_yield_the_same_totals(data: st.DataObject) -> None:
    _same("unionpay_settlement", data.draw(variation(LAYOUTS["unionpay_settlement"])))


@PROPERTY
@given(st.data())
def test_qr_payment_variations_yield_the_same_transaction(data: st.DataObject) -> None:
    _same("qr_payment", data.draw(variation(LAYOUTS["qr_payment"])))


@PROPERTY
@given(st.data())
def test_sales_receipt_variations_yield_the_same_order(data: st.DataObject) -> None:
    _same("cn_sales_receipt", data.draw(variation(LAYOUTS["cn_sales_receipt"])))


def test_the_layouts_give_the_events_they_print() -> None:
    """The property tests compare against these, so these must be right themselves."""
    sale = read_events(decode_lines(LAYOUTS["unionpay_sale"]))
    assert [type(e) for e in sale] == [Transaction]
    assert isinstance(sale[0], Transaction) and sale[0].amount_minor == 128000 and sale[0].entry_mode == "chip"
    (settlement,) = read_events(decode_lines(LAYOUTS["unionpay_settlement"]))
    assert isinstance(settlement, Settlement) and (settlement.count, settlement.total_minor) == (12, 345600)
    (order,) = read_events(decode_lines(LAYOUTS["cn_sales_receipt"]))
    assert isinstance(order, Order)
    assert (order.order_no, order.total_minor) == ("202611270042", 1780)
    assert order.tenders == (Tender(method="cash", amount_minor=1780, hint="现金"),)
    assert order.time == datetime(2026, 11, 27, 14, 2, 55, tzinfo=SHANGHAI)


# ---------------------------------------------------------------------- seen but not understood

def test_a_slip_of_an_unknown_layout_is_marked_no_template() -> None:
    unknown = ["   SHOP PAYMENT NOTE", "CARD 6225 76** **** 6691", "REF 000123456789", "PAID 86.50"]
    events = decode_lines(unknown)
    assert [type(e) for e in events] == [ReceiptText]
    receipt = events[0]
    assert isinstance(receipt, ReceiptText)
    assert (receipt.unread, receipt.unread_template, receipt.unread_field) == ("no_template", None, None)


def test_a_slip_missing_its_amount_is_marked_missing_field_with_template_and_field() -> None:
    slip = [line for line in LAYOUTS["unionpay_sale"] if not line.startswith("金额")]
    events = decode_lines(slip)
    assert [type(e) for e in events] == [ReceiptText]
    receipt = events[0]
    assert isinstance(receipt, ReceiptText)
    assert (receipt.unread, receipt.unread_template, receipt.unread_field) == ("missing_field", "unionpay",
                                                                              "amount")


def test_one_unreadable_slip_among_readable_copies_is_not_dropped_silently() -> None:
    broken = [line for line in LAYOUTS["unionpay_sale"] if not line.startswith("交易类型")]
    receipt = ReceiptText(source="escpos", time=RECEIVED, lines=(*LAYOUTS["unionpay_sale"], *broken))
    events, marked = read_receipt(receipt, load_templates(), tz=SHANGHAI)
    assert len(events) == 1
    assert (marked.unread, marked.unread_template, marked.unread_field) == ("missing_field", "unionpay", "kind")


def test_a_receipt_that_is_no_sale_is_not_marked() -> None:
    ticket = ["厨房单", "桌号: 12", "宫保鸡丁 x1", "米饭 x2", "备注: 少辣"]
    events = decode_lines(ticket)
    receipt = events[0]
    assert isinstance(receipt, ReceiptText) and receipt.unread is None


def test_unread_receipts_are_counted_by_the_decoder() -> None:
    from drivers.protocols.escpos import EscposEventDecoder, encode_text_receipt

    decoder = EscposEventDecoder(tz=SHANGHAI)
    slip = [line for line in LAYOUTS["unionpay_sale"] if not line.startswith("金额")]
    decoder.feed(encode_text_receipt(slip) + encode_text_receipt(["NOTE", "CARD 622576******6691", "86.50"]),
                 RECEIVED)
    assert decoder.stats.counters["unread_missing_field"] == 1
    assert decoder.stats.counters["unread_no_template"] == 1


def test_printed_slips_of_an_unknown_layout_reach_doctor_and_the_installer(tmp_path: Path) -> None:
    """The decoder's verdict end to end: ESC/POS bytes of a layout no template reads, through the decoder,
    the real pipeline and journal, to doctor's check and the installer's one notice (agent/watch/unread.py)."""
    from agent.service.doctor import failed, run_checks
    from tests.test_unread import device_rows, harness

    h = harness(tmp_path)
    odd = ["   SHOP PAYMENT NOTE", "CARD 6225 76** **** 6691", "REF 000123456789", "PAID 86.50"]
    no_amount = [line for line in LAYOUTS["unionpay_sale"] if not line.startswith("金额")]
    for lines in (odd, odd, no_amount):
        h.clock.advance(600)
        events = decode_lines(lines)
        h.feed(*[replace(e, source="printer") for e in events], source="printer")
    rows = device_rows(tmp_path)
    assert [(r["reason"], r["template"], r["field"]) for r in rows] == [
        ("no_template", None, None), ("missing_field", "unionpay", "amount")]
    named = {c.name: c for c in failed(run_checks(tmp_path / "settleguard.toml", tmp_path, clock=h.clock))}
    assert "2 slip(s) from printer" in named["receipt layout"].detail
    assert "SHOP PAYMENT NOTE" in named["receipt layout"].detail
    assert "amount" in named["template unionpay"].detail
