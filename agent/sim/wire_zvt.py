"""A simulated ZVT terminal on RS-232: events -> DLE-framed APDUs, via the decoder's own encoder.

ZVT has no batch or voucher numbers: the sim's voucher becomes the 4-digit
receipt number, and a void becomes a 06 30 reversal of that receipt.
"""

from __future__ import annotations

from drivers.events import Settlement, Transaction
from drivers.protocols import zvt


def _receipt(voucher: str | None) -> int:
    return int(voucher or 0) % 10000


def encode(event: Transaction | Settlement) -> bytes:
    assert event.time is not None
    if isinstance(event, Settlement):
        apdus = zvt.encode_end_of_day(terminal_id=event.terminal_id or "0", total_minor=max(event.total_minor or 0, 0),
                                      time=event.time, currency=event.currency or "EUR")
        return b"".join(zvt.frame_serial(a) for a in apdus)
    out = b""
    if event.kind in ("void", "reversal") and event.original_voucher_no:
        out += zvt.frame_serial(zvt.encode_reversal_command(_receipt(event.original_voucher_no)))
    status = zvt.encode_status(
        amount_minor=event.amount_minor, time=event.time, trace_no=int(event.trace_no or 0) % 1000000,
        receipt_no=_receipt(event.voucher_no), terminal_id=event.terminal_id or "0", card=event.card,
        card_name="UnionPay", currency=event.currency or "EUR", result_code=0 if event.result == "approved" else 5,
    )
    # Every payment or reversal ends with the terminal's 06 0F completion, as on a real line.
    return out + zvt.frame_serial(status) + zvt.frame_serial(zvt.encode_apdu(0x06, 0x0F, b""))
