"""ZVT (the German ECR <-> payment-terminal protocol), passive decoder.

Bytes in, events out; this module never transmits (a tap only listens).

Transports
    ``serial``  RS-232 frames ``DLE STX | APDU, each 0x10 doubled | DLE ETX |
                CRC-lo CRC-hi``; CRC-16/KERMIT over the unstuffed APDU plus
                ETX. Single ACK (0x06) / NAK (0x15) bytes between frames are
                normal line traffic, not garbage.
    ``tcp``     bare APDUs back to back (ZVT over TCP/IP has no framing and
                no checksum), so resynchronisation can only rely on plausible
                ``CLASS INSTR`` pairs.
    ``auto``    (default) bare APDUs until a DLE STX shows up where an APDU
                could start; from then on the stream is serial for good.
                Checksummed framing is preferred as soon as it is seen
                (gpsd's habit), and a serial stream never has to be declared.
                Caveat: a serial tap that starts in the middle of a frame is
                read as bare APDUs until the next DLE STX, and that tail can
                look like a command; a source known to be a tty should pass
                ``transport="serial"`` (a socket ``"tcp"``).

APDU: ``CLASS INSTR LEN data``; ``LEN = FF`` means two more length bytes,
low byte first. Data of 04 0F (status information) and most ECR commands is
a list of BMPs (one tag byte, then a fixed, LLVAR or LLLVAR value, or the
BER-length TLV container 06).

Event mapping
    04 0F with an amount       -> Transaction (sale, or whatever the ECR
                                  command before it asked for: 06 30 reversal,
                                  06 31 refund, 06 22 pre-auth, 06 24 book total)
    04 0F with BMP 37          -> Transaction(kind="reversal",
                                  original_voucher_no=<original trace>). ZVT
                                  has no voucher number; the pipeline matches
                                  original_voucher_no against voucher_no,
                                  receipt_no and trace_no, so the original
                                  trace (or the receipt number from 06 30) fits.
    04 0F after 06 50, or with BMP 60 individual totals -> Settlement
    06 D1 print lines / 06 D3 text blocks -> one ReceiptText per receipt
                                  (ends at a "last line" attribute, at 06 0F
                                  completion, or at flush)
    anything else well-formed  -> stats.ignored_frames

Money is integer minor units; the BCD amount already is. Terminal dates
have no year: ``infer_datetime`` places them near ``received`` (or the
``reference`` option when feed() got no receive time).
"""

from __future__ import annotations

import binascii
import codecs
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo
from operator import itemgetter
from typing import Final, Literal

from drivers.events import Event, ReceiptText, Settlement, Transaction
from drivers.pan import mask_pan, scrub_text
from drivers.protocols.base import DecoderStats
from drivers.timeutil import infer_datetime

Transport = Literal["serial", "tcp", "auto"]

DLE: Final = 0x10
STX: Final = 0x02
ETX: Final = 0x03
ACK: Final = 0x06
NAK: Final = 0x15
DLE_STX: Final = b"\x10\x02"
DLE_ETX: Final = b"\x10\x03"

# The protocol's own ceiling (extended length is two bytes).
MAX_APDU_DATA: Final = 0xFFFF
MAX_RECEIPT_LINES: Final = 2000
# Status APDU shapes remembered per decoder (one per APDU length), and the
# most BMPs one may hold: real ones carry 10-30, and a hostile 64 KB APDU of
# one-byte BMPs must not pin megabytes of positions.
MAX_LAYOUTS: Final = 16
MAX_LAYOUT_BMPS: Final = 64
POSITIVE_ACK: Final = b"\x80\x00\x00"

_MODE_AUTO: Final = 0
_MODE_SERIAL: Final = 1
_MODE_TCP: Final = 2

# --------------------------------------------------------------------------
# CRC-16/KERMIT. binascii.crc_hqx is the MSB-first twin (XMODEM, same poly,
# init 0); feeding it bit-reversed bytes and reversing the result gives the
# LSB-first variant at C speed instead of a Python loop per byte.
_REV8: Final = bytes(int(f"{i:08b}"[::-1], 2) for i in range(256))
_REV8_ETX: Final = bytes((_REV8[ETX],))


def crc_kermit(data: bytes) -> int:
    """CRC-16/KERMIT (poly 0x1021 reflected, init 0, no final XOR)."""
    crc = binascii.crc_hqx(data.translate(_REV8), 0)
    return (_REV8[crc & 0xFF] << 8) | _REV8[crc >> 8]


def _crc_kermit_etx(apdu: bytes) -> int:
    """crc_kermit(apdu + ETX) without building the concatenation."""
    crc = binascii.crc_hqx(_REV8_ETX, binascii.crc_hqx(apdu.translate(_REV8), 0))
    return (_REV8[crc & 0xFF] << 8) | _REV8[crc >> 8]


def _stuff(data: bytes) -> bytes:
    return data.replace(b"\x10", b"\x10\x10")


def frame_serial(apdu: bytes) -> bytes:
    """Wrap one APDU for RS-232: DLE STX, stuffed APDU, DLE ETX, CRC low byte first.

    The CRC bytes are stuffed too (what ecrterm and most terminals send); the
    decoder accepts either form.
    """
    crc = crc_kermit(apdu + b"\x03")
    return DLE_STX + _stuff(apdu) + DLE_ETX + _stuff(bytes((crc & 0xFF, crc >> 8)))


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

# ISO 4217 numeric -> alpha. drivers may not import agent.units, hence a copy.
NUMERIC_CURRENCY: Final[dict[int, str]] = {
    978: "EUR", 156: "CNY", 840: "USD", 344: "HKD", 826: "GBP", 392: "JPY", 756: "CHF",
    985: "PLN", 203: "CZK", 348: "HUF", 208: "DKK", 752: "SEK", 578: "NOK", 946: "RON",
    975: "BGN",
}
ALPHA_CURRENCY: Final[dict[str, int]] = {v: k for k, v in NUMERIC_CURRENCY.items()}
# BMP 49 as it arrives (2 BCD bytes) -> alpha code, so a known currency costs one lookup.
_CURRENCY_BY_BCD: Final[dict[bytes, str]] = {
    bytes.fromhex(f"{number:04d}"): alpha for number, alpha in NUMERIC_CURRENCY.items()}

# ECR commands whose 04 0F answer is not a plain sale.
_COMMAND_KIND: Final[dict[int, str]] = {
    0x01: "sale", 0x22: "preauth", 0x24: "preauth_complete", 0x30: "reversal", 0x31: "refund",
}
# These commands start with a 3-byte BCD password before their BMPs.
_PASSWORD_FIRST: Final = frozenset({0x30, 0x31, 0x50})

# Plausible APDU starts on a bare (TCP) stream; anything else is skipped.
_FIXED_INSTR: Final[dict[int, frozenset[int]]] = {
    0x04: frozenset({0x0F, 0xFF}), 0x05: frozenset({0x01}), 0x80: frozenset({0x00}),
}
_OPEN_CLASSES: Final = frozenset({0x06, 0x08, 0x84})
_RAW_START: Final = re.compile(b"[\x04\x05\x06\x08\x80\x84]")
_AUTO_START: Final = re.compile(b"[\x04\x05\x06\x08\x80\x84\x10\x15]")

# German DIN 66003 variant used by some terminals ("ZVT 7-bit").
_ZVT7_TABLE: Final = {0x5B: "Ä", 0x5C: "Ö", 0x5D: "Ü", 0x7B: "ä", 0x7C: "ö", 0x7D: "ü", 0x7E: "ß"}


@dataclass(frozen=True, slots=True)
class Bmps:
    """The BMPs of one APDU: raw values (LL/LLL prefixes removed), TLV primitives in order."""

    fields: dict[int, bytes]
    tlv: tuple[tuple[int, bytes], ...]
    complete: bool  # False when an unknown or cut-off BMP ended parsing early

    def tlv_first(self, tag: int) -> bytes | None:
        for t, value in self.tlv:
            if t == tag:
                return value
        return None


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


def parse_tlv(data: bytes, start: int = 0, end: int | None = None) -> tuple[list[tuple[int, bytes]], bool]:
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
            items, ok = parse_tlv(data, pos, end)
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
            items, ok = parse_tlv(data, start, end)
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


# --------------------------------------------------------------------------
@dataclass(slots=True)
class _Pending:
    """What the last ECR command asked for; shapes the 04 0F that answers it."""

    instr: int
    amount_minor: int | None = None
    receipt_no: str | None = None


class ZvtDecoder:
    """Sans-I/O ZVT decoder; see the module docstring for framing and mapping."""

    protocol = "zvt"

    def __init__(self, *, tz: tzinfo, source: str | None = None, transport: Transport = "auto",
                 charset: str = "cp437", max_apdu: int = MAX_APDU_DATA,
                 reference: datetime | None = None) -> None:
        if transport not in ("serial", "tcp", "auto"):
            raise ValueError(f"transport must be serial, tcp or auto (got {transport!r})")
        if not 3 <= max_apdu <= MAX_APDU_DATA:
            raise ValueError(f"max_apdu must be 3..{MAX_APDU_DATA} (got {max_apdu})")
        if reference is not None and reference.tzinfo is None:
            raise ValueError("reference must be timezone-aware")
        self.tz = tz
        self.source = source or "zvt"
        self.transport: Transport = transport
        self.codec = _charset_codec(charset)
        self.max_apdu = max_apdu
        self.reference = reference
        # Worst case on the wire: every APDU byte stuffed, plus DLE STX, DLE ETX, stuffed CRC.
        self.max_frame = 2 * (max_apdu + 5) + 8
        self.max_buffer = self.max_frame
        self.stats = DecoderStats()
        self._mode = {"auto": _MODE_AUTO, "serial": _MODE_SERIAL, "tcp": _MODE_TCP}[transport]
        self._buf = bytearray()
        self._resume = 0  # where the DLE scan of the frame at buffer start continues
        self._pending: _Pending | None = None
        self._lines: list[str] = []
        self._terminal_id: str | None = None
        self._layouts: dict[int, _Layout] = {}

    @property
    def buffered(self) -> int:
        """Bytes held back waiting for the rest of a frame (never above max_buffer)."""
        return len(self._buf)

    @property
    def framing(self) -> str:
        """The framing in use: serial, tcp, or auto while no DLE STX has been seen."""
        return {_MODE_AUTO: "auto", _MODE_SERIAL: "serial", _MODE_TCP: "tcp"}[self._mode]

    # -- public contract ---------------------------------------------------
    def feed(self, data: bytes, received: datetime | None = None) -> list[Event]:
        self.stats.bytes_in += len(data)
        out: list[Event] = []
        if data:
            self._buf += data
            self._run(final=False, received=received, out=out)
        return out

    def flush(self, received: datetime | None = None) -> list[Event]:
        out: list[Event] = []
        self._run(final=True, received=received, out=out)
        self._resume = 0
        self._end_receipt(received, out)
        return out

    # -- framing -------------------------------------------------------------
    def _run(self, *, final: bool, received: datetime | None, out: list[Event]) -> None:
        buf = self._buf
        pos = 0
        while pos < len(buf):
            before_mode = self._mode
            if self._mode == _MODE_SERIAL:
                pos = self._serial(buf, pos, final, received, out)
            else:
                pos = self._raw(buf, pos, final, received, out)
            if self._mode == before_mode:
                break
        if pos:
            del buf[:pos]
            self._resume = max(0, self._resume - pos)
        if len(buf) > self.max_buffer:  # defensive: the parsers already keep below this
            self._skip(len(buf), "buffer cap reached; bytes dropped")
            self.stats.bad_frames += 1
            buf.clear()
            self._resume = 0

    def _skip(self, n: int, why: str) -> None:
        if n > 0:
            self.stats.bytes_skipped += n
            self.stats.last_error = why

    def _skip_noise(self, buf: bytearray, start: int, end: int) -> None:
        """Bytes between serial frames: ACK/NAK are line traffic, the rest is garbage."""
        if end <= start:
            return
        chunk = buf[start:end]
        garbage = len(chunk) - chunk.count(ACK) - chunk.count(NAK)
        self._skip(garbage, "garbage between frames skipped")

    def _serial(self, buf: bytearray, pos: int, final: bool, received: datetime | None,
                out: list[Event]) -> int:
        n = len(buf)
        stats = self.stats
        while pos < n:
            start = buf.find(DLE_STX, pos)
            if start < 0:
                # A trailing DLE may be the first half of the next DLE STX.
                end = n - 1 if (buf[n - 1] == DLE and not final) else n
                self._skip_noise(buf, pos, end)
                self._resume = 0
                return end
            if start > pos:
                self._skip_noise(buf, pos, start)
                self._resume = 0
            pos = start
            scan = self._resume if self._resume > pos + 2 else pos + 2
            etx = -1
            rejected = False
            while True:
                j = buf.find(DLE, scan)
                if j < 0 or j + 1 >= n:
                    break
                follow = buf[j + 1]
                if follow == DLE:
                    scan = j + 2
                    continue
                if follow == ETX:
                    etx = j
                    break
                if follow == STX:
                    # A new frame starts inside this one: the first was cut off.
                    stats.bad_frames += 1
                    self._skip(j - pos, "frame cut off by a new DLE STX")
                    pos = j
                    scan = pos + 2
                    continue
                stats.bad_frames += 1
                rejected = True
                break
            if rejected:
                # Unstuffed DLE inside a frame: hunt again just past this DLE STX.
                self._skip(2, "unstuffed DLE inside a frame; resynchronising")
                self._resume = 0
                pos += 2
                continue
            if etx < 0:
                if n - pos > self.max_frame:
                    stats.bad_frames += 1
                    self._skip(2, f"frame longer than {self.max_frame} bytes; resynchronising")
                    self._resume = 0
                    pos += 2
                    continue
                if final:
                    stats.bad_frames += 1
                    stats.bump("truncated_frames")
                    self._skip(n - pos, "frame cut off at end of input")
                    self._resume = 0
                    return n
                self._resume = j if j >= 0 else n
                return pos
            apdu = bytes(buf[pos + 2:etx])
            if DLE in apdu:
                apdu = apdu.replace(b"\x10\x10", b"\x10")
            crc = _crc_kermit_etx(apdu)
            k = etx + 2
            lo, hi = crc & 0xFF, crc >> 8
            if lo != DLE and hi != DLE and k + 1 < n:
                # No stuffing possible: the two CRC bytes simply match or not.
                used: int | None = 2 if buf[k] == lo and buf[k + 1] == hi else -1
            else:
                used = _match_crc(buf, k, crc, final)
            if used is None:
                self._resume = etx
                return pos
            if used < 0:
                stats.bad_frames += 1
                stats.bump("crc_errors")
                # The frame is dropped whole; hunting resumes inside it in case
                # its DLE STX was garbage and a real frame starts later on.
                self._skip(2, "CRC mismatch; frame skipped")
                self._resume = 0
                pos += 2
                continue
            end = k + used
            self._resume = 0
            size = len(apdu)
            head = 3
            length = apdu[2] if size >= 3 else -1
            if length == 0xFF:
                head = 5
                length = apdu[3] | (apdu[4] << 8) if size >= 5 else -1
            if length < 0 or head + length != size:
                stats.bad_frames += 1
                stats.bump("apdu_length_mismatch")
                self._skip(end - pos, "APDU length does not match its serial frame")
            else:
                stats.frames += 1
                self._apdu(apdu[0], apdu[1], apdu[head:], received, out)
            pos = end
        return pos

    def _raw(self, buf: bytearray, pos: int, final: bool, received: datetime | None,
             out: list[Event]) -> int:
        n = len(buf)
        auto = self._mode == _MODE_AUTO
        finder = _AUTO_START if auto else _RAW_START
        stats = self.stats
        while pos < n:
            b0 = buf[pos]
            if auto:
                if b0 == DLE:
                    if pos + 1 >= n:
                        if not final:
                            return pos
                    elif buf[pos + 1] == STX:
                        self._mode = _MODE_SERIAL
                        return pos
                    self._skip(1, "garbage skipped")
                    pos += 1
                    continue
                if b0 == NAK:
                    pos += 1
                    continue
                if b0 == ACK:
                    # ACK before a serial frame, or the class byte of a bare 06 xx APDU?
                    if pos + 1 >= n and not final:
                        return pos
                    nxt = buf[pos + 1] if pos + 1 < n else -1
                    if nxt in (ACK, NAK, -1):
                        pos += 1
                        continue
                    if nxt == DLE:
                        if pos + 2 >= n and not final:
                            return pos
                        if pos + 2 < n and buf[pos + 2] == STX:
                            pos += 1
                            continue
            allowed = _FIXED_INSTR.get(b0)
            if allowed is None and b0 not in _OPEN_CLASSES:
                found = finder.search(buf, pos + 1)
                nxt_pos = found.start() if found else n
                self._skip(nxt_pos - pos, "garbage skipped")
                pos = nxt_pos
                continue
            if n - pos < 3:
                if not final:
                    return pos
                stats.bad_frames += 1
                stats.bump("truncated_apdus")
                self._skip(n - pos, "APDU header cut off at end of input")
                return n
            if allowed is not None and buf[pos + 1] not in allowed:
                self._skip(1, "implausible APDU header skipped")
                pos += 1
                continue
            length = buf[pos + 2]
            head = 3
            if length == 0xFF:
                if n - pos < 5:
                    if not final:
                        return pos
                    stats.bad_frames += 1
                    stats.bump("truncated_apdus")
                    self._skip(n - pos, "APDU header cut off at end of input")
                    return n
                length = buf[pos + 3] | (buf[pos + 4] << 8)
                head = 5
            if length > self.max_apdu:
                self._skip(1, f"APDU length {length} above the {self.max_apdu} cap; resynchronising")
                stats.bump("oversized_apdus")
                pos += 1
                continue
            end = pos + head + length
            if end > n:
                if not final:
                    return pos
                self._truncated_raw(bytes(buf[pos:n]), head, received, out)
                return n
            stats.frames += 1
            self._apdu(b0, buf[pos + 1], bytes(buf[pos + head:end]), received, out)
            pos = end
        return pos

    def _truncated_raw(self, apdu: bytes, head: int, received: datetime | None, out: list[Event]) -> None:
        """End of input inside a bare APDU.

        A status information whose present bytes still split into whole BMPs is
        used (a cut-off capture of a real payment is worth more than nothing;
        absent fields stay null). Anything else is dropped whole.
        """
        self.stats.bump("truncated_apdus")
        if apdu[0] == 0x04 and apdu[1] == 0x0F and parse_bmps(apdu, head).complete:
            self.stats.frames += 1
            self.stats.bump("truncated_status_used")
            self._apdu(0x04, 0x0F, apdu[head:], received, out)
            return
        self.stats.bad_frames += 1
        self._skip(len(apdu), "APDU cut off at end of input")

    # -- meaning -------------------------------------------------------------
    def _apdu(self, cls: int, ins: int, data: bytes, received: datetime | None, out: list[Event]) -> None:
        if cls == 0x04 and ins == 0x0F:
            self._status(data, received, out)
        elif cls == 0x06 and ins == 0xD1:
            self._print_line(data, received, out)
        elif cls == 0x06 and ins == 0xD3:
            self._text_block(data, received, out)
        elif cls == 0x06 and ins in (0x0F, 0x1E):
            # Completion or abort closes the command and anything it printed.
            self._end_receipt(received, out)
            self._pending = None
            self.stats.ignored_frames += 1
        elif cls == 0x06 and (ins in _COMMAND_KIND or ins == 0x50):
            self._command(ins, data)
            self.stats.ignored_frames += 1
        else:
            self.stats.ignored_frames += 1

    def _command(self, ins: int, data: bytes) -> None:
        fields, _, _ = _scan_bmps(data, 3 if ins in _PASSWORD_FIRST else 0)
        receipt = _bcd(fields.get(0x87))
        self._pending = _Pending(ins, _bcd_int(fields.get(0x04)), receipt)

    def _when(self, fields: dict[int, bytes], received: datetime | None) -> datetime | None:
        anchor = received or self.reference
        hms = fields.get(0x0C)  # BMP 0C is fixed at 3 bytes, 0D at 2
        if anchor is None or hms is None:
            return anchor
        bcd = _BCD_BYTE
        hour, minute, second = bcd[hms[0]], bcd[hms[1]], bcd[hms[2]]
        if hour < 0 or minute < 0 or second < 0:
            return anchor
        mmdd = fields.get(0x0D)
        month = day = -1
        if mmdd is not None:
            month, day = bcd[mmdd[0]], bcd[mmdd[1]]
        if month < 0 or day < 0:
            local = anchor.astimezone(self.tz)
            month, day = local.month, local.day
        if hour > 23 or minute > 59 or second > 59:
            self.stats.bump("bad_times")
            return anchor
        when = infer_datetime(month, day, hour, minute, second, tz=self.tz, received=anchor)
        if when is None:
            self.stats.bump("bad_dates")
            return anchor
        return when

    def _split_status(self, data: bytes) -> tuple[dict[int, bytes], list[tuple[int, bytes]], bool]:
        layout = self._layouts.get(len(data))
        if layout is not None:
            known = layout.split(data)
            if known is not None:
                return known
        trace: list[tuple[int, int, int, int]] = []
        parsed = _scan_bmps(data, 0, trace)
        layout = _Layout.learn(data, trace)
        if layout is not None:
            if len(self._layouts) >= MAX_LAYOUTS:
                self._layouts.clear()
            self._layouts[len(data)] = layout
        return parsed

    def _status(self, data: bytes, received: datetime | None, out: list[Event]) -> None:
        fields, tlv, complete = self._split_status(data)
        stats = self.stats
        if not complete:
            stats.bump("bmp_parse_stopped")
        get = fields.get
        tid = _bcd(get(0x29))
        if tid is not None:
            self._terminal_id = tid
        result = get(0x27)
        result_code = result[0] if result is not None else 0
        pending = self._pending
        currency_bcd = get(0x49)
        currency = None
        if currency_bcd is not None:
            currency = _CURRENCY_BY_BCD.get(currency_bcd)
            if currency is None and _bcd(currency_bcd) is not None:
                stats.bump("unknown_currency")
        amount = _bcd_int(get(0x04))

        if 0x60 in fields or (pending is not None and pending.instr == 0x50
                              and 0x22 not in fields and 0x8A not in fields and 0x8B not in fields):
            if result_code != 0:
                stats.bump("end_of_day_failed")
                stats.ignored_frames += 1
                return
            count, totals = _individual_totals(get(0x60))
            out.append(Settlement(source=self.source, time=self._when(fields, received),
                                  terminal_id=tid or self._terminal_id, count=count,
                                  total_minor=amount if amount is not None else totals, currency=currency))
            stats.events += 1
            return

        if amount is None and pending is not None:
            amount = pending.amount_minor
            if amount is not None:
                stats.bump("amount_from_command")
        if amount is None:
            stats.bump("status_without_amount")
            stats.ignored_frames += 1
            return

        kind = _COMMAND_KIND.get(pending.instr, "sale") if pending is not None else "sale"
        original = _bcd(get(0x37))
        if original is not None:
            kind = "reversal"
        elif kind == "reversal" and pending is not None:
            original = pending.receipt_no

        card_type = _ascii_field(get(0x8B))
        if card_type is None:
            card_code = get(0x8A)
            if card_code is not None:
                card_type = _CARD_TYPE_NAMES.get(card_code[0])
        entry_mode = None
        for tag, value in tlv:
            if tag == _TAG_CARD_TECH:
                entry_mode = _CARD_TECHNOLOGY.get(value[0]) if value else None
                break
        auth_code = get(0x3B)
        merchant_id = get(0x2A)

        out.append(Transaction(
            source=self.source,
            kind=kind,
            result="approved" if result_code == 0 else "declined",
            amount_minor=amount,
            time=self._when(fields, received),
            terminal_id=tid,
            merchant_id=None if merchant_id is None else _ascii_field(merchant_id),
            receipt_no=_bcd(get(0x87)),
            trace_no=_bcd(get(0x0B)),
            auth_code=None if auth_code is None else _ascii_field(auth_code),
            original_voucher_no=original,
            currency=currency,
            card=_pan_from_bcd(get(0x22)),
            card_type=card_type,
            entry_mode=entry_mode,
        ))
        stats.events += 1

    # -- receipts -------------------------------------------------------------
    def _add_line(self, text: str, received: datetime | None, out: list[Event]) -> None:
        self._lines.append(_clean_line(text))
        if len(self._lines) >= MAX_RECEIPT_LINES:
            self.stats.bump("receipts_split")
            self._end_receipt(received, out)

    def _print_line(self, data: bytes, received: datetime | None, out: list[Event]) -> None:
        if not data:
            self.stats.bad_frames += 1
            self.stats.last_error = "print line without attribute byte"
            return
        attribute = data[0]
        text_end = _trailing_tlv_start(data, 1)
        codec = self.codec
        if text_end < len(data):
            items, _ = parse_tlv(data, text_end + 1 + _ber_len_size(data, text_end + 1))
            codec = _block_codec(items, codec)
        self._add_line(decode_text(data[1:text_end], codec), received, out)
        if attribute & 0x80:
            self._end_receipt(received, out)

    def _text_block(self, data: bytes, received: datetime | None, out: list[Event]) -> None:
        bmps = parse_bmps(data)
        if not bmps.complete:
            self.stats.bump("bmp_parse_stopped")
        codec = _block_codec(bmps.tlv, self.codec)
        ended = False
        for tag, value in bmps.tlv:
            if tag == _TAG_TEXT_LINE:
                self._add_line(decode_text(value, codec), received, out)
            elif tag == _TAG_LINE_ATTR and value and value[0] & 0x80:
                ended = True
        if ended:
            self._end_receipt(received, out)

    def _end_receipt(self, received: datetime | None, out: list[Event]) -> None:
        lines = self._lines
        while lines and not lines[-1]:
            lines.pop()
        if lines:
            out.append(ReceiptText(source=self.source, time=received, lines=tuple(lines),
                                   terminal_id=self._terminal_id))
            self.stats.events += 1
        self._lines = []


def _match_crc(buf: bytearray, k: int, crc: int, final: bool) -> int | None:
    """How many wire bytes the CRC took at ``k``: -1 mismatch, None need more.

    Senders disagree on stuffing a CRC byte equal to DLE, so both spellings are
    accepted; when both fit, the one followed by a DLE STX wins.
    """
    plain = bytes((crc & 0xFF, crc >> 8))
    stuffed = _stuff(plain)
    avail = bytes(buf[k:k + len(stuffed) + 2])
    if stuffed == plain:
        if len(avail) < 2:
            return None if not final and plain.startswith(avail) else -1
        return 2 if avail.startswith(plain) else -1
    plain_ok = avail.startswith(plain)
    stuffed_ok = avail.startswith(stuffed)
    if plain_ok and stuffed_ok:
        after_plain = avail[len(plain):len(plain) + 2]
        if after_plain == DLE_STX:
            return len(plain)
        if len(after_plain) < 2 and not final:
            return None
        return len(stuffed)
    if stuffed_ok:
        return len(stuffed)
    if plain_ok:
        if not final and len(avail) < len(stuffed) and stuffed.startswith(avail):
            return None
        return len(plain)
    if not final and (stuffed.startswith(avail) or plain.startswith(avail)):
        return None
    return -1


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


def _block_codec(items: Iterable[tuple[int, bytes]], default: str) -> str:
    for tag, value in items:
        if tag == _TAG_CHARSET and len(value) == 1:
            return _tlv_charset(value[0]) or default
    return default


def _individual_totals(value: bytes | None) -> tuple[int | None, int | None]:
    """BMP 60: receipt-no from/to (2+2 BCD), then per card family count (1 byte) + amount (6 BCD)."""
    if value is None or len(value) < 4 or (len(value) - 4) % 7:
        return None, None
    count = 0
    total = 0
    for pos in range(4, len(value), 7):
        amount = _bcd_int(value[pos + 1:pos + 7])
        if amount is None:
            return None, None
        count += value[pos]
        total += amount
    return count, total


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


__all__ = [
    "MAX_APDU_DATA", "NUMERIC_CURRENCY", "POSITIVE_ACK", "Bmps", "ZvtDecoder", "crc_kermit",
    "decode_text", "encode_apdu", "encode_end_of_day", "encode_print_lines", "encode_reversal_command",
    "encode_status", "frame_serial", "parse_bmps", "parse_tlv",
]
