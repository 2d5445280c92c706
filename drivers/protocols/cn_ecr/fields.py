"""UnionPay-style ECR frame contents: the DFxx TLV body, its nested DF06 list, and field values
(BCD numbers, ASCII/GBK text, signed amounts with a currency label, settlement totals)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from drivers.events import KINDS
from drivers.pan import mask_pan, scrub_text
from drivers.protocols.cn_ecr.framing import TAG_PREFIX

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


_AMOUNT_TEXT = re.compile(
    r"^\s*([A-Za-z]{3})?\s*([+-]?)\s*(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d{1,2}))?\s*$"
, re.ASCII,
)



# Minor-unit digits: 12 is the ISO 8583 amount width; more is not an amount.
_MAX_AMOUNT_DIGITS = 12


class TlvError(ValueError):
    """A TLV list that does not follow the DFxx / 81 / 82 encoding."""


def parse_df_tlv(data: bytes | bytearray | memoryview) -> list[tuple[int, bytes]]:
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
    """``dict(parse_df_tlv(data))`` (the last of a repeated tag wins) without the list of pairs.

    Decoding a frame looks up a dozen tags in each of two lists, so the
    values go straight into a dict; a malformed list is handed to
    :func:`parse_df_tlv` so that the error, and its wording, are that function's.
    """
    out: dict[int, bytes] = {}
    end = len(data)
    p = 0
    # A header cut short by the end raises IndexError: same verdict as parse_df_tlv's
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
    parse_df_tlv(data)
    raise AssertionError("parse_df_tlv accepted a TLV list _tlv_map refused")  # pragma: no cover


def bcd_digits(value: bytes) -> str | None:
    """Packed BCD as its digit string; None when a nibble is not a digit."""
    text = value.hex()
    return text if text.isdigit() else None


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


def parse_amount_field(value: bytes | None) -> Amount | None:
    """DF03 and the settlement totals: ``"RMB -0.20"``, 12 ASCII digits of minor units, or 6 BCD bytes."""
    parts = _amount_parts(value)
    return Amount(*parts) if parts is not None else None


def _amount_parts(value: bytes | None) -> tuple[int, bool, str | None] | None:
    """:func:`parse_amount_field` as a plain tuple: the decoder needs no :class:`Amount` per frame."""
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
    amount = parse_amount_field(value)
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
        amount=parse_amount_field(inner.get(0xDF03)),
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
