"""ZVT meaning: APDUs -> events, and the receipt lines a terminal prints, assembled into receipts.

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

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Final

from drivers.boundary import rejected
from drivers.events import EcrRequest, Event, ReceiptText, Rejected, Settlement, Transaction
from drivers.protocols.base import DecoderStats
from drivers.protocols.zvt.apdu import (
    _BCD_BYTE,
    _CARD_TECHNOLOGY,
    _CARD_TYPE_NAMES,
    _CURRENCY_BY_BCD,
    _TAG_CARD_TECH,
    _TAG_CHARSET,
    _TAG_LINE_ATTR,
    _TAG_TEXT_LINE,
    MAX_LAYOUTS,
    _ascii_field,
    _bcd,
    _bcd_int,
    _ber_len_size,
    _charset_codec,
    _clean_line,
    _Layout,
    _pan_from_bcd,
    _scan_bmps,
    _tlv_charset,
    _trailing_tlv_start,
    decode_text,
    parse_ber_tlv,
    parse_bmps,
)
from drivers.protocols.zvt.framing import MAX_APDU_DATA, Transport, ZvtFramer
from drivers.timeutil import infer_datetime

MAX_RECEIPT_LINES: Final = 2000

# ECR commands whose 04 0F answer is not a plain sale.
_COMMAND_KIND: Final[dict[int, str]] = {
    0x01: "sale", 0x22: "preauth", 0x24: "preauth_complete", 0x30: "reversal", 0x31: "refund",
}
# These commands start with a 3-byte BCD password before their BMPs.
_PASSWORD_FIRST: Final = frozenset({0x30, 0x31, 0x50})


# --------------------------------------------------------------------------
@dataclass(slots=True)
class _Pending:
    """What the last ECR command asked for; shapes the 04 0F that answers it."""

    instr: int
    amount_minor: int | None = None
    receipt_no: str | None = None
    currency: str | None = None


class ZvtDecoder:
    """Sans-I/O ZVT decoder: :class:`~drivers.protocols.zvt.framing.ZvtFramer` finds the APDUs,
    this class says what they mean (see the module docstring for the mapping)."""

    protocol = "zvt"

    def __init__(self, *, tz: tzinfo, source: str | None = None, transport: Transport = "auto",
                 charset: str = "cp437", max_apdu: int = MAX_APDU_DATA,
                 reference: datetime | None = None, ecr_requests: bool = False) -> None:
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
        # The till's requests and aborts as ``ecr_request`` events: on for a wire that carries the till's
        # side ([[source]] direction "both" / "till->terminal"); off, they only shape the 04 0F that follows.
        self.ecr_requests = ecr_requests
        self.stats = DecoderStats()
        self.rejected: list[Rejected] = []  # APDUs whose contents broke the interpreter (quarantine)
        self._framer = ZvtFramer(self.stats, transport=transport, max_apdu=max_apdu)
        self.max_frame = self._framer.max_frame
        self.max_buffer = self.max_frame
        self._buf = bytearray()
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
        return self._framer.framing

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
        self._framer.reset()
        self._end_receipt(received, out)
        return out

    def _run(self, *, final: bool, received: datetime | None, out: list[Event]) -> None:
        buf = self._buf
        framer = self._framer
        pos = 0
        while True:
            pos, apdu = framer.next_frame(buf, pos, final)
            if apdu is None:
                break
            try:
                self._apdu(apdu.cls, apdu.ins, apdu.data, received, out)
            except Exception as exc:  # one APDU's failure is that APDU's; the stream goes on
                self.stats.bad_frames += 1
                self.stats.bytes_skipped += len(apdu.data) + 3
                reason = f"APDU {apdu.cls:02X} {apdu.ins:02X} not understood: {type(exc).__name__}: {exc}"
                self.stats.last_error = reason
                self.rejected.append(rejected(self.source, "decode", reason, bytes(apdu.data)))
        if pos:
            del buf[:pos]
            framer.consumed(pos)
        if len(buf) > self.max_buffer:  # defensive: the framer already keeps below this
            self.stats.bytes_skipped += len(buf)
            self.stats.last_error = "buffer cap reached; bytes dropped"
            self.stats.bad_frames += 1
            buf.clear()
            framer.reset()

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
            self._command(ins, data, received, out)
        elif cls == 0x06 and ins == 0xB0:
            self._abort(received, out)
        else:
            self.stats.ignored_frames += 1

    def _command(self, ins: int, data: bytes, received: datetime | None, out: list[Event]) -> None:
        fields, _, _ = _scan_bmps(data, 3 if ins in _PASSWORD_FIRST else 0)
        receipt = _bcd(fields.get(0x87))
        currency_bcd = fields.get(0x49)
        currency = _CURRENCY_BY_BCD.get(currency_bcd) if currency_bcd is not None else None
        pending = self._pending = _Pending(ins, _bcd_int(fields.get(0x04)), receipt, currency)
        # End of day moves no customer's money: not a request MATCH-004 is about.
        if ins == 0x50 or not self.ecr_requests:
            self.stats.ignored_frames += 1
            return
        # The till's side of the link (issue 17): what it asked for; the 04 0F that answers it is the charge.
        out.append(EcrRequest(source=self.source, time=received or self.reference, state="requested",
                              kind=_COMMAND_KIND[ins], amount_minor=pending.amount_minor, currency=currency))
        self.stats.bump("ecr_requests")
        self.stats.events += 1

    def _abort(self, received: datetime | None, out: list[Event]) -> None:
        """ECR -> PT 06 B0: the till cancels the command it is waiting on. The command stays pending: a
        terminal already past the point of no return still answers it, approved (MATCH-004's case)."""
        pending = self._pending
        if not self.ecr_requests:
            self.stats.ignored_frames += 1
            return
        out.append(EcrRequest(source=self.source, time=received or self.reference, state="aborted",
                              kind=_COMMAND_KIND.get(pending.instr) if pending is not None else None,
                              amount_minor=pending.amount_minor if pending is not None else None,
                              currency=pending.currency if pending is not None else None))
        self.stats.bump("ecr_aborts")
        self.stats.events += 1

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
            items, _ = parse_ber_tlv(data, text_end + 1 + _ber_len_size(data, text_end + 1))
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
