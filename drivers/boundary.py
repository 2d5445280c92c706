"""The event boundary: every event a decoder produces is scrubbed of card numbers and checked against the
model's real limits before it leaves ``drivers``; what fails is handed on as :class:`Rejected` for the
journal's quarantine, never raised.

Why here: the PAN rule says a full card number never leaves ``drivers/``, so the scrub cannot live in
``agent``. :func:`drivers.protocols.build_decoder` wraps every decoder it builds in a
:class:`BoundaryDecoder`, and the daemon's readers, ``replay`` and ``decode`` all build their decoders
there, so no path from bytes to an event skips it. The pipeline calls :func:`admit` again on whatever it
is handed (events built outside a decoder, by tests or tools): cheap, and it keeps the journal safe
whoever fills the queue.

The limits (ARCHITECTURE.md, "Event JSON"; README, "Limits"):

* money: ``0 <= amount_minor <= MAX_AMOUNT_MINOR`` (10^12 minor units: ten billion yuan, far above any
  till and far below SQLite's signed 64-bit INTEGER); settlement totals within +-MAX_TOTAL_MINOR, counts
  within ``0..MAX_COUNT``;
* time: aware, its UTC offset under a day, between 2000-01-01 and 2100-01-01 UTC, so converting it to
  UTC or to the shop's zone cannot overflow;
* text: valid Unicode (no lone surrogate: SQLite stores UTF-8), no NUL, bounded lengths (identifier
  fields MAX_FIELD_CHARS, receipt lines and QR payloads as the ESC/POS decoder caps them);
* enums: kind, result, entry_mode from the schema; currency three letters or three digits.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from operator import attrgetter
from typing import TYPE_CHECKING, Any, Final

from drivers.events import (
    ECR_STATES,
    ENTRY_MODES,
    KINDS,
    MAX_TENDERS,
    RESULTS,
    TENDER_METHODS,
    EcrRequest,
    Event,
    Order,
    ReceiptText,
    Rejected,
    Settlement,
    Tender,
    Transaction,
)
from drivers.pan import SHORTEST_PAN, mask_pan, scrub_lines, scrub_text

if TYPE_CHECKING:
    from drivers.protocols.base import Decoder, DecoderStats

MAX_AMOUNT_MINOR: Final = 10**12
MAX_TOTAL_MINOR: Final = 10**15
MAX_COUNT: Final = 10**7
EARLIEST: Final = datetime(2000, 1, 1, tzinfo=UTC)
LATEST: Final = datetime(2100, 1, 1, tzinfo=UTC)
MAX_FIELD_CHARS: Final = 128
MAX_SOURCE_CHARS: Final = 64
MAX_LINES: Final = 2000          # drivers/protocols/escpos.py MAX_RECEIPT_LINES
MAX_LINE_CHARS: Final = 4096     # escpos MAX_LINE_CHARS
MAX_QR: Final = 32               # escpos MAX_QR_PER_RECEIPT
MAX_QR_CHARS: Final = 8192       # escpos MAX_QR_BYTES
MAX_RAW_CHARS: Final = 4096      # what the quarantine keeps of a rejected input
MAX_REASON_CHARS: Final = 400

_CURRENCY: Final = re.compile(r"[A-Z]{3}|[0-9]{3}")
_TXN_TEXT: Final = tuple(n for n in Transaction.SCHEMA if n not in ("kind", "result", "amount_minor", "time",
                                                                      "card", "entry_mode", "currency"))
_SETTLEMENT_TEXT: Final = ("source", "terminal_id", "merchant_id", "batch_no")
_TXN_TEXT_AND_CURRENCY: Final = (*_TXN_TEXT, "currency")
_TXN_TEXT_AND_CURRENCY_OF: Final = attrgetter(*_TXN_TEXT_AND_CURRENCY)
_TXN_TEXT_OF: Final = attrgetter(*_TXN_TEXT)
# (name, length limit, required) of each text field _check_transaction checks, in _TXN_TEXT's order.
_TXN_TEXT_RULES: Final = tuple((n, MAX_SOURCE_CHARS if n == "source" else MAX_FIELD_CHARS, n == "source")
                               for n in _TXN_TEXT)
# A card field already in the form decoders write (first 6, stars, last 4) holds no card number: mask_pan
# would return it unchanged, so it is not asked.
_MASKED_CARD: Final = re.compile(r"[0-9]{6}\*{3,9}[0-9]{4}")
# A tender's hint is where a till prints the card ("银行卡 6225 7600 1234 6691"): like a card field, any
# long run of clear digits in it is a card number whether or not it passes Luhn.
_HINT_DIGITS: Final = re.compile(r"[0-9][0-9 -]{10,}[0-9]")


# -- scrubbing -------------------------------------------------------------------------------------------
def scrub_event(event: Event) -> Event:
    """Every string of the event with card numbers masked (card fields to 6+4 whatever they hold).

    Never raises: a field of the wrong type is left for :func:`check_event` to refuse.
    """
    changes: dict[str, Any] = {}
    if isinstance(event, Transaction):
        # _scrub_field over the fields read at once (every decoded transaction comes here: issue 20).
        for name, value in zip(_TXN_TEXT_AND_CURRENCY, _TXN_TEXT_AND_CURRENCY_OF(event), strict=True):
            if isinstance(value, str) and len(value) >= SHORTEST_PAN:
                clean = scrub_text(value)
                if clean != value:
                    changes[name] = clean
        card = event.card
        if isinstance(card, str) and not _MASKED_CARD.fullmatch(card):
            masked = mask_pan(card)
            if masked != card:
                changes["card"] = masked
    elif isinstance(event, Settlement):
        for name in (*_SETTLEMENT_TEXT, "currency"):
            _scrub_field(event, name, changes)
    elif isinstance(event, Order):
        for name in ("source", "order_no", "currency"):
            _scrub_field(event, name, changes)
        if isinstance(event.tenders, tuple) and all(isinstance(t, Tender) for t in event.tenders):
            tenders = tuple(_scrub_tender(t) for t in event.tenders)
            if tenders != event.tenders:
                changes["tenders"] = tenders
    elif isinstance(event, EcrRequest):
        for name in ("source", "request_id", "currency"):
            _scrub_field(event, name, changes)
    elif isinstance(event, ReceiptText):
        for name in ("source", "terminal_id", "unread_template", "unread_field"):
            _scrub_field(event, name, changes)
        if isinstance(event.lines, tuple) and all(isinstance(x, str) for x in event.lines):
            lines = scrub_lines(event.lines)
            if lines != event.lines:
                changes["lines"] = lines
        if isinstance(event.qr, tuple) and all(isinstance(x, str) for x in event.qr):
            qr = tuple(scrub_text(x) for x in event.qr)
            if qr != event.qr:
                changes["qr"] = qr
    if not changes:
        return event
    # Not dataclasses.replace: __post_init__ would run again and may raise on a value check_event is about
    # to refuse with a reason. A copy with the scrubbed fields set is the same event, scrubbed.
    copy = _shallow_copy(event)
    for name, value in changes.items():
        object.__setattr__(copy, name, value)
    return copy


def _scrub_tender(tender: Tender) -> Tender:
    hint = tender.hint
    if not isinstance(hint, str):
        return tender
    clean = _HINT_DIGITS.sub(lambda m: mask_pan(m.group(0)) or "", scrub_text(hint))
    if clean == hint:
        return tender
    copy = object.__new__(Tender)
    for f in dataclasses.fields(tender):
        object.__setattr__(copy, f.name, getattr(tender, f.name))
    object.__setattr__(copy, "hint", clean)
    return copy


def _shallow_copy(event: Event) -> Event:
    clone = object.__new__(type(event))
    for f in dataclasses.fields(event):
        object.__setattr__(clone, f.name, getattr(event, f.name))
    return clone


def _scrub_field(event: Any, name: str, changes: dict[str, Any]) -> None:
    value = getattr(event, name)
    # Most fields (voucher, terminal id, RRN) are shorter than any card number: this runs for every field
    # of every event, so the length test comes before the scan (it costs a third of decoding otherwise).
    if isinstance(value, str) and len(value) >= SHORTEST_PAN:
        clean = scrub_text(value)
        if clean != value:
            changes[name] = clean


# -- limits ------------------------------------------------------------------------------------------------
def check_event(event: Any) -> str | None:
    """Why ``event`` may not reach the journal, or None when it is within every limit."""
    if isinstance(event, Transaction):
        return _check_transaction(event)
    if isinstance(event, Settlement):
        return _check_settlement(event)
    if isinstance(event, ReceiptText):
        return _check_receipt(event)
    if isinstance(event, Order):
        return _check_order(event)
    if isinstance(event, EcrRequest):
        return _check_ecr_request(event)
    return f"not an event: {type(event).__name__}"


def _check_transaction(t: Transaction) -> str | None:
    if t.kind not in KINDS:
        return "kind: not one of " + ", ".join(KINDS)
    if t.result not in RESULTS:
        return "result: not approved or declined"
    if t.entry_mode is not None and t.entry_mode not in ENTRY_MODES:
        return "entry_mode: not one of " + ", ".join(ENTRY_MODES)
    why = _money(t.amount_minor, "amount_minor", 0, MAX_AMOUNT_MINOR, required=True)
    if why is None:
        why = _currency(t.currency) or _time(t.time)
    if why is None:
        why = _text(t.card, "card", MAX_FIELD_CHARS)
    if why is not None:
        return why
    # _text on each field, its common cases (absent, or short ASCII without NUL) inline: this runs for every
    # decoded transaction (issue 20).
    for (name, limit, required), value in zip(_TXN_TEXT_RULES, _TXN_TEXT_OF(t), strict=True):
        if value is None and not required:
            continue
        if type(value) is str and len(value) <= limit and value.isascii() and "\x00" not in value:
            continue
        why = _text(value, name, limit, required=required)
        if why is not None:
            return why
    return None


def _check_settlement(s: Settlement) -> str | None:
    why = (_money(s.total_minor, "total_minor", -MAX_TOTAL_MINOR, MAX_TOTAL_MINOR)
           or _money(s.count, "count", 0, MAX_COUNT) or _currency(s.currency) or _time(s.time))
    if why is None and s.balanced is not None and not isinstance(s.balanced, bool):
        why = "balanced: not true, false or null"
    for name in _SETTLEMENT_TEXT:
        if why is not None:
            break
        why = _text(getattr(s, name), name, MAX_SOURCE_CHARS if name == "source" else MAX_FIELD_CHARS,
                    required=name == "source")
    return why


def _check_receipt(r: ReceiptText) -> str | None:
    why = (_text(r.source, "source", MAX_SOURCE_CHARS, required=True) or _text(r.terminal_id, "terminal_id",
                                                                                 MAX_FIELD_CHARS)
           or _time(r.time) or _text(r.unread_template, "unread_template", MAX_FIELD_CHARS)
           or _text(r.unread_field, "unread_field", MAX_FIELD_CHARS))
    if why is not None:
        return why
    if r.unread is not None and r.unread not in ReceiptText.UNREAD:
        return f"unread: must be one of {', '.join(ReceiptText.UNREAD)}"
    if not isinstance(r.lines, tuple) or len(r.lines) > MAX_LINES:
        return f"lines: more than {MAX_LINES} lines, or not a list"
    if not isinstance(r.qr, tuple) or len(r.qr) > MAX_QR:
        return f"qr: more than {MAX_QR} payloads, or not a list"
    for i, line in enumerate(r.lines):
        why = _text(line, f"lines[{i}]", MAX_LINE_CHARS, required=True)
        if why is not None:
            return why
    for i, payload in enumerate(r.qr):
        why = _text(payload, f"qr[{i}]", MAX_QR_CHARS, required=True)
        if why is not None:
            return why
    return None


def _check_order(o: Order) -> str | None:
    why = (_money(o.total_minor, "total_minor", 0, MAX_AMOUNT_MINOR, required=True) or _currency(o.currency)
           or _time(o.time) or _text(o.source, "source", MAX_SOURCE_CHARS, required=True)
           or _text(o.order_no, "order_no", MAX_FIELD_CHARS))
    if why is not None:
        return why
    if not isinstance(o.tenders, tuple) or len(o.tenders) > MAX_TENDERS:
        return f"tenders: more than {MAX_TENDERS}, or not a list"
    for i, t in enumerate(o.tenders):
        if not isinstance(t, Tender):
            return f"tenders[{i}]: not a tender"
        if t.method not in TENDER_METHODS:
            return f"tenders[{i}].method: not one of " + ", ".join(TENDER_METHODS)
        why = (_money(t.amount_minor, f"tenders[{i}].amount_minor", 0, MAX_AMOUNT_MINOR, required=True)
               or _text(t.hint, f"tenders[{i}].hint", MAX_FIELD_CHARS))
        if why is not None:
            return why
    return None


def _check_ecr_request(e: EcrRequest) -> str | None:
    if e.state not in ECR_STATES:
        return "state: not one of " + ", ".join(ECR_STATES)
    if e.kind is not None and e.kind not in KINDS:
        return "kind: not one of " + ", ".join(KINDS)
    return (_money(e.amount_minor, "amount_minor", 0, MAX_AMOUNT_MINOR) or _currency(e.currency) or _time(e.time)
            or _text(e.source, "source", MAX_SOURCE_CHARS, required=True)
            or _text(e.request_id, "request_id", MAX_FIELD_CHARS))


def _money(value: Any, name: str, low: int, high: int, *, required: bool = False) -> str | None:
    if value is None:
        return f"{name}: missing" if required else None
    if isinstance(value, bool) or not isinstance(value, int):
        return f"{name}: not an integer"
    if not low <= value <= high:
        # The value itself is left out: it may be a card number typed into the wrong field.
        return f"{name}: outside {low}..{high} ({len(str(abs(value)))} digits)"
    return None


def _currency(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or _CURRENCY.fullmatch(value) is None:
        return "currency: not a three-letter or three-digit code"
    return None


_ONE_DAY: Final = timedelta(days=1)
_NAIVE_EARLIEST: Final = EARLIEST.replace(tzinfo=None) + timedelta(days=1)
_NAIVE_LATEST: Final = LATEST.replace(tzinfo=None) - timedelta(days=1)


def _time(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, datetime):
        return "time: not a date-time"
    offset = value.utcoffset() if value.tzinfo is not None else None
    if offset is None:
        return "time: no UTC offset"
    if abs(offset) >= _ONE_DAY:
        return "time: UTC offset of a day or more"
    # The wall-clock fields first, a day inside the window: then the UTC conversion below cannot overflow
    # (Python's datetime ends at 9999-12-31; year 9999 with a negative offset would).
    if not _NAIVE_EARLIEST <= value.replace(tzinfo=None) <= _NAIVE_LATEST:
        return f"time: year {value.year} outside {EARLIEST.year}..{LATEST.year - 1}"
    utc = value.astimezone(UTC)
    if not EARLIEST <= utc < LATEST:
        return f"time: outside {EARLIEST.year}..{LATEST.year - 1}"
    return None


def _text(value: Any, name: str, limit: int, *, required: bool = False) -> str | None:
    # The common case first, cheaply: a short ASCII string without NUL is within every limit.
    if type(value) is str and len(value) <= limit and value.isascii() and "\x00" not in value:
        return None
    if value is None:
        return f"{name}: missing" if required else None
    if not isinstance(value, str):
        return f"{name}: not a string"
    if len(value) > limit:
        return f"{name}: longer than {limit} characters"
    if "\x00" in value:
        return f"{name}: contains NUL"
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return f"{name}: not valid Unicode (lone surrogate)"
    return None


# -- admission ---------------------------------------------------------------------------------------------
# A tuple built once (``A | B | ...`` in isinstance builds a union object on every call).
_EVENT_TYPES: Final = (Transaction, Settlement, ReceiptText, Order, EcrRequest)


def admit(event: Any, source: str) -> tuple[Event | None, Rejected | None]:
    """(the scrubbed event, None) when it may go on; (None, why) when it goes to the quarantine.

    Never raises, whatever ``event`` holds.
    """
    try:
        known = isinstance(event, _EVENT_TYPES)
        clean = scrub_event(event) if known else event
        why = check_event(clean)
    except Exception as exc:  # the boundary's promise is that nothing passes it as an exception
        return None, rejected(source, "limits", f"cannot check: {type(exc).__name__}: {exc}", _form(event))
    if why is None:
        return clean, None
    return None, rejected(source, "limits", why, _form(clean))


def _form(event: Any) -> str:
    """The event's JSON form for the quarantine, whatever its fields hold."""
    try:
        obj = {"type": getattr(event, "type", type(event).__name__)}
        for f in dataclasses.fields(event):
            value = getattr(event, f.name)
            obj[f.name] = value.isoformat() if isinstance(value, datetime) else value
        return json.dumps(obj, ensure_ascii=False, default=repr)
    except Exception:  # a value that cannot be shown is shown as its repr
        return repr(event)


def rejected(source: str, stage: str, reason: str, raw: str | bytes) -> Rejected:
    """A :class:`Rejected` whose every text is card-scrubbed, valid Unicode and bounded."""
    text = raw if isinstance(raw, str) else (raw.decode("utf-8") if _utf8(raw) else raw.hex(" "))
    return Rejected(source=_safe(source, MAX_SOURCE_CHARS) or "?", stage=stage,
                    reason=_safe(reason, MAX_REASON_CHARS), raw=_safe(text, MAX_RAW_CHARS))


def _utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _safe(text: str, limit: int) -> str:
    # Lone surrogates and NUL written out as escapes; scrubbed before and after cutting, so a cut can
    # neither reveal a masked number nor leave a new card-number-sized run at the end.
    text = str(text).encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")
    text = scrub_text(text)
    if len(text) > limit:
        text = scrub_text(text[:limit - 1] + "…")
    return text


# -- the decoder wrapper ----------------------------------------------------------------------------------
class BoundaryDecoder:
    """Any decoder, behind the boundary: its events scrubbed and checked, its exceptions contained.

    An exception from the inner decoder (a bug meeting input nobody foresaw) costs the bytes of that call:
    they are counted as skipped, the decoder is rebuilt fresh (so its buffer cannot hold the poison and
    fail again on every later call) and decoding goes on. Rejected inputs wait in :meth:`take_rejected`.
    """

    def __init__(self, inner: Decoder, source: str, rebuild: Callable[[], Decoder] | None = None) -> None:
        self.inner = inner
        self.source = source
        self._rebuild = rebuild
        self._rejected: list[Rejected] = []

    def __getattr__(self, name: str) -> Any:
        # What a protocol's decoder exposes beyond the contract (buffered, printer, ...) reads through.
        if name.startswith("__") or name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    @property
    def protocol(self) -> str:
        return self.inner.protocol

    @property
    def stats(self) -> DecoderStats:
        return self.inner.stats

    def feed(self, data: bytes, received: datetime | None = None) -> list[Event]:
        try:
            events = self.inner.feed(data, received)
        except Exception as exc:  # see the class docstring
            self._failed(exc, data)
            events = []
        return self._admit(events)

    def flush(self, received: datetime | None = None) -> list[Event]:
        try:
            events = self.inner.flush(received)
        except Exception as exc:  # see the class docstring
            self._failed(exc, b"")
            events = []
        return self._admit(events)

    def take_rejected(self) -> list[Rejected]:
        taken, self._rejected = self._rejected, []
        return taken

    def _admit(self, events: Iterable[Event]) -> list[Event]:
        inner_rejects = getattr(self.inner, "rejected", None)
        if inner_rejects:
            self._rejected.extend(inner_rejects)
            self.stats.bump("quarantined", len(inner_rejects))
            inner_rejects.clear()
        out: list[Event] = []
        for event in events:
            clean, why = admit(event, self.source)
            if clean is not None:
                out.append(clean)
            else:
                assert why is not None
                self._rejected.append(why)
                self.stats.bump("quarantined")
                self.stats.last_error = f"event quarantined: {why.reason}"
        return out

    def _failed(self, exc: Exception, data: bytes) -> None:
        stats = self.stats
        stats.bad_frames += 1
        stats.bytes_skipped += len(data)
        stats.bump("decoder_errors")
        stats.bump("quarantined")
        reason = f"decoder error: {type(exc).__name__}: {exc}"
        stats.last_error = _safe(reason, MAX_REASON_CHARS)
        self._rejected.append(rejected(self.source, "decode", reason, data[:MAX_RAW_CHARS // 3]))
        if self._rebuild is not None:
            fresh = self._rebuild()
            # Counters carry over in place: a decoder may hold references to its own stats object.
            for f in dataclasses.fields(stats):
                setattr(fresh.stats, f.name, getattr(stats, f.name))
            self.inner = fresh


def take_rejected(decoder: Any) -> list[Rejected]:
    """What a decoder quarantined since the last call (nothing for a decoder outside the boundary)."""
    take = getattr(decoder, "take_rejected", None)
    return list(take()) if take is not None else []


__all__ = [
    "EARLIEST", "LATEST", "MAX_AMOUNT_MINOR", "MAX_COUNT", "MAX_FIELD_CHARS", "MAX_TOTAL_MINOR",
    "BoundaryDecoder", "Rejected", "admit", "check_event", "rejected", "scrub_event", "take_rejected",
]
