"""ZVT APDU contents: BMPs (tag + fixed, LLVAR or LLLVAR value), the BER-TLV container (BMP 06), and
the field values they hold (BCD numbers, masked card numbers, text in the terminal's charset)."""

from __future__ import annotations

import binascii
import codecs
from collections.abc import Callable
from dataclasses import dataclass
from operator import itemgetter
from typing import Final

from drivers.pan import mask_pan, scrub_text

# Status APDU shapes remembered per decoder (one per APDU length), and the
# most BMPs one may hold: real ones carry 10-30, and a hostile 64 KB APDU of
# one-byte BMPs must not pin megabytes of positions.
MAX_LAYOUTS: Final = 16
MAX_LAYOUT_BMPS: Final = 64
# --------------------------------------------------------------------------
# BMP table (ZVT spec, "bitmaps"). Values: byte count of a fixed field, or
# one of the markers below.
_LLVAR: Final = -2
_LLLVAR: Final = -3
_TLV: Final = -1

_BMP_LEN: Final[dict[int, int]] = {
    0x01: 1, 0x02: 1, 0x03: 1, 0x04: 6, 0x05: 1, 0x06: _TLV, 0x0B: 3, 0x0C: 3, 0x0D: 2,
    0x0E: 2, 0x17: 2, 0x19: 1, 0x22: _LLVAR, 0x23: _LLVAR, 0x24: _LLLVAR, 0x27: 1, 0x29: 4,
    0x2A: 15, 0x2D: _LLVAR, 0x2E: _LLLVAR, 0x37: 3, 0x3A: 2, 0x3B: 8, 0x3C: _LLLVAR,
    0x3D: 3, 0x49: 2, 0x60: _LLLVAR, 0x87: 2, 0x88: 3, 0x8A: 1, 0x8B: _LLVAR, 0x8C: 1,
    0x92: _LLLVAR, 0x9A: _LLLVAR, 0xA0: 1, 0xA7: _LLVAR, 0xAA: 3, 0xAF: _LLLVAR, 0xBA: 5,
    0xD0: 1, 0xD1: _LLVAR, 0xD2: 1, 0xD3: 1, 0xE0: 1, 0xE9: 1, 0xEA: 1, 0xEB: 8, 0xF0: 1,
    0xF9: 1, 0xFA: 1, 0xFB: 1, 0xFC: 1,
    **{tag: _LLVAR for tag in range(0xE1, 0xE9)},
    **{tag: _LLVAR for tag in range(0xF1, 0xF9)},
}

_BMP_SPEC: Final[tuple[int | None, ...]] = tuple(_BMP_LEN.get(tag) for tag in range(256))
# Tag byte plus value for fixed-length BMPs, 0 for the others.
_BMP_FIXED_SIZE: Final[tuple[int, ...]] = tuple(1 + spec if spec is not None and spec >= 0 else 0
                                                for spec in _BMP_SPEC)
# LLVAR/LLLVAR length bytes F0..F9 carry one decimal digit each; -1 marks anything else.
_LL_DIGIT: Final[tuple[int, ...]] = tuple(b & 0x0F if b >> 4 == 0xF and b & 0x0F <= 9 else -1
                                          for b in range(256))
# One packed-BCD byte as 0..99; -1 when a nibble is not a decimal digit.
_BCD_BYTE: Final[tuple[int, ...]] = tuple((b >> 4) * 10 + (b & 0x0F) if b >> 4 <= 9 and b & 0x0F <= 9 else -1
                                          for b in range(256))

# TLV tags used here (ZVT TLV is BER-coded: multi-byte tags, bit 0x20 = constructed).
_TAG_TEXT_LINE: Final = 0x07
_TAG_LINE_ATTR: Final = 0x09
_TAG_CHARSET: Final = 0x14
_TAG_CARD_TECH: Final = 0x1F12
_MAX_TLV_DEPTH: Final = 8

_CARD_TECHNOLOGY: Final[dict[int, str]] = {0x00: "swipe", 0x01: "chip", 0x02: "contactless"}

# BMP 8A card types that public implementations agree on; others stay None
# rather than a guessed name.
_CARD_TYPE_NAMES: Final[dict[int, str]] = {
    0x05: "girocard", 0x06: "Mastercard", 0x08: "American Express", 0x0A: "VISA",
    0x0C: "Diners", 0x0D: "V PAY", 0x2E: "Maestro",
}

# ISO 4217 numeric -> alpha, for BMP 49 (the currency code a ZVT terminal sends).
NUMERIC_CURRENCY: Final[dict[int, str]] = {
    978: "EUR", 156: "CNY", 840: "USD", 344: "HKD", 826: "GBP", 392: "JPY", 756: "CHF",
    985: "PLN", 203: "CZK", 348: "HUF", 208: "DKK", 752: "SEK", 578: "NOK", 946: "RON",
    975: "BGN",
}
ALPHA_CURRENCY: Final[dict[str, int]] = {v: k for k, v in NUMERIC_CURRENCY.items()}
# BMP 49 as it arrives (2 BCD bytes) -> alpha code, so a known currency costs one lookup.
_CURRENCY_BY_BCD: Final[dict[bytes, str]] = {
    bytes.fromhex(f"{number:04d}"): alpha for number, alpha in NUMERIC_CURRENCY.items()}

# German DIN 66003 variant used by some terminals ("ZVT 7-bit").
_ZVT7_TABLE: Final = {0x5B: "Ä", 0x5C: "Ö", 0x5D: "Ü", 0x7B: "ä", 0x7C: "ö", 0x7D: "ü", 0x7E: "ß"}


@dataclass(frozen=True, slots=True)
class Bmps:
    """The BMPs of one APDU: raw values (LL/LLL prefixes removed), TLV primitives in order."""

    fields: dict[int, bytes]
    tlv: tuple[tuple[int, bytes], ...]
    complete: bool  # False when an unknown or cut-off BMP ended parsing early


def _ber_len(data: bytes, pos: int, end: int) -> tuple[int, int] | None:
    """(length, position after the length bytes) or None when malformed."""
    if pos >= end:
        return None
    first = data[pos]
    if first < 0x80:
        return first, pos + 1
    count = first & 0x7F
    if count not in (1, 2) or pos + 1 + count > end:
        return None
    return int.from_bytes(data[pos + 1:pos + 1 + count], "big"), pos + 1 + count


def parse_ber_tlv(data: bytes, start: int = 0, end: int | None = None) -> tuple[list[tuple[int, bytes]], bool]:
    """Primitive (tag, value) pairs in document order, constructed tags flattened.

    Returns ``(items, complete)``; a malformed element stops the walk but
    keeps what came before it.
    """
    items: list[tuple[int, bytes]] = []
    stack: list[tuple[int, int]] = [(start, len(data) if end is None else end)]
    complete = True
    while stack:
        pos, stop = stack.pop()
        while pos < stop:
            first = data[pos]
            tag = first
            pos += 1
            if first & 0x1F == 0x1F:
                while pos < stop and data[pos] & 0x80:
                    tag = (tag << 8) | data[pos]
                    pos += 1
                if pos >= stop:
                    return items, False
                tag = (tag << 8) | data[pos]
                pos += 1
            parsed = _ber_len(data, pos, stop)
            if parsed is None or parsed[1] + parsed[0] > stop:
                return items, False
            length, vpos = parsed
            if first & 0x20:
                if len(stack) >= _MAX_TLV_DEPTH:
                    complete = False
                else:
                    # Finish the rest of this level after the child: push it first.
                    stack.append((vpos + length, stop))
                    stack.append((vpos, vpos + length))
                    break
            else:
                items.append((tag, data[vpos:vpos + length]))
            pos = vpos + length
    return items, complete


def _scan_bmps(data: bytes, pos: int, trace: list[tuple[int, int, int, int]] | None = None,
               ) -> tuple[dict[int, bytes], list[tuple[int, bytes]], bool]:
    """(fields, TLV primitives, complete): what :func:`parse_bmps` returns, minus the wrapper.

    A flat loop over lookup tables; the first occurrence of a repeated BMP
    wins. ``trace`` collects (tag, tag position, value start, value end) of
    every BMP walked, for :class:`_Layout`.
    """
    fields: dict[int, bytes] = {}
    tlv: list[tuple[int, bytes]] = []
    complete = True
    n = len(data)
    fixed_size = _BMP_FIXED_SIZE
    spec_of = _BMP_SPEC
    digit = _LL_DIGIT
    while pos < n:
        tag = data[pos]
        size = fixed_size[tag]
        if size:
            # Fixed length, by far the commonest: store and move on.
            end = pos + size
            if end > n:
                return fields, tlv, False
            if tag not in fields:
                fields[tag] = data[pos + 1:end]
            if trace is not None:
                trace.append((tag, pos, pos + 1, end))
            pos = end
            continue
        spec = spec_of[tag]
        if spec is None:
            return fields, tlv, False
        tag_pos = pos
        pos += 1
        if spec == _LLVAR:
            if pos + 2 > n:
                return fields, tlv, False
            tens, ones = digit[data[pos]], digit[data[pos + 1]]
            if tens < 0 or ones < 0:
                return fields, tlv, False
            pos += 2
            end = pos + tens * 10 + ones
        elif spec == _LLLVAR:
            if pos + 3 > n:
                return fields, tlv, False
            hundreds, tens, ones = digit[data[pos]], digit[data[pos + 1]], digit[data[pos + 2]]
            if hundreds < 0 or tens < 0 or ones < 0:
                return fields, tlv, False
            pos += 3
            end = pos + hundreds * 100 + tens * 10 + ones
        else:
            parsed = _ber_len(data, pos, n)
            if parsed is None:
                return fields, tlv, False
            length, pos = parsed
            end = pos + length
        if end > n:
            return fields, tlv, False
        if trace is not None:
            trace.append((tag, tag_pos, pos, end))
        if tag == 0x06:
            items, ok = parse_ber_tlv(data, pos, end)
            tlv.extend(items)
            # A broken container still lets the BMPs after it be read.
            complete = complete and ok
        elif tag not in fields:
            fields[tag] = data[pos:end]
        pos = end
    return fields, tlv, complete


def parse_bmps(data: bytes, start: int = 0) -> Bmps:
    fields, tlv, complete = _scan_bmps(data, start)
    return Bmps(fields, tuple(tlv), complete)


@dataclass(frozen=True, slots=True)
class _Layout:
    """Where the BMPs sit in one status APDU, so the next APDU of the same shape
    is split by two C-level itemgetter calls instead of a Python loop per BMP.

    A terminal builds every status APDU from the same template, so the same
    layout keeps coming back. It is trusted only when every tag byte and every
    length byte sits at the same place with the same value: then the walk of
    :func:`_scan_bmps` would take exactly the same steps, and TLV containers
    are still parsed afresh.
    """

    headers: Callable[[bytes], tuple[int, ...]]   # tag and length bytes of every BMP
    expected: tuple[int, ...]
    tags: tuple[int, ...]                         # first occurrence of each tag, TLV aside
    values: Callable[[bytes], tuple[bytes, ...]]
    containers: tuple[tuple[int, int], ...]       # TLV (tag 06) value spans

    @staticmethod
    def learn(data: bytes, trace: list[tuple[int, int, int, int]]) -> _Layout | None:
        """The layout of a walk that reached the end of ``data``, else None."""
        if not trace or trace[-1][3] != len(data) or len(trace) > MAX_LAYOUT_BMPS:
            return None
        header_positions = [i for _, tag_pos, start, _ in trace for i in range(tag_pos, start)]
        tags: list[int] = []
        spans: list[slice] = []
        containers: list[tuple[int, int]] = []
        for tag, _, start, end in trace:
            if tag == 0x06:
                containers.append((start, end))
            elif tag not in tags:
                tags.append(tag)
                spans.append(slice(start, end))
        if len(header_positions) < 2 or len(spans) < 2:
            return None  # itemgetter of a single item returns it bare, not in a tuple
        headers = itemgetter(*header_positions)
        return _Layout(headers, headers(data), tuple(tags), itemgetter(*spans), tuple(containers))

    def split(self, data: bytes) -> tuple[dict[int, bytes], list[tuple[int, bytes]], bool] | None:
        """:func:`_scan_bmps` of ``data`` (same length as the learnt APDU), or None if the shape differs."""
        if self.headers(data) != self.expected:
            return None
        fields = dict(zip(self.tags, self.values(data), strict=True))
        tlv: list[tuple[int, bytes]] = []
        complete = True
        for start, end in self.containers:
            items, ok = parse_ber_tlv(data, start, end)
            tlv.extend(items)
            complete = complete and ok
        return fields, tlv, complete


def _bcd(value: bytes | None) -> str | None:
    if not value:
        return None
    digits = value.hex()
    return digits if digits.isdigit() else None


def _bcd_int(value: bytes | None) -> int | None:
    digits = _bcd(value)
    return None if digits is None else int(digits)


_PAN_NIBBLES: Final = bytes.maketrans(b"abcdef", b"***d*d")


def _pan_from_bcd(value: bytes | None) -> str | None:
    """BMP 22: BCD digits, E = masked digit, D = separator, F = padding."""
    if not value:
        return None
    # One C pass turns masked nibbles into "*" and both stop nibbles into "d".
    nibbles = binascii.hexlify(value).translate(_PAN_NIBBLES)
    cut = nibbles.find(b"d")
    if cut >= 0:
        nibbles = nibbles[:cut]
    if not nibbles:
        return None
    return mask_pan(nibbles.decode("ascii"))


def _ascii_field(value: bytes | None) -> str | None:
    if value is None:
        return None
    text = value.decode("latin-1").replace("\x00", " ").strip()
    return scrub_text(text) or None


def _charset_codec(name: str) -> str:
    if name.lower().replace("-", "").replace("_", "") in ("zvt7bit", "zvt7"):
        return "zvt7bit"
    return codecs.lookup(name).name


def _tlv_charset(code: int) -> str | None:
    """TLV tag 14: 1..15 select ISO 8859-n; other codes keep the configured default."""
    if 1 <= code <= 15:
        try:
            return codecs.lookup(f"iso8859-{code}").name
        except LookupError:
            return None
    return None


def decode_text(raw: bytes, codec: str) -> str:
    if codec == "zvt7bit":
        return bytes(b & 0x7F for b in raw).decode("ascii").translate(_ZVT7_TABLE)
    return raw.decode(codec, errors="replace")


def _clean_line(text: str) -> str:
    return scrub_text(text.replace("\x00", "").rstrip(" \r\n\t"))


def _ber_len_size(data: bytes, pos: int) -> int:
    return 1 if pos >= len(data) or data[pos] < 0x80 else 1 + (data[pos] & 0x7F)


def _trailing_tlv_start(data: bytes, start: int) -> int:
    """Where a print line's text ends: at a TLV container (06 + BER length) that
    runs exactly to the end of the APDU, else at the end."""
    n = len(data)
    i = data.find(b"\x06", start)
    while i >= 0:
        parsed = _ber_len(data, i + 1, n)
        if parsed is not None and parsed[1] + parsed[0] == n:
            return i
        i = data.find(b"\x06", i + 1)
    return n
