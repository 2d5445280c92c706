"""ZVT encoders for the simulator and round-trip tests (pure functions): APDUs a terminal would send."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Final

from drivers.protocols.zvt.apdu import ALPHA_CURRENCY
from drivers.protocols.zvt.framing import MAX_APDU_DATA

# The positive completion (80 00 00) an ECR answers a terminal's status with.
POSITIVE_ACK: Final = b"\x80\x00\x00"

# --------------------------------------------------------------------------
# Encoders for the simulator and round-trip tests (pure functions).

def encode_apdu(cls: int, ins: int, data: bytes = b"") -> bytes:
    if len(data) > MAX_APDU_DATA:
        raise ValueError(f"APDU data longer than {MAX_APDU_DATA} bytes")
    if len(data) < 0xFF:
        return bytes((cls, ins, len(data))) + data
    return bytes((cls, ins, 0xFF, len(data) & 0xFF, len(data) >> 8)) + data


def _bcd_bytes(number: int | str, size: int) -> bytes:
    digits = str(number).rjust(size * 2, "0")
    if len(digits) != size * 2 or not digits.isdigit():
        raise ValueError(f"{number!r} does not fit {size} BCD bytes")
    return bytes.fromhex(digits)


def _llvar(value: bytes, digits: int = 2) -> bytes:
    return bytes(0xF0 | int(d) for d in str(len(value)).rjust(digits, "0")) + value


def _pan_bcd(card: str) -> bytes:
    nibbles = "".join("e" if ch == "*" else ch for ch in card if ch.isdigit() or ch == "*")
    if len(nibbles) % 2:
        nibbles += "f"
    return bytes.fromhex(nibbles)


def _currency_bcd(currency: str) -> bytes:
    try:
        return _bcd_bytes(ALPHA_CURRENCY[currency], 2)
    except KeyError:
        raise ValueError(f"no ISO 4217 number known for {currency!r}") from None


def encode_status(*, amount_minor: int, time: datetime, trace_no: str | int, receipt_no: str | int,
                  terminal_id: str | int, card: str | None = None, card_name: str | None = None,
                  currency: str = "EUR", result_code: int = 0,
                  original_trace_no: str | int | None = None) -> bytes:
    """A 04 0F status information APDU (BMPs 27 04 0B 0C 0D 22 29 49 87 8B [37]).

    ``card`` must already be masked (digits and ``*``); masked digits are sent
    as E nibbles, as terminals do. ``time`` is written as local wall-clock time.
    """
    if amount_minor < 0:
        raise ValueError("amount_minor must be >= 0")
    parts = [
        b"\x27" + bytes((result_code,)),
        b"\x04" + _bcd_bytes(amount_minor, 6),
        b"\x0b" + _bcd_bytes(trace_no, 3),
        b"\x0c" + _bcd_bytes(f"{time.hour:02d}{time.minute:02d}{time.second:02d}", 3),
        b"\x0d" + _bcd_bytes(f"{time.month:02d}{time.day:02d}", 2),
    ]
    if card:
        parts.append(b"\x22" + _llvar(_pan_bcd(card)))
    parts.append(b"\x29" + _bcd_bytes(terminal_id, 4))
    if original_trace_no is not None:
        parts.append(b"\x37" + _bcd_bytes(original_trace_no, 3))
    parts.append(b"\x49" + _currency_bcd(currency))
    parts.append(b"\x87" + _bcd_bytes(receipt_no, 2))
    if card_name:
        parts.append(b"\x8b" + _llvar(card_name.encode("latin-1")))
    return encode_apdu(0x04, 0x0F, b"".join(parts))


def encode_print_lines(lines: Sequence[str], codec: str = "cp437") -> list[bytes]:
    """06 D1 print lines; the last one carries the "last line" attribute."""
    out: list[bytes] = []
    for i, line in enumerate(lines):
        attribute = 0x80 if i == len(lines) - 1 else 0x00
        out.append(encode_apdu(0x06, 0xD1, bytes((attribute,)) + line.encode(codec)))
    return out


def encode_end_of_day(*, terminal_id: str | int, total_minor: int, time: datetime,
                      counts: Sequence[tuple[int, int]] = (), currency: str = "EUR",
                      receipt_range: tuple[int, int] = (1, 1), password: str = "000000",
                      receipt_lines: Sequence[str] = ()) -> list[bytes]:
    """The APDUs of one end-of-day exchange, in wire order (both directions).

    06 50 (ECR), 80 00 00 (PT), 04 0F totals (PT), 80 00 00 (ECR), optional
    print lines (PT), 06 0F completion (PT). ``counts`` lists (count,
    amount_minor) per card family for BMP 60 (ZVT has seven families).
    """
    totals = b""
    if counts:
        families = list(counts)[:7] + [(0, 0)] * (7 - min(7, len(counts)))
        body = _bcd_bytes(receipt_range[0], 2) + _bcd_bytes(receipt_range[1], 2)
        body += b"".join(bytes((n,)) + _bcd_bytes(amount, 6) for n, amount in families)
        totals = b"\x60" + _llvar(body, 3)
    status = encode_apdu(0x04, 0x0F, b"".join((
        b"\x27\x00",
        b"\x04" + _bcd_bytes(total_minor, 6),
        b"\x0c" + _bcd_bytes(f"{time.hour:02d}{time.minute:02d}{time.second:02d}", 3),
        b"\x0d" + _bcd_bytes(f"{time.month:02d}{time.day:02d}", 2),
        b"\x29" + _bcd_bytes(terminal_id, 4),
        b"\x49" + _currency_bcd(currency),
        totals,
    )))
    sequence = [encode_apdu(0x06, 0x50, _bcd_bytes(password, 3)), POSITIVE_ACK, status, POSITIVE_ACK]
    if receipt_lines:
        sequence.extend(encode_print_lines(receipt_lines))
    sequence.append(encode_apdu(0x06, 0x0F, b""))
    return sequence


def encode_reversal_command(receipt_no: str | int, password: str = "000000") -> bytes:
    """ECR -> PT 06 30 reversal of the payment with this receipt number."""
    return encode_apdu(0x06, 0x30, _bcd_bytes(password, 3) + b"\x87" + _bcd_bytes(receipt_no, 2))

