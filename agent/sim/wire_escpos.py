"""A simulated till printing UnionPay slips (签购单) and the settlement slip (结算总计单) as ESC/POS.

Each sale prints the merchant copy; a reprint prints 重打印 on the same voucher.
The bytes come from the decoder module's own hand-written encoder.
"""

from __future__ import annotations

from drivers.events import Settlement, Transaction
from drivers.pan import mask_pan
from drivers.protocols.escpos import encode_text_receipt

_KIND_ZH = {"sale": "消费(SALE)", "void": "消费撤销(VOID)", "refund": "退货(REFUND)", "preauth": "预授权(AUTH)",
            "preauth_complete": "预授权完成(AUTH COMPLETE)", "reversal": "冲正(REVERSAL)", "balance": "查余额(BALANCE)"}
_ENTRY = {"chip": "C", "swipe": "S", "contactless": "I", "manual": "M"}


def _money(amount_minor: int, negative: bool = False) -> str:
    sign = "-" if negative else ""
    return f"RMB {sign}{amount_minor // 100:,}.{amount_minor % 100:02d}"


def slip_lines(t: Transaction, *, reprint: bool = False, copy: str = "商户存根") -> list[str]:
    assert t.time is not None
    entry = _ENTRY.get(t.entry_mode or "", "")
    lines = [
        "POS签购单",
        f"{copy}  MERCHANT COPY",
        *(["重打印 REPRINT"] if reprint else []),
        "商户名称(MERCHANT NAME):",
        "  好味道餐饮 静安店",
        f"商户编号(MERCHANT NO):{t.merchant_id or ''}",
        f"终端编号(TERMINAL NO):{t.terminal_id or ''}",
        f"操作员号(OPERATOR NO):{t.operator or ''}",
        # Printers show the masked number; mask_pan is what a real terminal's firmware does before printing.
        f"卡号(CARD NO):{mask_pan(t.card) or ''}" + (f" /{entry}" if entry else ""),
        f"交易类型(TRANS TYPE):{_KIND_ZH[t.kind]}",
        f"批次号(BATCH NO):{t.batch_no or ''}",
        f"凭证号(VOUCHER NO):{t.voucher_no or ''}",
        f"授权码(AUTH NO):{t.auth_code or ''}",
        f"参考号(REFER NO):{t.rrn or ''}",
        f"日期/时间(DATE/TIME):{t.time:%Y/%m/%d %H:%M:%S}",
        f"金额(AMOUNT):{_money(t.amount_minor, t.kind in ('void', 'refund'))}",
    ]
    if t.original_voucher_no:
        lines.append(f"原凭证号(ORIG VOUCHER NO):{t.original_voucher_no}")
    lines += ["备注(REFERENCE):", "持卡人签名(CARDHOLDER SIGNATURE):", "", "本人确认以上交易，同意将其记入本卡账户"]
    return lines


def settlement_lines(s: Settlement) -> list[str]:
    assert s.time is not None
    total = s.total_minor or 0
    return [
        "结算总计单",
        "SETTLEMENT",
        f"商户编号(MERCHANT NO):{s.merchant_id or ''}",
        f"终端编号(TERMINAL NO):{s.terminal_id or ''}",
        f"批次号(BATCH NO):{s.batch_no or ''}",
        f"日期/时间(DATE/TIME):{s.time:%Y/%m/%d %H:%M:%S}",
        "类型/TYPE      笔数/SUM      金额/AMOUNT",
        "内卡",
        f"消费/SALE      {s.count or 0:>4}        {_money(max(total, 0))[4:]}",
        f"退货/REFUND    {0:>4}        0.00",
        "外卡",
        f"消费/SALE      {0:>4}        0.00",
        f"退货/REFUND    {0:>4}        0.00",
        "对账平",
    ]


def encode(event: Transaction | Settlement, *, reprint: bool = False) -> bytes:
    if isinstance(event, Settlement):
        return encode_text_receipt(settlement_lines(event))
    return encode_text_receipt(slip_lines(event, reprint=reprint))
