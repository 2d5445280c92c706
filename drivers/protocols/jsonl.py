"""The JSON-lines protocol: one event object per line (ARCHITECTURE.md, "Event JSON").

Used for integrations that already speak JSON, for the simulator, and as the
output of ``settleguard decode``. Bad lines are counted and skipped.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, tzinfo

from drivers.boundary import rejected
from drivers.events import Event, EventError, ReceiptText, Rejected, Transaction, event_from_json
from drivers.pan import mask_pan, scrub_text
from drivers.protocols.base import DecoderStats

MAX_LINE = 64 * 1024


class JsonlDecoder:
    protocol = "jsonl"

    def __init__(self, *, tz: tzinfo | None = None, source: str | None = None,
                 max_line: int = MAX_LINE) -> None:
        self.tz = tz
        self.source = source
        self.max_line = max_line
        self.stats = DecoderStats()
        self._buf = bytearray()
        self._discarding = False  # inside an over-long line: drop until the next newline
        self.rejected: list[Rejected] = []  # lines that were not events, for the boundary's quarantine

    def feed(self, data: bytes, received: datetime | None = None) -> list[Event]:
        self.stats.bytes_in += len(data)
        out: list[Event] = []
        start = 0
        while True:
            nl = data.find(b"\n", start)
            if nl < 0:
                self._append(data[start:])
                break
            self._append(data[start:nl])
            if self._discarding:
                self._discarding = False
            else:
                self._line(bytes(self._buf), out)
            self._buf.clear()
            start = nl + 1
        return out

    def flush(self, received: datetime | None = None) -> list[Event]:
        out: list[Event] = []
        if self._buf and not self._discarding:
            self._line(bytes(self._buf), out)
        self._buf.clear()
        self._discarding = False
        return out

    def _append(self, chunk: bytes) -> None:
        if self._discarding or not chunk:
            if self._discarding:
                self.stats.bytes_skipped += len(chunk)
            return
        if len(self._buf) + len(chunk) > self.max_line:
            self.stats.bytes_skipped += len(self._buf) + len(chunk)
            self.stats.bad_frames += 1
            self.stats.last_error = f"line longer than {self.max_line} bytes skipped"
            self.rejected.append(rejected(self.source or self.protocol, "decode", self.stats.last_error,
                                          bytes((self._buf + chunk)[:1024]).decode("utf-8", "replace")))
            self._buf.clear()
            self._discarding = True
            return
        self._buf += chunk

    def _line(self, raw: bytes, out: list[Event]) -> None:
        text = raw.strip()
        if not text:
            return
        try:
            event = event_from_json(text.decode("utf-8"))
        except Exception as exc:  # every failure of one line is that line's, never the stream's
            # EventError, UnicodeDecodeError, RecursionError (deep nesting), and the plain ValueError
            # Python's json raises for an integer of more than 4300 digits: all the same to the stream.
            self.stats.bad_frames += 1
            self.stats.bytes_skipped += len(raw) + 1
            reason = _reason(exc)
            self.stats.last_error = f"bad JSON line skipped: {reason}"
            self.rejected.append(rejected(self.source or self.protocol, "decode", reason, text))
            return
        self.stats.frames += 1
        out.append(_sanitise(event))
        self.stats.events += 1


def _reason(exc: Exception) -> str:
    if isinstance(exc, EventError):
        return str(exc)
    if isinstance(exc, UnicodeDecodeError):
        return f"not UTF-8 at byte {exc.start}"
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    return f"{type(exc).__name__}: {exc}"


def _sanitise(event: Event) -> Event:
    """Whatever an integration sends, a full PAN stops here."""
    if isinstance(event, Transaction):
        masked = mask_pan(event.card)
        return event if masked == event.card else replace(event, card=masked)
    if isinstance(event, ReceiptText):
        return replace(event, lines=tuple(scrub_text(x) for x in event.lines))
    return event
