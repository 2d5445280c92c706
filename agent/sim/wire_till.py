"""The till's wire of a both-wires day: each sale printed as a 小票 (ESC/POS, read back through the bundled
``cn_sales_receipt`` template) or written as the till software's JSON line (``order`` events).

A printed receipt carries what the template reads: 单号, 日期, the items, 合计/应收, one line per tender
(银行卡 / 微信支付 / 支付宝 / 现金), 实收 and 找零 when cash was handed over. The bytes come from the
decoder module's own hand-written encoder, in GBK as most Chinese receipt printers are set up.
"""

from __future__ import annotations

from dataclasses import replace

from drivers.events import Order, event_to_json
from drivers.protocols.escpos import encode_text_receipt

TILL_PROTOCOLS = ("escpos", "jsonl")


def _yuan(minor: int) -> str:
    return f"{minor // 100}.{minor % 100:02d}"


def receipt_lines(order: Order, *, shop: str = "港式茶餐厅 徐家汇店") -> list[str]:
    assert order.time is not None
    cash = sum(t.amount_minor for t in order.tenders if t.method == "cash")
    # A customer paying cash hands over a round note: the change is what the till prints back.
    handed = -(-cash // 10000) * 10000 if cash else 0
    lines = [f"      {shop}", f"单号: {order.order_no}", f"日期: {order.time:%Y-%m-%d %H:%M:%S}", "收银员: 01",
             "-" * 26, "品名        数量    金额", f"餐品         1     {_yuan(order.total_minor)}", "-" * 26,
             f"合计: {_yuan(order.total_minor)}", f"应收: {_yuan(order.total_minor)}"]
    for t in order.tenders:
        label = t.hint if t.hint and t.method != "cash" else {"card": "银行卡", "qr": "微信支付",
                                                              "cash": "现金"}.get(t.method, "其他")
        lines.append(f"{label}: {_yuan(handed if t.method == 'cash' else t.amount_minor)}")
    if cash:
        lines += [f"实收: {_yuan(order.total_minor - cash + handed)}", f"找零: {_yuan(handed - cash)}"]
    return [*lines, "谢谢惠顾，欢迎再来"]


def encode(order: Order, protocol: str) -> bytes:
    if protocol == "escpos":
        return encode_text_receipt(receipt_lines(order), encoding="gbk")
    if protocol == "jsonl":
        return (event_to_json(replace(order, source="jsonl")) + "\n").encode("utf-8")
    raise ValueError(f"the till's wire is {' or '.join(TILL_PROTOCOLS)} (got {protocol!r})")
