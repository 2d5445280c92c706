"""UnionPay-style ECR ("MIS") link between a till and a Chinese bank POS terminal.

Wire format (see tests/data/cn-ecr/README.md for the provenance)::

    [06]  02   LL LL        DFxx len value ...   03    LRC
    ACK   STX  BCD length   TLV body             ETX   XOR

* The length is the body length written as four decimal digits in BCD
  (a 262-byte body is ``02 62``); the terminal's own receiver refuses 0 and
  anything over 1024.
* The LRC is an XOR; vendors differ in its start value (0x00 or 0x7F) and in
  which bytes it covers, hence the ``lrc_init`` / ``lrc_covers`` options.
* The body is a list of TLVs with two-byte ``DFxx`` tags and a length of one
  byte (< 0x80), ``81 n`` or ``82 hi lo``. A response carries DF01 (packet
  type), DF02 (transaction type), DF04 (random echo), DF06 (a nested TLV list
  with the receipt fields) and DF07 (response code).

Framing is deliberately strict so that a corrupted length cannot swallow the
frame after it: a candidate is accepted only when the body is a well-formed
TLV list ending exactly at the ETX, and the LRC matches (unless
``verify_lrc=False``). Every check is a function of the bytes seen so far,
so the outcome never depends on how the stream was chunked; a candidate is
rejected as soon as its prefix proves it wrong, without waiting for the
length it claims.

The transaction-type numbers (POS_* constants) live in a vendor header that
was never published; only 45 (sale, 消费) and 46 (void, 撤销) are confirmed
by captured frames. :data:`DEFAULT_TYPE_MAP` documents the assumption made
for the rest, and ``type_map=`` replaces it per terminal.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, tzinfo
from types import MappingProxyType
from typing import Final, Literal, TypeVar

from drivers.events import KINDS, Event, Settlement, Transaction
from drivers.pan import mask_pan, scrub_text
from drivers.protocols.base import DecoderStats
from drivers.timeutil import infer_datetime

STX: Final = 0x02
ETX: Final = 0x03
ACK: Final = 0x06
NAK: Final = 0x15
TAG_PREFIX: Final = 0xDF
# STX + 2 length bytes before the body, ETX + LRC after it.
FRAME_OVERHEAD: Final = 5
MAX_BODY: Final = 1024

LrcCoverage = Literal["len_to_etx", "body_to_etx", "stx_to_etx"]
LRC_COVERAGES: tuple[str, ...] = ("len_to_etx", "body_to_etx", "stx_to_etx")

# DF07: host codes "00" and Y1/Y2/Y3 (offline-approved) are success.
APPROVED_CODES: frozenset[str] = frozenset({"00", "Y1", "Y2", "Y3"})

# What a DF02 transaction type turns into: a Transaction kind, a Settlement,
# or nothing ("ignore": sign-in, reprint, statistics, parameter download).
TYPE_TARGETS: tuple[str, ...] = (*KINDS, "settlement", "ignore")

DEFAULT_TYPE_MAP: Mapping[str, str] = MappingProxyType({
    # Confirmed by the two captured frames.
    "45": "sale",              # POS_PURCHASE 消费
    "46": "void",              # POS_VOID 撤销
    # ASSUMPTION, not confirmed by any capture: the POS_* constants are
    # numbered consecutively in the order the vendor code lists them
    # (LOGIN, PURCHASE, VOID, REFUND, INQUIRY, REPRINT, STATICS, SETTLE,
    # DOWNPARAM, PREAUTH, VOIDAUTH, CONFIRM), anchored on PURCHASE=45 and
    # VOID=46. Override with type_map= once a terminal's manual says otherwise.
    "44": "ignore",            # POS_LOGIN 签到
    "47": "refund",            # POS_REFUND 退货
    "48": "balance",           # POS_INQUIRY 查余额
    "49": "ignore",            # POS_REPRINT 重打印: the original transaction again, not a new one
    "50": "ignore",            # POS_STATICS 统计: totals without closing the batch
    "51": "settlement",        # POS_SETTLE 结算
    "52": "ignore",            # POS_DOWNPARAM 参数下载
    "53": "preauth",           # POS_PREAUTH 预授权
    "54": "void",              # POS_VOIDAUTH 预授权撤销: releases the hold
    "55": "preauth_complete",  # POS_CONFIRM 预授权完成
    "13": "ignore",            # status query (special-cased by the vendor's unpacker)
})

# ISO 8583 field 22 PAN entry mode (first two of three digits; DF2F carries
# them as two BCD bytes, left-padded with a zero nibble: 0 P P C).
ENTRY_MODES_BY_CODE: Mapping[str, str] = MappingProxyType({
    "01": "manual",
    "02": "swipe",
    "90": "swipe",
    "05": "chip",
    "95": "chip",
    "07": "contactless",
    "91": "contactless",
    "98": "contactless",
    "03": "qr",                # bar code / QR (扫码)
})

# Settlement tags: debit (借记: sales) and credit (贷记: returns) per scheme.
# UnionPay's four tags are not contiguous: BOC was slotted in between.
SCHEME_TAGS: tuple[tuple[str, int, int, int, int], ...] = (
    ("unionpay", 0xDF48, 0xDF49, 0xDF50, 0xDF51),
    ("boc", 0xDF4A, 0xDF4B, 0xDF4C, 0xDF4D),
    ("visa", 0xDF52, 0xDF53, 0xDF54, 0xDF55),
    ("mastercard", 0xDF56, 0xDF57, 0xDF58, 0xDF59),
    ("amex", 0xDF5A, 0xDF5B, 0xDF5C, 0xDF5D),
    ("diners", 0xDF5E, 0xDF5F, 0xDF60, 0xDF61),
    ("jcb", 0xDF62, 0xDF63, 0xDF64, 0xDF65),
)

# Every settlement-total tag: most frames carry none, and skip that work.
_TOTAL_TAGS: frozenset[int] = frozenset(
    {0xDF25, 0xDF26, 0xDF27, 0xDF28} | {t for _, *tags in SCHEME_TAGS for t in tags}
)

CURRENCY_BY_LABEL: Mapping[str, str] = MappingProxyType({"RMB": "CNY"})
LABEL_BY_CURRENCY: Mapping[str, str] = MappingProxyType({"CNY": "RMB"})

# Byte -> its two BCD digits as a number, or -1 when a nibble is above 9.
_BCD_BYTE: tuple[int, ...] = tuple(
    (b >> 4) * 10 + (b & 0x0F) if (b >> 4) <= 9 and (b & 0x0F) <= 9 else -1 for b in range(256)
)
_AMOUNT_TEXT = re.compile(
    r"^\s*([A-Za-z]{3})?\s*([+-]?)\s*(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d{1,2}))?\s*$"
, re.ASCII,
)
# Digits of the shortest card number (ISO/IEC 7812).
_SHORTEST_PAN: Final = 13
# Minor-unit digits: 12 is the ISO 8583 amount width; more is not an amount.
_MAX_AMOUNT_DIGITS = 12


class TlvError(ValueError):
    """A TLV list that does not follow the DFxx / 81 / 82 encoding."""


# --------------------------------------------------------------------------
# Pure wire helpers (shared by the decoder and the simulator)
# --------------------------------------------------------------------------

# _LOW_BYTES[k]: all ones over 2**k bytes, the half the LRC fold below keeps.
_LOW_BYTES: tuple[int, ...] = tuple((1 << (8 << k)) - 1 for k in range(12))


def lrc(data: bytes | bytearray | memoryview, init: int = 0x00) -> int:
    """XOR of every byte of ``data``, starting from ``init``."""
    # Fold the bytes as one big integer: a few wide XORs instead of a
    # per-byte Python loop (the LRC is on the hot path of every frame).
    # Rounding the width up to a power of two (zero bytes, which do not
    # change an XOR) keeps the masks in a table.
    value = int.from_bytes(data, "little")
    k = (len(data) - 1).bit_length()
    while k > 3:
        k -= 1
        mask = _LOW_BYTES[k] if k < len(_LOW_BYTES) else (1 << (8 << k)) - 1
        value = (value & mask) ^ (value >> (8 << k))
    value ^= value >> 32
    value ^= value >> 16
    value ^= value >> 8
    return (value ^ init) & 0xFF


def _lrc_span(frame_start: int, body_len: int, covers: str) -> tuple[int, int]:
    """Offsets (start, stop) the LRC covers, relative to the STX at ``frame_start``."""
    etx = frame_start + 3 + body_len
    if covers == "len_to_etx":
        return frame_start + 1, etx + 1
    if covers == "body_to_etx":
        return frame_start + 3, etx + 1
    return frame_start, etx + 1


def encode_length(n: int) -> bytes:
    if not 0 <= n <= 0xFFFF:
        raise ValueError(f"TLV value too long: {n} bytes")
    if n < 0x80:
        return bytes((n,))
    if n <= 0xFF:
        return bytes((0x81, n))
    return bytes((0x82, n >> 8, n & 0xFF))


def encode_tlv(tag: int, value: bytes) -> bytes:
    if tag >> 8 != TAG_PREFIX or tag > 0xFFFF:
        raise ValueError(f"tag must be DFxx (got {tag:#x})")
    return tag.to_bytes(2, "big") + encode_length(len(value)) + value


def parse_tlv(data: bytes | bytearray | memoryview) -> list[tuple[int, bytes]]:
    """``data`` as a list of (tag, value); raises :class:`TlvError` unless it parses to the end exactly."""
    if not isinstance(data, bytes):
        data = bytes(data)
    out: list[tuple[int, bytes]] = []
    end = len(data)
    p = 0
    while p < end:
        if data[p] != TAG_PREFIX or p + 2 >= end:
            raise TlvError(f"no DFxx tag at offset {p}")
        tag = 0xDF00 | data[p + 1]
        first = data[p + 2]
        if first < 0x80:
            length, p = first, p + 3
        elif first == 0x81 and p + 3 < end:
            length, p = data[p + 3], p + 4
        elif first == 0x82 and p + 4 < end:
            length, p = (data[p + 3] << 8) | data[p + 4], p + 5
        else:
            raise TlvError(f"bad length form {first:#04x} for tag {tag:04X}")
        if p + length > end:
            raise TlvError(f"tag {tag:04X} claims {length} bytes, only {end - p} left")
        out.append((tag, data[p:p + length]))
        p += length
    return out


def _tlv_map(data: bytes) -> dict[int, bytes]:
    """``dict(parse_tlv(data))`` (the last of a repeated tag wins) without the list of pairs.

    Decoding a frame looks up a dozen tags in each of two lists, so the
    values go straight into a dict; a malformed list is handed to
    :func:`parse_tlv` so that the error, and its wording, are that function's.
    """
    out: dict[int, bytes] = {}
    end = len(data)
    p = 0
    # A header cut short by the end raises IndexError: same verdict as parse_tlv's
    # explicit bounds checks, without paying for them on every tag.
    try:
        while p < end:
            if data[p] != TAG_PREFIX:
                break
            first = data[p + 2]
            if first < 0x80:
                start = p + 3
            elif first == 0x81:
                start, first = p + 4, data[p + 3]
            elif first == 0x82:
                start, first = p + 5, (data[p + 3] << 8) | data[p + 4]
            else:
                break
            stop = start + first
            if stop > end:
                break
            out[0xDF00 | data[p + 1]] = data[start:stop]
            p = stop
        else:
            return out
    except IndexError:
        pass
    parse_tlv(data)
    raise AssertionError("parse_tlv accepted a TLV list _tlv_map refused")  # pragma: no cover


def bcd_digits(value: bytes) -> str | None:
    """Packed BCD as its digit string; None when a nibble is not a digit."""
    text = value.hex()
    return text if text.isdigit() else None


def encode_bcd(digits: str, width: int | None = None) -> bytes:
    """Digit string -> packed BCD, left-padded with zeros to ``width`` bytes (or to an even length)."""
    if not digits.isdigit() or not digits.isascii():
        raise ValueError(f"BCD needs decimal digits (got {digits!r})")
    n = width * 2 if width is not None else len(digits) + len(digits) % 2
    if len(digits) > n:
        raise ValueError(f"{digits!r} does not fit in {width} BCD bytes")
    return bytes.fromhex(digits.rjust(n, "0"))


def encode_frame(body: bytes, *, lrc_init: int = 0x00, lrc_covers: LrcCoverage = "len_to_etx",
                 ack: bool = False) -> bytes:
    """STX + BCD length + body + ETX + LRC (and a leading ACK when ``ack``)."""
    if not 0 < len(body) <= 9999:
        raise ValueError(f"a frame body must be 1..9999 bytes (got {len(body)})")
    frame = bytearray((STX,)) + encode_bcd(f"{len(body):04d}", 2) + body + bytes((ETX,))
    start, stop = _lrc_span(0, len(body), lrc_covers)
    frame.append(lrc(frame[start:stop], lrc_init))
    return (bytes((ACK,)) if ack else b"") + bytes(frame)


# --------------------------------------------------------------------------
# Field decoding
# --------------------------------------------------------------------------

def _text(value: bytes | None) -> str | None:
    """A right-padded ASCII/GBK field as stripped text; blank -> None."""
    if value is None:
        return None
    # Asking first is cheaper than catching the UnicodeDecodeError of every GBK name.
    text = value.decode("ascii" if value.isascii() else "gb18030", errors="replace").strip()
    return text or None


def _free_text(value: bytes | None) -> str | None:
    text = _text(value)
    return scrub_text(text) if text is not None else None


def _number_text(value: bytes | None, digits: int | None = None) -> str | None:
    """A numeric id that vendors send either as ASCII digits or as packed BCD.

    The expected width settles the ambiguity (3 bytes for a 6-digit voucher
    is BCD, 6 bytes is ASCII); otherwise ASCII digits win, because BCD that
    happens to be all 0x30-0x39 would be an absurd number.
    """
    if not value:
        return None
    # bcd_digits inlined: this runs for eight fields of every frame.
    if len(value) * 2 == digits:
        text = value.hex()
        return text if text.isdigit() else None
    if value.isdigit():
        return value.decode("ascii")
    stripped = value.strip(b" ")
    if not stripped:
        return None
    if stripped.isdigit():
        return stripped.decode("ascii")
    text = value.hex()
    return text if text.isdigit() else None


def _count(value: bytes | None) -> int | None:
    text = _number_text(value)
    return int(text) if text is not None else None


@dataclass(frozen=True, slots=True)
class Amount:
    minor: int             # always >= 0
    negative: bool
    currency: str | None   # None when the field had no currency label


def parse_amount(value: bytes | None) -> Amount | None:
    """DF03 and the settlement totals: ``"RMB -0.20"``, 12 ASCII digits of minor units, or 6 BCD bytes."""
    parts = _amount_parts(value)
    return Amount(*parts) if parts is not None else None


def _amount_parts(value: bytes | None) -> tuple[int, bool, str | None] | None:
    """:func:`parse_amount` as a plain tuple: the decoder needs no :class:`Amount` per frame."""
    if value is None or not value:
        return None
    m = _AMOUNT_TEXT.match(value.decode("latin-1"))
    if m is None:
        # Text wins over BCD: six BCD bytes that all read as ASCII digits
        # would be an amount above RMB 300 million.
        digits = bcd_digits(value) if len(value) == 6 else None
        return (int(digits), False, None) if digits is not None else None
    label, sign, whole, frac = m.groups()
    if "," in whole:
        whole = whole.replace(",", "")
    if label is None and frac is None:
        # Bare digits are the ISO 8583 n12 form: already minor units.
        if len(whole) > _MAX_AMOUNT_DIGITS:
            return None
        minor = int(whole)
    else:
        if len(whole) > _MAX_AMOUNT_DIGITS - 2:
            return None
        minor = int(whole) * 100 + (0 if frac is None else int(frac) * 10 if len(frac) == 1 else int(frac))
    currency = None
    if label is not None:
        label = label.upper()
        currency = CURRENCY_BY_LABEL.get(label, label)
    return minor, sign == "-", currency


def format_amount(minor: int, *, negative: bool = False, currency: str = "CNY") -> bytes:
    """The terminal's own text form: ``RMB -0.20`` / ``RMB  0.20`` (sign slot kept)."""
    label = LABEL_BY_CURRENCY.get(currency, currency)
    return f"{label} {'-' if negative else ' '}{minor // 100}.{minor % 100:02d}".encode("ascii")


@dataclass(frozen=True, slots=True)
class SchemeTotals:
    """Per-scheme settlement totals (DF48-DF65): debit = sales, credit = returns."""

    scheme: str
    debit_amount_minor: int | None = None
    debit_count: int | None = None
    credit_amount_minor: int | None = None
    credit_count: int | None = None


@dataclass(frozen=True, slots=True)
class EcrResult:
    """One response frame, decoded: text stripped, card masked, free text scrubbed.

    Holds more than an event has room for (merchant names, till number, QR
    order number) so callers and tests can see everything the terminal said.
    """

    packet_type: str | None = None          # DF01: 00 request, 01 ISO 8583 for the host, else a result
    tran_code: str | None = None            # DF02 (inside DF06 when present, else top level)
    random: str | None = None               # DF04, echoed from the request
    response_code: str | None = None        # DF07 (top level first), ASCII or BCD error code
    amount: Amount | None = None            # DF03
    trace_no: str | None = None             # DF0A 流水号
    voucher_no: str | None = None           # DF10 票据号
    batch_no: str | None = None             # DF11
    terminal_id: str | None = None          # DF12
    merchant_id: str | None = None          # DF13
    original_voucher_no: str | None = None  # DF18
    original_trace_no: str | None = None    # DF19
    rrn: str | None = None                  # DF1A
    auth_code: str | None = None            # DF1B
    date_mmdd: str | None = None            # DF1C
    time_hhmmss: str | None = None          # DF1D
    card: str | None = None                 # DF1E, masked
    card_type_code: str | None = None       # DF21, hex
    card_name: str | None = None            # DF2C, GBK
    entry_mode_code: str | None = None      # DF2F, BCD
    merchant_name_en: str | None = None     # DF44
    merchant_name: str | None = None        # DF45, GBK
    desk_no: str | None = None              # DF46 款台号
    operator: str | None = None             # DF47 柜员号
    order_no: str | None = None             # DF69 wallet order / UnionPay QR voucher
    debit_amount_minor: int | None = None   # DF25
    debit_count: int | None = None          # DF26
    credit_amount_minor: int | None = None  # DF27
    credit_count: int | None = None         # DF28
    scheme_totals: tuple[SchemeTotals, ...] = ()


def _response_code(value: bytes | None) -> str | None:
    if value is None or not value:
        return None
    if len(value) == 2:
        return value.decode("ascii", errors="replace")
    # Longer codes are terminal/EMV errors in BCD ("00000002" card error ...).
    return value.hex().upper()


def _minor(value: bytes | None) -> int | None:
    amount = parse_amount(value)
    return amount.minor if amount is not None else None


_NO_TOTALS: tuple[None, None, None, None] = (None, None, None, None)
_TotalsRow = tuple[int | None, int | None, int | None, int | None]


def _read_totals(inner: Mapping[int, bytes]) -> tuple[_TotalsRow, tuple[SchemeTotals, ...]]:
    """DF25-DF28 (debit amount, debit count, credit amount, credit count) and the per-scheme rows."""
    if _TOTAL_TAGS.isdisjoint(inner):
        return _NO_TOTALS, ()
    overall = (_minor(inner.get(0xDF25)), _count(inner.get(0xDF26)),
               _minor(inner.get(0xDF27)), _count(inner.get(0xDF28)))
    schemes = tuple(
        SchemeTotals(name, _minor(inner.get(d_amt)), _count(inner.get(d_cnt)),
                     _minor(inner.get(c_amt)), _count(inner.get(c_cnt)))
        for name, d_amt, d_cnt, c_amt, c_cnt in SCHEME_TAGS
        if d_amt in inner or d_cnt in inner or c_amt in inner or c_cnt in inner
    )
    return overall, schemes


def _inner_tlvs(top: Mapping[int, bytes], packet_type: str | None) -> dict[int, bytes]:
    container = top.get(0xDF06)
    # With DF01=01 the container is an ISO 8583 message for the host (and
    # may hold track data): never look inside.
    if container is None or packet_type == "01":
        return {}
    return _tlv_map(container)


def parse_body(body: bytes | bytearray | memoryview) -> EcrResult:
    """A frame body (the TLVs between length and ETX) as an :class:`EcrResult`.

    Raises :class:`TlvError` when the body or the DF06 container is not a
    well-formed TLV list. The decoder does not go through this: it reads
    only the fields an event has room for (see ``CnEcrDecoder._event``).
    """
    top = _tlv_map(bytes(body))
    packet_type = _number_text(top.get(0xDF01), 2)
    inner = _inner_tlvs(top, packet_type)
    (debit_amount, debit_count, credit_amount, credit_count), schemes = _read_totals(inner)
    card_type = inner.get(0xDF21)
    return EcrResult(
        packet_type=packet_type,
        tran_code=_number_text(inner.get(0xDF02) or top.get(0xDF02), 2),
        random=_number_text(top.get(0xDF04), 4),
        response_code=_response_code(top.get(0xDF07) or inner.get(0xDF07)),
        amount=parse_amount(inner.get(0xDF03)),
        trace_no=_number_text(inner.get(0xDF0A), 6),
        voucher_no=_number_text(inner.get(0xDF10), 6),
        batch_no=_number_text(inner.get(0xDF11), 6),
        terminal_id=_text(inner.get(0xDF12)),
        merchant_id=_text(inner.get(0xDF13)),
        original_voucher_no=_number_text(inner.get(0xDF18), 6),
        original_trace_no=_number_text(inner.get(0xDF19), 6),
        rrn=_text(inner.get(0xDF1A)),
        auth_code=_text(inner.get(0xDF1B)),
        date_mmdd=_number_text(inner.get(0xDF1C), 4),
        time_hhmmss=_number_text(inner.get(0xDF1D), 6),
        card=mask_pan(_text(inner.get(0xDF1E))),
        card_type_code=card_type.hex() if card_type else None,
        card_name=_free_text(inner.get(0xDF2C)),
        entry_mode_code=_number_text(inner.get(0xDF2F), 4),
        merchant_name_en=_free_text(inner.get(0xDF44)),
        merchant_name=_free_text(inner.get(0xDF45)),
        desk_no=_free_text(inner.get(0xDF46)),
        operator=_free_text(inner.get(0xDF47)),
        order_no=_text(inner.get(0xDF69)),
        debit_amount_minor=debit_amount,
        debit_count=debit_count,
        credit_amount_minor=credit_amount,
        credit_count=credit_count,
        scheme_totals=schemes,
    )


def entry_mode(code: str | None) -> str | None:
    """DF2F (``0PPC``) -> the event's entry mode; None when unknown (00) or unmapped."""
    if code is None or len(code) != 4:
        return None
    return ENTRY_MODES_BY_CODE.get(code[1:3])


# --------------------------------------------------------------------------
# Encoding (simulator)
# --------------------------------------------------------------------------

def _ascii_field(text: str) -> bytes:
    return text.encode("ascii")


def _gbk_field(text: str) -> bytes:
    return text.encode("gb18030")


def encode_response(result: EcrResult, *, lrc_init: int = 0x00, lrc_covers: LrcCoverage = "len_to_etx",
                    ack: bool = False) -> bytes:
    """A full response frame for ``result`` (sale, void, refund, settlement ...).

    Encodings follow the captured frames: DF0A/DF10/DF18 as 3-byte BCD,
    DF03 as ``RMB -0.20`` text, ids and date/time as ASCII, names in GBK.
    Settlement amounts use 6 BCD bytes and counts 3 BCD bytes, as the ECR
    side packs its own numbers (no captured settlement frame exists).
    ``None`` fields are left out. ``result.card`` is written as given: pass
    a masked number.
    """
    r = result
    inner: list[bytes] = []

    def add(tag: int, value: bytes | None) -> None:
        if value is not None:
            inner.append(encode_tlv(tag, value))

    def bcd(text: str | None, width: int | None = None) -> bytes | None:
        return encode_bcd(text, width) if text is not None else None

    def asc(text: str | None) -> bytes | None:
        return _ascii_field(text) if text is not None else None

    def gbk(text: str | None) -> bytes | None:
        return _gbk_field(text) if text is not None else None

    def amount12(minor: int | None) -> bytes | None:
        return encode_bcd(f"{minor:012d}", 6) if minor is not None else None

    def count3(n: int | None) -> bytes | None:
        return encode_bcd(f"{n:06d}", 3) if n is not None else None

    add(0xDF02, bcd(r.tran_code, 1))
    add(0xDF46, asc(r.desk_no))
    add(0xDF47, asc(r.operator))
    add(0xDF11, asc(r.batch_no))
    add(0xDF12, asc(r.terminal_id))
    add(0xDF13, asc(r.merchant_id))
    add(0xDF44, asc(r.merchant_name_en))
    add(0xDF45, gbk(r.merchant_name))
    if r.amount is not None:
        add(0xDF03, format_amount(r.amount.minor, negative=r.amount.negative,
                                  currency=r.amount.currency or "CNY"))
    add(0xDF0A, bcd(r.trace_no, 3))
    add(0xDF10, bcd(r.voucher_no, 3))
    add(0xDF18, bcd(r.original_voucher_no, 3))
    add(0xDF19, bcd(r.original_trace_no, 3))
    add(0xDF1A, asc(r.rrn))
    add(0xDF1B, asc(r.auth_code))
    add(0xDF1C, asc(r.date_mmdd))
    add(0xDF1D, asc(r.time_hhmmss))
    add(0xDF1E, asc(r.card))
    add(0xDF21, bytes.fromhex(r.card_type_code) if r.card_type_code is not None else None)
    add(0xDF2C, gbk(r.card_name))
    add(0xDF2F, bcd(r.entry_mode_code, 2))
    add(0xDF69, asc(r.order_no))
    add(0xDF25, amount12(r.debit_amount_minor))
    add(0xDF26, count3(r.debit_count))
    add(0xDF27, amount12(r.credit_amount_minor))
    add(0xDF28, count3(r.credit_count))
    tags_by_scheme = {name: tags for name, *tags in SCHEME_TAGS}
    for totals in r.scheme_totals:
        d_amt, d_cnt, c_amt, c_cnt = tags_by_scheme[totals.scheme]
        add(d_amt, amount12(totals.debit_amount_minor))
        add(d_cnt, count3(totals.debit_count))
        add(c_amt, amount12(totals.credit_amount_minor))
        add(c_cnt, count3(totals.credit_count))

    top = [encode_tlv(0xDF01, encode_bcd(r.packet_type or "02", 1))]
    if r.tran_code is not None:
        top.append(encode_tlv(0xDF02, encode_bcd(r.tran_code, 1)))
    top.append(encode_tlv(0xDF04, encode_bcd(r.random or "0000")))
    if inner:
        top.append(encode_tlv(0xDF06, b"".join(inner)))
    code = r.response_code
    if code is not None:
        top.append(encode_tlv(0xDF07, code.encode("ascii") if len(code) == 2 else bytes.fromhex(code)))
    return encode_frame(b"".join(top), lrc_init=lrc_init, lrc_covers=lrc_covers, ack=ack)


# --------------------------------------------------------------------------
# The decoder
# --------------------------------------------------------------------------

# Outcome of looking at the candidate frame at the front of the buffer.
_NEED_MORE: Final = 0
_NOT_A_FRAME: Final = 1     # the STX byte was just data: drop it, hunt on
_BROKEN: Final = 2          # looked like a frame (length, DFxx body) but fell apart: drop STX, hunt on
_BAD_LRC: Final = 3         # complete and well-formed, checksum wrong: drop the whole frame
_FRAME: Final = 4


class CnEcrDecoder:
    """Bytes from the POS<->ECR serial line in, :class:`Transaction` / :class:`Settlement` out.

    Options: ``lrc_init`` (0x00 or 0x7F by vendor), ``lrc_covers``
    (``len_to_etx`` per the vendor source, ``body_to_etx``, ``stx_to_etx``),
    ``verify_lrc``, ``max_body`` (the terminal refuses more than 1024),
    ``type_map`` (DF02 code -> kind, ``settlement`` or ``ignore``; default
    :data:`DEFAULT_TYPE_MAP`), ``currency`` (when DF03 has no label) and
    ``reference`` (receive time used when ``feed`` gets none).

    Mapping choices:

    * ``amount_minor`` is DF03 without its sign; the kind carries the sign.
      A balance inquiry moves no money, so its amount is 0 (the card
      holder's balance is not the shop's business).
    * A response without an amount (error packets, status) yields no event.
    * A settlement is emitted only when approved: a failed 结算 leaves the
      batch open. ``count`` = debit count + credit count; ``total_minor`` =
      debit (sales) amount minus credit (returns) amount; from DF25-DF28
      when present, else summed over the per-scheme totals; ``balanced`` is
      None because the frame carries no such flag.
    """

    protocol = "cn_ecr"

    def __init__(self, *, tz: tzinfo, source: str | None = None,
                 lrc_init: int = 0x00, lrc_covers: LrcCoverage = "len_to_etx", verify_lrc: bool = True,
                 max_body: int = MAX_BODY, type_map: Mapping[str, str] | None = None,
                 currency: str = "CNY", reference: datetime | None = None) -> None:
        if not 0 <= lrc_init <= 0xFF:
            raise ValueError(f"lrc_init must be a byte value 0..255 (got {lrc_init})")
        if lrc_covers not in LRC_COVERAGES:
            raise ValueError(f"lrc_covers must be one of {', '.join(LRC_COVERAGES)} (got {lrc_covers!r})")
        # Four BCD digits cannot say more than 9999.
        if not 1 <= max_body <= 9999:
            raise ValueError(f"max_body must be 1..9999 (got {max_body})")
        if reference is not None and reference.tzinfo is None:
            raise ValueError("reference must be timezone-aware")
        mapping = dict(DEFAULT_TYPE_MAP if type_map is None else type_map)
        for code, target in mapping.items():
            if target not in TYPE_TARGETS:
                raise ValueError(
                    f"type_map[{code!r}] must be one of {', '.join(TYPE_TARGETS)} (got {target!r})")
        self.tz = tz
        self.source = source or self.protocol
        self.lrc_init = lrc_init
        self.lrc_covers = lrc_covers
        self.verify_lrc = verify_lrc
        self.max_body = max_body
        self.max_frame = max_body + FRAME_OVERHEAD
        self.type_map: Mapping[str, str] = MappingProxyType(mapping)
        self.currency = currency
        self.reference = reference
        self.stats = DecoderStats()
        # LRC start offset relative to the STX; it always runs to the ETX inclusive.
        self._lrc_from = {"len_to_etx": 1, "body_to_etx": 3, "stx_to_etx": 0}[lrc_covers]
        # At most one candidate frame, held between feeds: noise before an STX
        # is dropped at once, and anything max_frame long is decided.
        self._buf = b""
        # Offset (from the candidate's STX) of its next TLV header still to
        # check, so a frame arriving byte by byte is not re-walked from the start.
        self._walk = 3
        # Bytes still covered by the last candidate that fell apart: a
        # spurious STX inside a broken frame is the same loss, not another.
        self._shadow = 0
        # Raw value -> decoded value for the fields a terminal repeats in
        # nearly every frame (terminal id, batch, operator, card name, the
        # shop's prices); see _remember for what may be kept.
        self._texts: dict[bytes | None, str | None] = {}
        self._ids: dict[bytes | None, str | None] = {}
        self._names: dict[bytes | None, str | None] = {}
        self._amounts: dict[bytes | None, tuple[int, bool, str | None] | None] = {}

    # -- public contract ---------------------------------------------------

    @property
    def buffered(self) -> int:
        """Bytes held back waiting for the rest of a frame (never more than ``max_frame``)."""
        return len(self._buf)

    def feed(self, data: bytes, received: datetime | None = None) -> list[Event]:
        if received is not None and received.tzinfo is None:
            raise ValueError("received must be timezone-aware")
        self.stats.bytes_in += len(data)
        out: list[Event] = []
        if not data:
            return out
        if not isinstance(data, bytes):
            data = bytes(data)
        pos = 0
        held = self._buf
        if held:
            # The held candidate plus max_frame new bytes is enough to decide
            # it, so the join stays small whatever the size of ``data``.
            work = held + data[:self.max_frame]
            stop = self._scan(work, 0, out, received, final=False)
            if len(data) <= self.max_frame:
                self._buf = work[stop:]
                return out
            # Whatever is left starts in ``data``: a candidate still starting
            # in ``held`` would have max_frame bytes after it, and be decided.
            pos = stop - len(held)
        # Frames are decoded where they lie in ``data``: no copy per frame.
        stop = self._scan(data, pos, out, received, final=False)
        self._buf = data[stop:]
        return out

    def flush(self, received: datetime | None = None) -> list[Event]:
        """End of input: a partial frame will never complete, so hunt through it and drop the rest."""
        out: list[Event] = []
        self._scan(self._buf, 0, out, received, final=True)
        self._buf = b""
        return out

    # -- framing -----------------------------------------------------------

    def _scan(self, buf: bytes, pos: int, out: list[Event], received: datetime | None, *, final: bool) -> int:
        """Decode every frame ``buf[pos:]`` settles; return where the undecided rest starts."""
        stats = self.stats
        end = len(buf)
        # Where the shadow of the last broken candidate ends, as an offset in buf.
        shadow_end = pos + self._shadow
        while pos < end:
            if buf[pos] != STX:
                nxt = buf.find(STX, pos)
                stop = end if nxt < 0 else nxt
                # An ACK/NAK is a protocol byte only between frames; inside a
                # broken frame a 0x06 is just part of the loss.
                first = min(stop, max(pos, shadow_end))
                acks = buf.count(ACK, first, stop)
                naks = buf.count(NAK, first, stop)
                if acks:
                    stats.bump("ack", acks)
                if naks:
                    stats.bump("nak", naks)
                stats.bytes_skipped += stop - pos - acks - naks
                pos = stop
                self._walk = 3
                continue
            verdict, body_len, why = self._examine(buf, pos, end)
            if verdict == _FRAME:
                etx = pos + 3 + body_len
                self._walk = 3
                shadow_end = 0
                self._frame(buf, pos + 3, etx, out, received)
                pos = etx + 2
                continue
            if verdict == _NEED_MORE:
                if not final:
                    break
                # Only a candidate with a plausible length and a DFxx body
                # counts as a lost frame; a lone STX byte is just noise.
                looked_like_frame = body_len > 0 and end - pos >= 4
                verdict = _BROKEN if looked_like_frame else _NOT_A_FRAME
                why = f"{body_len}-byte frame cut short by the end of input"
            self._walk = 3
            if verdict == _BAD_LRC:
                stats.bad_frames += 1
                stats.bytes_skipped += body_len + FRAME_OVERHEAD
                stats.last_error = why
                pos += body_len + FRAME_OVERHEAD
                continue
            if verdict == _BROKEN and shadow_end <= pos:
                stats.bad_frames += 1
                stats.last_error = why
                shadow_end = pos + body_len + FRAME_OVERHEAD
            stats.bytes_skipped += 1
            pos += 1
        self._shadow = max(0, shadow_end - pos)
        return pos

    def _examine(self, buf: bytes, s: int, end: int) -> tuple[int, int, str]:
        """Judge the candidate at buf[s] == STX from the bytes up to ``end``."""
        avail = end - s
        if avail < 2:
            return _NEED_MORE, 0, ""
        hi = _BCD_BYTE[buf[s + 1]]
        if hi < 0:
            return _NOT_A_FRAME, 0, ""
        if avail < 3:
            return _NEED_MORE, 0, ""
        lo = _BCD_BYTE[buf[s + 2]]
        if lo < 0:
            return _NOT_A_FRAME, 0, ""
        body_len = hi * 100 + lo
        if body_len == 0:
            return _NOT_A_FRAME, 0, ""
        if avail < 4:
            return _NEED_MORE, body_len, ""
        if buf[s + 3] != TAG_PREFIX:
            return _NOT_A_FRAME, 0, ""
        if body_len > self.max_body:
            return _BROKEN, body_len, f"{body_len}-byte frame over the {self.max_body}-byte limit skipped"
        etx = s + 3 + body_len
        # Walk the top-level TLV headers; a header that is not DFxx, or a
        # value that runs past the ETX the length promises, proves the
        # length (or the frame) wrong before all of it has arrived.
        p = s + self._walk
        while p < etx:
            if p >= end:
                self._walk = p - s
                return _NEED_MORE, body_len, ""
            if buf[p] != TAG_PREFIX:
                return _BROKEN, body_len, f"TLV body broken at byte {p - s - 3} of a {body_len}-byte frame"
            if p + 3 > end:
                self._walk = p - s
                return _NEED_MORE, body_len, ""
            first = buf[p + 2]
            if first < 0x80:
                p += 3 + first
            elif first == 0x81:
                if p + 4 > end:
                    self._walk = p - s
                    return _NEED_MORE, body_len, ""
                p += 4 + buf[p + 3]
            elif first == 0x82:
                if p + 5 > end:
                    self._walk = p - s
                    return _NEED_MORE, body_len, ""
                p += 5 + ((buf[p + 3] << 8) | buf[p + 4])
            else:
                return _BROKEN, body_len, f"bad TLV length form {first:#04x} in a {body_len}-byte frame"
            if p > etx:
                return _BROKEN, body_len, f"TLV runs past the end of a {body_len}-byte frame"
        self._walk = p - s
        if end <= etx:
            return _NEED_MORE, body_len, ""
        if buf[etx] != ETX:
            return _BROKEN, body_len, f"no ETX after a {body_len}-byte body"
        if end <= etx + 1:
            return _NEED_MORE, body_len, ""
        if self.verify_lrc:
            computed = lrc(buf[s + self._lrc_from:etx + 1], self.lrc_init)
            stored = buf[etx + 1]
            if computed != stored:
                return _BAD_LRC, body_len, (f"LRC mismatch (stored {stored:02x}, computed {computed:02x}): "
                                            f"{body_len}-byte frame skipped")
        return _FRAME, body_len, ""

    # -- content -----------------------------------------------------------

    def _frame(self, buf: bytes, start: int, stop: int, out: list[Event], received: datetime | None) -> None:
        """The body buf[start:stop], whose top-level TLV list :meth:`_examine` has walked to its end."""
        top: dict[int, bytes] = {}
        p = start
        while p < stop:
            first = buf[p + 2]
            if first < 0x80:
                value = p + 3
            elif first == 0x81:
                value, first = p + 4, buf[p + 3]
            else:
                value, first = p + 5, (buf[p + 3] << 8) | buf[p + 4]
            top[0xDF00 | buf[p + 1]] = buf[value:value + first]
            p = value + first
        packet_type = _number_text(top.get(0xDF01), 2)
        try:
            inner = _inner_tlvs(top, packet_type)
        except TlvError as exc:
            self.stats.bad_frames += 1
            self.stats.bytes_skipped += stop - start + FRAME_OVERHEAD
            self.stats.last_error = f"DF06 container broken: {exc}"
            return
        self.stats.frames += 1
        event = self._event(packet_type, top, inner, received)
        if event is None:
            self.stats.ignored_frames += 1
        else:
            out.append(event)
            self.stats.events += 1

    def _ignore(self, counter: str, why: str | None = None) -> None:
        self.stats.bump(counter)
        if why is not None:
            self.stats.last_error = why

    def _event(self, packet_type: str | None, top: Mapping[int, bytes], inner: Mapping[int, bytes],
               received: datetime | None) -> Event | None:
        """The event for one frame, decoding only the fields it carries (same values as :func:`parse_body`)."""
        if packet_type == "00":
            self._ignore("requests")
            return None
        if packet_type == "01":
            self._ignore("host_messages")
            return None
        tran_code = _number_text(inner.get(0xDF02) or top.get(0xDF02), 2)
        target = self.type_map.get(tran_code) if tran_code is not None else None
        if target is None:
            self._ignore("unmapped_type",
                         f"transaction type {tran_code!r} is not in type_map; frame ignored")
            return None
        if target == "ignore":
            self._ignore("ignored_type")
            return None
        response_code = _response_code(top.get(0xDF07) or inner.get(0xDF07))
        approved = response_code in APPROVED_CODES
        if target == "settlement" and not approved:
            self._ignore("settlement_declined",
                         f"settlement refused by the terminal (response {response_code!r})")
            return None
        get = inner.get
        amounts = self._amounts
        raw = get(0xDF03)
        amount = amounts[raw] if raw in amounts else _remember(amounts, raw, _amount_parts(raw))
        if amount is None and target != "balance" and target != "settlement":
            self._ignore("no_amount")
            return None
        when = self._time(get(0xDF1C), get(0xDF1D), received)
        currency = (amount[2] if amount is not None else None) or self.currency
        if target == "settlement":
            count, total = _settlement_totals(*_read_totals(inner))
            return Settlement(
                source=self.source, time=when, terminal_id=_text(get(0xDF12)),
                merchant_id=_text(get(0xDF13)), batch_no=_number_text(get(0xDF11), 6),
                count=count, total_minor=total, currency=currency, balanced=None,
            )
        texts, ids, names = self._texts, self._ids, self._names
        raw = get(0xDF12)
        terminal_id = texts[raw] if raw in texts else _remember(texts, raw, _text(raw))
        raw = get(0xDF11)
        batch_no = ids[raw] if raw in ids else _remember(ids, raw, _number_text(raw, 6))
        raw = get(0xDF47)
        operator = names[raw] if raw in names else _remember(names, raw, _free_text(raw))
        raw = get(0xDF2C)
        card_type = names[raw] if raw in names else _remember(names, raw, _free_text(raw))
        if card_type is None:
            code = get(0xDF21)
            card_type = code.hex() if code else None
        entry = get(0xDF2F)
        return Transaction(
            source=self.source, kind=target, result="approved" if approved else "declined",
            # A balance inquiry moves no money: the card holder's balance is not the shop's business.
            amount_minor=0 if target == "balance" or amount is None else amount[0],
            time=when,
            terminal_id=terminal_id,
            merchant_id=_text(get(0xDF13)),
            batch_no=batch_no,
            voucher_no=_number_text(get(0xDF10), 6),
            trace_no=_number_text(get(0xDF0A), 6),
            rrn=_text(get(0xDF1A)),
            auth_code=_text(get(0xDF1B)),
            original_voucher_no=_number_text(get(0xDF18), 6),
            currency=currency,
            card=mask_pan(_text(get(0xDF1E))),
            card_type=card_type,
            entry_mode=entry_mode(_number_text(entry, 4)) if entry is not None else None,
            operator=operator,
        )

    def _time(self, date_field: bytes | None, clock_field: bytes | None,
              received: datetime | None) -> datetime | None:
        anchor = received if received is not None else self.reference
        if anchor is None:
            return None
        date, clock = _number_text(date_field, 4), _number_text(clock_field, 6)
        if date is None or clock is None or len(date) != 4 or len(clock) != 6:
            return None
        # Both are ASCII digit strings here, so arithmetic splits them like slicing would.
        month, day = divmod(int(date), 100)
        hour, rest = divmod(int(clock), 10_000)
        minute, second = divmod(rest, 100)
        if hour > 23 or minute > 59 or second > 59:
            return None
        return infer_datetime(month, day, hour, minute, second, tz=self.tz, received=anchor)


_MEMO_ENTRIES: Final = 256
_Decoded = TypeVar("_Decoded")


def _remember(memo: dict[bytes | None, _Decoded], raw: bytes | None, decoded: _Decoded) -> _Decoded:
    """Keep ``raw -> decoded`` in a bounded memo and return ``decoded``.

    Only values shorter than the shortest card number are kept, so a memo
    never holds a PAN that reached a field it should not be in.
    """
    if raw is None or len(raw) < _SHORTEST_PAN:
        if len(memo) >= _MEMO_ENTRIES:
            memo.clear()
        memo[raw] = decoded
    return decoded


def _settlement_totals(overall: _TotalsRow, schemes: tuple[SchemeTotals, ...]) -> tuple[int | None, int | None]:
    """``count`` = debit + credit counts, ``total`` = debit - credit amounts: DF25-DF28, else the schemes summed."""
    if any(v is not None for v in overall):
        rows: Iterable[_TotalsRow] = [overall]
    elif schemes:
        rows = [(s.debit_amount_minor, s.debit_count, s.credit_amount_minor, s.credit_count) for s in schemes]
    else:
        return None, None
    count = total = 0
    for d_amt, d_cnt, c_amt, c_cnt in rows:
        count += (d_cnt or 0) + (c_cnt or 0)
        total += (d_amt or 0) - (c_amt or 0)
    return count, total


__all__ = [
    "APPROVED_CODES", "DEFAULT_TYPE_MAP", "ENTRY_MODES_BY_CODE", "Amount", "CnEcrDecoder", "EcrResult",
    "SchemeTotals", "TlvError", "bcd_digits", "encode_bcd", "encode_frame", "encode_response", "encode_tlv",
    "entry_mode", "format_amount", "lrc", "parse_amount", "parse_body", "parse_tlv",
]
