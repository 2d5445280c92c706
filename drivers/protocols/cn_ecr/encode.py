"""UnionPay-style ECR encoders for the simulator and round-trip tests (pure functions)."""

from __future__ import annotations

from drivers.protocols.cn_ecr.fields import LABEL_BY_CURRENCY, SCHEME_TAGS, EcrResult
from drivers.protocols.cn_ecr.framing import ACK, ETX, STX, TAG_PREFIX, LrcCoverage, _lrc_span, lrc


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


def format_amount(minor: int, *, negative: bool = False, currency: str = "CNY") -> bytes:
    """The terminal's own text form: ``RMB -0.20`` / ``RMB  0.20`` (sign slot kept)."""
    label = LABEL_BY_CURRENCY.get(currency, currency)
    return f"{label} {'-' if negative else ' '}{minor // 100}.{minor % 100:02d}".encode("ascii")


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


def encode_request(tran_code: str, *, amount_minor: int | None, random: str = "0000", lrc_init: int = 0x00,
                   lrc_covers: LrcCoverage = "len_to_etx") -> bytes:
    """A request frame the till (ECR side) sends: DF01 00, DF02 the type, DF03 the amount as 12 BCD digits,
    DF04 the random number the answer echoes (the vendor's TlvCmdPack packs these as BCD)."""
    body = encode_tlv(0xDF01, b"\x00") + encode_tlv(0xDF02, encode_bcd(tran_code, 1))
    if amount_minor is not None:
        body += encode_tlv(0xDF03, encode_bcd(f"{amount_minor:012d}", 6))
    body += encode_tlv(0xDF04, encode_bcd(random))
    return encode_frame(body, lrc_init=lrc_init, lrc_covers=lrc_covers)
