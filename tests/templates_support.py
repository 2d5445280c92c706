"""Slip layouts for the template tests (issue 18), and the layout variations printers make.

The layouts are the bundled templates' own: the simulated terminal's 签购单 and 结算总计单
(agent/sim/wire_escpos.py), a QR payment receipt and a till 小票 written here. ``vary`` rewrites a
slip the way another printer model or firmware would print the same transaction.
"""

from __future__ import annotations

import re
from datetime import datetime
from zoneinfo import ZoneInfo

from hypothesis import strategies as st

from agent.sim.wire_escpos import settlement_lines, slip_lines
from drivers.events import Event, ReceiptText, Settlement, Transaction
from drivers.protocols.escpos import EscposEventDecoder, encode_text_receipt

SHANGHAI = ZoneInfo("Asia/Shanghai")
RECEIVED = datetime(2026, 11, 27, 15, 0, tzinfo=SHANGHAI)

SALE = Transaction(
    source="escpos", kind="sale", result="approved", amount_minor=128000,
    time=datetime(2026, 11, 27, 14, 3, 11, tzinfo=SHANGHAI), terminal_id="15221155",
    merchant_id="104152253311021", batch_no="000001", voucher_no="000123", rrn="925498334778",
    auth_code="123456", currency="CNY", card="6225761234566691", card_type="UnionPay",
    entry_mode="chip", operator="01",
)
VOID = Transaction(
    source="escpos", kind="void", result="approved", amount_minor=4550,
    time=datetime(2026, 11, 27, 14, 20, 5, tzinfo=SHANGHAI), terminal_id="15221155",
    merchant_id="104152253311021", batch_no="000001", voucher_no="000124", rrn="925498334779",
    auth_code="654321", currency="CNY", card="6225761234566691", card_type="UnionPay",
    entry_mode="swipe", operator="02", original_voucher_no="000123",
)
SETTLEMENT = Settlement(source="escpos", time=datetime(2026, 11, 27, 23, 0, 5, tzinfo=SHANGHAI),
                        terminal_id="15221155", merchant_id="104152253311021", batch_no="000001",
                        count=12, total_minor=345600, currency="CNY", balanced=True)

QR_RECEIPT = [
    "        微信支付凭证",
    "商户名称：好味道餐饮",
    "终端编号：15221155",
    "支付方式：微信支付",
    "交易类型：消费",
    "订单号：4200001234202611271234567890",
    "交易时间：2026-11-27 12:31:40",
    "实付金额：￥68.50",
]

# A till's 小票 of this project's own making (not from the bundled template's comments).
SALES_RECEIPT = [
    "      好味道便利店 静安店",
    "销售单号：202611270042",
    "收银员：03",
    "销售时间：2026-11-27 14:02:55",
    "--------------------------------",
    "品名          数量   单价    金额",
    "矿泉水          2    2.50    5.00",
    "全麦面包        1   12.80   12.80",
    "--------------------------------",
    "合计：17.80",
    "实收：50.00",
    "找零：32.20",
    "支付方式：现金",
    "     谢谢惠顾 欢迎再来",
]

LAYOUTS: dict[str, list[str]] = {
    "unionpay_sale": slip_lines(SALE),
    "unionpay_void": slip_lines(VOID),
    "unionpay_settlement": settlement_lines(SETTLEMENT),
    "qr_payment": QR_RECEIPT,
    "cn_sales_receipt": SALES_RECEIPT,
}


def decode(data: bytes, **options: object) -> list[Event]:
    decoder = EscposEventDecoder(tz=SHANGHAI, **options)  # type: ignore[arg-type]
    return decoder.feed(data, RECEIVED) + decoder.flush(RECEIVED)


def decode_lines(*receipts: list[str], encoding: str = "gb18030", **options: object) -> list[Event]:
    return decode(b"".join(encode_text_receipt(r, encoding=encoding) for r in receipts), **options)


def read_events(events: list[Event]) -> list[Event]:
    """What a receipt gave besides its text (source and receipt identity aside)."""
    return [e for e in events if not isinstance(e, ReceiptText)]


# ---------------------------------------------------------------------- variations

_LABELLED = re.compile(r"^(?P<label>[^:：\d]*[^\s:：\d])\s*[:：]\s*(?P<value>\S.*)$")
_CURRENCY = re.compile(r"^(?:RMB|￥)\s*")
_ENTRY = re.compile(r"\s*/\s*([CSIM])$")
_ROW = re.compile(r"^(\S+)\s+(\d+)\s+(\S+)$")
_FULL = str.maketrans("0123456789", "０１２３４５６７８９")

_BILINGUAL = re.compile(r"^([^\x00-\x7f(（]+)[(（]([A-Z][A-Z./ ]*)[)）]$")
LABEL_FORMS = ("{zh}({en})", "{zh}（{en}）", "{zh}/{en}", "{zh} {en}", "{zh}", "{en}({zh})", "{en}/{zh}",
               "{en} {zh}")
SEPARATORS = (":", "：", " : ", "：  ", ":   ")
CURRENCIES = ("RMB ", "RMB", "RMB:", "RMB：", "RMB: ", "￥", "¥ ", "RMB\n", "RMB:\n")
ENTRIES = ("/{}", " /{}", " {}", "  {}", " / {}")


@st.composite
def variation(draw: st.DrawFn, lines: list[str]) -> list[str]:
    """The same slip as another printer prints it: the issue's list of ordinary differences.

    Bilingual labels in either order and form, a colon or a full-width colon (with any spacing) after a
    label, the value on the label's line or alone
    on the next, the currency code with or without a colon (or alone on its line), the entry-mode letter
    after a slash or a space, full-width digits, extra or collapsed spaces.
    """
    out: list[str] = []
    for line in lines:
        row = _ROW.match(line.strip())
        if row is not None:                            # a settlement row: columns apart by any spacing
            gaps = [" " * draw(st.integers(1, 8)) for _ in range(2)]
            cells = [row.group(1), row.group(2), row.group(3)]
            if draw(st.booleans()):
                cells[1:] = [c.translate(_FULL) for c in cells[1:]]
            out.append(cells[0] + gaps[0] + cells[1] + gaps[1] + cells[2])
            continue
        match = _LABELLED.match(line.strip())
        if match is None:
            out.append(" " * draw(st.integers(0, 4)) + line.strip() if line.strip() else line)
            continue
        label, value = match.group("label"), match.group("value")
        bilingual = _BILINGUAL.match(label)
        if bilingual is not None:                      # 凭证号(VOUCHER NO) in the other orders and forms
            zh, en = bilingual.group(1), bilingual.group(2)
            label = draw(st.sampled_from(LABEL_FORMS)).format(zh=zh, en=en)
        cur = _CURRENCY.match(value)
        if cur is not None:
            value = draw(st.sampled_from(CURRENCIES)) + value[cur.end():]
        entry = _ENTRY.search(value)
        if entry is not None:
            value = value[:entry.start()] + draw(st.sampled_from(ENTRIES)).format(entry.group(1))
        if draw(st.booleans()):
            value = value.translate(_FULL)
        if draw(st.booleans()):
            value = value.replace(" ", "   ")
        indent = " " * draw(st.integers(0, 4))
        sep = draw(st.sampled_from(SEPARATORS))
        if draw(st.booleans()):                        # the value alone on the next line
            out.append(indent + label + sep.rstrip())
            out.extend(indent + "  " + part for part in value.split("\n"))
        else:
            out.extend((indent + label + sep + value).split("\n"))
    return out
