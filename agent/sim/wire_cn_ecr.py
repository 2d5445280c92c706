"""A simulated UnionPay-style ECR terminal: events -> response frames, via the decoder's own encoder."""

from __future__ import annotations

from drivers.events import Settlement, Transaction
from drivers.protocols import cn_ecr

# The inverse of the decoder's default DF02 mapping.
_CODES = {kind: code for code, kind in cn_ecr.DEFAULT_TYPE_MAP.items() if kind != "ignore"}


def encode(event: Transaction | Settlement, *, lrc_init: int = 0x00) -> bytes:
    """One response frame; ``lrc_init`` as the terminal's vendor starts its checksum (0x00 or 0x7F)."""
    if isinstance(event, Settlement):
        assert event.time is not None
        local = event.time
        result = cn_ecr.EcrResult(
            packet_type="02", tran_code=_CODES["settlement"], response_code="00",
            batch_no=event.batch_no, terminal_id=event.terminal_id, merchant_id=event.merchant_id,
            date_mmdd=f"{local:%m%d}", time_hhmmss=f"{local:%H%M%S}",
            debit_amount_minor=max(event.total_minor or 0, 0), debit_count=event.count or 0,
            credit_amount_minor=max(-(event.total_minor or 0), 0), credit_count=0,
        )
        return cn_ecr.encode_response(result, lrc_init=lrc_init)
    assert event.time is not None
    local = event.time
    negative = event.kind in ("void", "refund", "reversal")
    result = cn_ecr.EcrResult(
        packet_type="02", tran_code=_CODES[event.kind], response_code="00" if event.result == "approved" else "51",
        amount=cn_ecr.Amount(event.amount_minor, negative, "CNY"),
        trace_no=event.trace_no, voucher_no=event.voucher_no, batch_no=event.batch_no,
        terminal_id=event.terminal_id, merchant_id=event.merchant_id,
        original_voucher_no=event.original_voucher_no, rrn=event.rrn, auth_code=event.auth_code,
        date_mmdd=f"{local:%m%d}", time_hhmmss=f"{local:%H%M%S}",
        # A terminal holds the full card number; the decoder must mask it (this exercises that).
        card=event.card, card_name="银联卡", operator=event.operator, merchant_name="好味道餐饮",
    )
    return cn_ecr.encode_response(result, lrc_init=lrc_init)
