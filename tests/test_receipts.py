"""Receipt templates: printed slips -> Transaction / Settlement events (drivers/receipts)."""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from escpos.printer import Dummy
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.events import Event, ReceiptText, Settlement, Transaction, event_to_json
from drivers.pan import contains_full_pan
from drivers.protocols.escpos import EscposEventDecoder, encode_text_receipt
from drivers.receipts import TemplateError, load_template, load_templates, lookup, parse_printed_amount
from tests.templates_support import QR_RECEIPT

SHANGHAI = ZoneInfo("Asia/Shanghai")
RECEIVED = datetime(2026, 11, 27, 14, 5, tzinfo=SHANGHAI)
CLEAR_PAN = "6225761234566696"          # Luhn-valid: a real card number as far as anyone can tell

SALE = Transaction(
    source="escpos", kind="sale", result="approved", amount_minor=128000,
    time=datetime(2026, 11, 27, 14, 3, 11, tzinfo=SHANGHAI), terminal_id="15221155",
    merchant_id="104152253311021", batch_no="000001", voucher_no="000123", rrn="925498334778",
    auth_code="123456", currency="CNY", card="622576******6691", card_type="UnionPay",
    entry_mode="chip", operator="01",
)


def bilingual_slip(copy: str = "商户存根 MERCHANT COPY", *, reprint: bool = False) -> list[str]:
    """Labels in Chinese and English, values on the same line."""
    lines = [
        "          银联POS签购单",
        "商户名称(MERCHANT NAME):好味道餐饮 静安店",
        "商户编号(MERCHANT NO.):104152253311021",
        "终端编号(TERMINAL NO.):15221155 操作员号(OPERATOR NO.):01",
        "--------------------------------",
        "卡号(CARD NO.):622576******6691 /C",
        "交易类型(TRANS TYPE):消费/SALE",
        "批次号(BATCH NO.):000001  凭证号(VOUCHER NO.):000123",
        "授权码(AUTH NO.):123456",
        "参考号(REFER NO.):925498334778",
        "日期/时间(DATE/TIME):2026/11/27 14:03:11",
        "金额(AMOUNT):RMB 1,280.00",
        "--------------------------------",
        "持卡人签名(CARDHOLDER SIGNATURE):",
        "",
        "本人确认以上交易，同意将其记入本卡账户",
        f"        {copy}",
    ]
    if reprint:
        lines.insert(1, "       ***重打印 REPRINT***")
    return lines


def chinese_next_line_slip() -> list[str]:
    """Chinese-only labels, full-width colons, values alone on the next line, year-less date."""
    return [
        "POS签购单",
        "持卡人存根",
        "商户名称：",
        "  好味道餐饮 静安店",
        "商户编号：",
        "  104152253311021",
        "终端编号：",
        "  15221155",
        "操作员号：",
        "  01",
        "卡号：",
        "  6225 76** **** 6691 (插卡)",
        "交易类型：",
        "  消费",
        "批次号：",
        "  000001",
        "凭证号：",
        "  000123",
        "授权码：",
        "  123456",
        "参考号：",
        "  925498334778",
        "日期/时间：",
        "  11/27 14:03:11",
        "金额：",
        "  RMB 1,280.00",
    ]


def void_slip() -> list[str]:
    return [
        "POS签购单",
        "商户编号(MERCHANT NO.)：104152253311021",
        "终端编号(TERMINAL NO.)：15221155",
        "卡号(CARD NO.)：622576******6691/S",
        "交易类型(TRANS TYPE)：撤销/VOID",
        "批次号(BATCH NO.)：000001",
        "凭证号(VOUCHER NO.)：000124",
        "原凭证号：000123",
        "日期(DATE)：2026/11/27  时间(TIME)：14:20:05",
        "金额(AMOUNT)：RMB -1,280.00",
    ]


def settlement_slip(balanced: str = "对账平") -> list[str]:
    return [
        "          结算总计单",
        "       SETTLEMENT TOTAL",
        "商户编号：104152253311021",
        "终端编号：15221155",
        "批次号：000001",
        "日期/时间：2026/11/27 23:00:05",
        "--------------------------------",
        "类型/TYPE    笔数/SUM   金额/AMOUNT",
        f"内卡 {balanced}",
        "消费/SALE        12      3,456.00",
        "退货/REFUND       1        100.00",
        "外卡 对账平",
        "消费/SALE         2        500.00",
        "退货/REFUND       0          0.00",
    ]


def wechat_receipt() -> list[str]:
    return list(QR_RECEIPT)   # one WeChat Pay slip for the receipt and the template-layout tests


def run(*receipts: list[str], **options: object) -> tuple[list[Event], EscposEventDecoder]:
    decoder = EscposEventDecoder(tz=SHANGHAI, **options)  # type: ignore[arg-type]
    data = b"".join(encode_text_receipt(lines) for lines in receipts)
    return decoder.feed(data, RECEIVED) + decoder.flush(RECEIVED), decoder


def transactions(events: list[Event]) -> list[Transaction]:
    return [e for e in events if isinstance(e, Transaction)]


# ---------------------------------------------------------------------- sales slips

def test_bilingual_same_line_slip_yields_the_sale() -> None:
    events, decoder = run(bilingual_slip())
    assert isinstance(events[0], ReceiptText)
    assert events[0].terminal_id == "15221155"
    assert events[1:] == [SALE]
    assert decoder.stats.counters["matched_receipts"] == 1


def test_chinese_only_next_line_full_width_colon_slip_yields_the_same_sale() -> None:
    events, _ = run(chinese_next_line_slip())
    # year-less date placed by the receive time, card normalised from "6225 76** **** 6691"
    assert transactions(events) == [SALE]


def test_year_less_date_without_a_receive_time_uses_reference_or_stays_unknown() -> None:
    data = encode_text_receipt(chinese_next_line_slip())
    bare = EscposEventDecoder(tz=SHANGHAI)
    [_, txn] = bare.feed(data)
    assert isinstance(txn, Transaction) and txn.time is None
    referenced = EscposEventDecoder(tz=SHANGHAI, reference=datetime(2027, 1, 2, tzinfo=SHANGHAI))
    [_, txn] = referenced.feed(data)
    assert isinstance(txn, Transaction) and txn.time == datetime(2026, 11, 27, 14, 3, 11, tzinfo=SHANGHAI)


def test_all_three_copies_and_a_reprint_are_the_same_transaction() -> None:
    copies = [bilingual_slip("商户存根 MERCHANT COPY"), bilingual_slip("银行存根 BANK COPY"),
              bilingual_slip("持卡人存根 CARDHOLDER COPY"), bilingual_slip(reprint=True)]
    events, _ = run(*copies)
    txns = transactions(events)
    assert len(txns) == 4
    assert all(t == SALE for t in txns)
    assert len({(t.terminal_id, t.batch_no, t.voucher_no) for t in txns}) == 1


def test_three_copies_printed_without_a_cut_are_three_sightings() -> None:
    one_receipt = bilingual_slip("商户存根") + bilingual_slip("银行存根") + bilingual_slip("持卡人存根")
    events, _ = run(one_receipt)
    assert isinstance(events[0], ReceiptText)
    assert transactions(events) == [SALE, SALE, SALE]


def test_void_slip_keeps_a_positive_amount_and_the_original_voucher() -> None:
    [txn] = transactions(run(void_slip())[0])
    assert txn.kind == "void"
    assert txn.amount_minor == 128000
    assert txn.voucher_no == "000124"
    assert txn.original_voucher_no == "000123"
    assert txn.entry_mode == "swipe"
    assert txn.time == datetime(2026, 11, 27, 14, 20, 5, tzinfo=SHANGHAI)   # separate date and time labels


@pytest.mark.parametrize(("printed", "kind"), [
    ("消费", "sale"), ("撤销", "void"), ("退货/REFUND", "refund"), ("预授权/PRE-AUTH", "preauth"),
    ("预授权完成/AUTH COMPLETE", "preauth_complete"), ("预授权撤销/PRE-AUTH VOID", "void"), ("SALE", "sale"),
])
def test_transaction_type_words_map_to_kinds(printed: str, kind: str) -> None:
    lines = [line if not line.startswith("交易类型") else f"交易类型(TRANS TYPE):{printed}"
             for line in bilingual_slip()]
    [txn] = transactions(run(lines)[0])
    assert txn.kind == kind


def test_a_clear_pan_on_a_slip_is_masked_in_the_lines_and_the_event() -> None:
    lines = [f"卡号(CARD NO.):{CLEAR_PAN[:4]} {CLEAR_PAN[4:8]} {CLEAR_PAN[8:12]} {CLEAR_PAN[12:]} /I"
             if line.startswith("卡号") else line for line in bilingual_slip()]
    events, _ = run(lines)
    receipt, txn = events
    assert isinstance(receipt, ReceiptText) and isinstance(txn, Transaction)
    assert txn.card == "622576******6696"
    assert txn.entry_mode == "contactless"
    assert "卡号(CARD NO.):622576******6696 /I" in receipt.lines
    assert not any(contains_full_pan(event_to_json(e).replace(" ", "")) for e in events)


def test_a_non_luhn_clear_card_field_is_still_masked_in_the_event() -> None:
    lines = [("卡号(CARD NO.):6225761234566691" if line.startswith("卡号") else line)
             for line in bilingual_slip()]
    [txn] = transactions(run(lines)[0])
    assert txn.card == "622576******6691"


def test_python_escpos_styled_slip_is_read_like_a_plain_one() -> None:
    printer = Dummy()
    printer.hw("INIT")
    printer._raw(b"\x1c&")
    printer.set(align="center", bold=True, double_height=True)
    printer._raw("银联POS签购单\n".encode("gb18030"))
    printer.set_with_default()
    for line in bilingual_slip()[1:]:
        printer._raw(line.encode("gb18030") + b"\n")
    printer.barcode("000123", "CODE39", function_type="A")
    printer.cut()
    decoder = EscposEventDecoder(tz=SHANGHAI)
    events = decoder.feed(printer.output, RECEIVED)
    assert transactions(events) == [SALE]


# ---------------------------------------------------------------------- settlement and QR

def test_settlement_slip_yields_batch_totals() -> None:
    events, _ = run(settlement_slip())
    [settlement] = [e for e in events if isinstance(e, Settlement)]
    assert settlement == Settlement(
        source="escpos", time=datetime(2026, 11, 27, 23, 0, 5, tzinfo=SHANGHAI), terminal_id="15221155",
        merchant_id="104152253311021", batch_no="000001", count=15, total_minor=385600, currency="CNY",
        balanced=True)


def test_unbalanced_settlement_slip_says_so() -> None:
    events, _ = run(settlement_slip("对账不平"))
    [settlement] = [e for e in events if isinstance(e, Settlement)]
    assert settlement.balanced is False


def test_wechat_receipt_order_number_becomes_the_rrn() -> None:
    [txn] = transactions(run(wechat_receipt())[0])
    assert txn == Transaction(
        source="escpos", kind="sale", result="approved", amount_minor=6850,
        time=datetime(2026, 11, 27, 12, 31, 40, tzinfo=SHANGHAI), terminal_id="15221155",
        rrn="4200001234202611271234567890", currency="CNY", card_type="WeChat Pay", entry_mode="qr")


def test_alipay_refund_receipt_without_a_payment_method_label() -> None:
    lines = ["      支付宝收款凭证", "交易类型：退款", "商户单号：SG20261127T1403110",
             "交易时间：11-27 15:00:00", "退款金额：12.00元"]
    [txn] = transactions(run(lines, source="till-printer")[0])
    assert (txn.kind, txn.card_type, txn.amount_minor) == ("refund", "Alipay", 1200)
    assert txn.source == "till-printer"
    assert txn.rrn == "SG20261127T1403110"
    assert txn.time == datetime(2026, 11, 27, 15, 0, tzinfo=SHANGHAI)


def test_a_receipt_no_template_matches_is_only_receipt_text() -> None:
    events, decoder = run(["ExampleMart Ltd.", "Total            $ 14.25"])
    assert [type(e) for e in events] == [ReceiptText]
    assert decoder.stats.counters["unmatched_receipts"] == 1


def test_a_slip_missing_its_amount_yields_no_transaction() -> None:
    lines = [line for line in bilingual_slip() if not line.startswith("金额")]
    events, decoder = run(lines)
    assert transactions(events) == []
    assert decoder.stats.counters["unmatched_receipts"] == 1


# ---------------------------------------------------------------------- templates are data

def test_selecting_templates_by_name_limits_what_is_read() -> None:
    events, _ = run(wechat_receipt(), templates=["unionpay"])
    assert transactions(events) == []
    with pytest.raises(TemplateError, match="unknown receipt template 'nope'"):
        load_templates(["nope"])


def test_an_installer_can_add_a_shop_layout_without_code(tmp_path: Path) -> None:
    (tmp_path / "corner_shop.toml").write_text("""
name = "corner_shop"
kind = "sales_slip"
priority = 1
start = ['^CORNER SHOP$']
currency = "CNY"

[defaults]
kind = "sale"

[fields.voucher_no]
labels = ['No\\.']
value = '(?P<v>\\d+)'

[fields.amount]
labels = ['Paid']
value = '(?P<amount>[\\d.]+)'
""", encoding="utf-8")
    events, _ = run(["CORNER SHOP", "No. 77", "Paid 9.90"], template_dirs=[tmp_path])
    [txn] = transactions(events)
    assert (txn.voucher_no, txn.amount_minor, txn.kind) == ("77", 990, "sale")


@pytest.mark.parametrize(("body", "complaint"), [
    ('name = "x"\nkind = "sales_slip"\nstart = ["("]\n', "start[0]: bad regular expression"),
    ('name = "x"\nkind = "sales_slip"\nstart = ["a"]\ncolour = 1\n', ": colour: unknown key"),
    ('name = "x"\nkind = "receipt"\nstart = ["a"]\n', ": kind: must be one of"),
    ('name = "x"\nkind = "sales_slip"\nstart = ["a"]\n[fields.shoe_size]\nlabels = ["x"]\n',
     "fields.shoe_size: unknown field"),
    ('name = "x"\nkind = "sales_slip"\nstart = ["a"]\n[maps.kind]\n"消费" = "purchase"\n',
     "maps.kind.消费: must be one of"),
    ('name = "x"\nkind = "sales_slip"\nstart = ["a"]\n[fields.kind]\nlabels = ["t"]\nmap = "kinds"\n',
     "fields.kind.map: names no [maps.kinds]"),
    ('name = "x"\nkind = "settlement_slip"\nstart = ["a"]\n', "settlement: a settlement_slip template needs"),
    ('name = "x"\nkind = "sales_slip"\nstart = ["a"]\nrequired = ["amount"]\n',
     "required[0]: 'amount' is neither"),
    ('name = "x"\nkind = \n', "not valid TOML"),
])
def test_a_bad_template_is_refused_naming_file_and_key(tmp_path: Path, body: str, complaint: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(body, encoding="utf-8")
    with pytest.raises(TemplateError) as info:
        load_template(path)
    assert str(path) in str(info.value)
    assert complaint in str(info.value)


def test_bundled_templates_load_in_priority_order() -> None:
    assert [t.name for t in load_templates()] == ["unionpay", "unionpay_settlement", "qr_payment", "cn_sales_receipt"]


def test_amounts_are_parsed_without_floats() -> None:
    assert parse_printed_amount("1,280.00") == 128000
    assert parse_printed_amount("0.1") == 10
    assert parse_printed_amount("12") == 1200
    assert parse_printed_amount("1.234") is None


def test_lookup_prefers_the_first_part_of_a_bilingual_value() -> None:
    table = [("预授权", "preauth"), ("PRE-AUTH", "preauth"), ("预授权撤销", "void"), ("C", "chip")]
    assert lookup(table, "预授权撤销/PRE-AUTH VOID") == "void"
    assert lookup(table, "c") == "chip"
    assert lookup(table, "CHECK") is None      # single-letter keys only match exactly


# ---------------------------------------------------------------------- properties

STREAM = b"".join(encode_text_receipt(x) for x in (
    bilingual_slip(), chinese_next_line_slip(), void_slip(), settlement_slip(), wechat_receipt(),
    bilingual_slip(reprint=True))) + encode_text_receipt(["trailing", "no cut"], cut=False)


def _events(cuts: list[int]) -> list[Event]:
    decoder = EscposEventDecoder(tz=SHANGHAI)
    out: list[Event] = []
    last = 0
    for cut in sorted(set(cuts)):
        out += decoder.feed(STREAM[last:cut], RECEIVED)
        last = cut
    return out + decoder.feed(STREAM[last:], RECEIVED) + decoder.flush(RECEIVED)


WHOLE = _events([])


def test_the_property_stream_is_worth_testing() -> None:
    assert [type(e).__name__ for e in WHOLE].count("Transaction") == 5
    assert [type(e).__name__ for e in WHOLE].count("Settlement") == 1
    assert sum(isinstance(e, ReceiptText) for e in WHOLE) == 7


@settings(max_examples=60, deadline=None)
@given(cuts=st.lists(st.integers(0, len(STREAM)), max_size=16))
def test_any_split_of_slip_stream_gives_the_same_events(cuts: list[int]) -> None:
    assert _events(cuts) == WHOLE


SLIP_ALPHABET = "卡号金额交易类型消费撤销凭证批次:：/ 0123456789.,RMB"


SLIP_LABELS = ("交易类型:", "交易类型：", "金额:", "金额：RMB ", "金额 AMOUNT:", "凭证号:", "凭证号 VOUCHER NO:",
               "批次号:", "卡号:", "")
SLIP_LINE = st.builds(
    str.__add__, st.sampled_from(SLIP_LABELS),
    st.one_of(st.sampled_from(["消费", "撤销", "SALE"]),
              st.from_regex(r"[0-9][0-9,]{0,7}(\.[0-9]{1,3})?", fullmatch=True),
              st.text(alphabet=st.sampled_from(list(SLIP_ALPHABET)), max_size=12)))


@settings(max_examples=150, deadline=None)
@given(lines=st.lists(st.one_of(SLIP_LINE, st.text(alphabet=list(SLIP_ALPHABET), max_size=30)), max_size=12))
def test_random_slip_like_text_never_raises_and_reports_only_what_was_printed(lines: list[str]) -> None:
    decoder = EscposEventDecoder(tz=SHANGHAI)
    events = decoder.feed(encode_text_receipt(["POS签购单", *lines]), RECEIVED)
    text = "\n".join(lines)
    # A value may stop early inside a printed run ("0,1" is read as 0), so every prefix of a run counts.
    printed = {parse_printed_amount(token[:end]) for token in re.findall(r"[0-9][0-9,.]*", text)
               for end in range(1, len(token) + 1)}
    for event in events:
        if isinstance(event, Transaction):
            # Whatever the extraction reports was printed: no amount or voucher number of its own making.
            assert event.amount_minor in printed
            assert event.voucher_no is None or event.voucher_no in text
