"""The JSON-lines protocol: one event object per line (ARCHITECTURE.md, "Event JSON").

Used for integrations that already speak JSON, for the simulator, and as the
output of ``settleguard decode``. Bad lines are counted and skipped.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, tzinfo

from drivers.events import Event, EventError, ReceiptText, Transaction, event_from_json
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
        except (UnicodeDecodeError, EventError, RecursionError) as exc:
            self.stats.bad_frames += 1
            self.stats.bytes_skipped += len(raw) + 1
            self.stats.last_error = f"bad JSON line skipped: {exc}"
            return
        self.stats.frames += 1
        out.append(_sanitise(event))
        self.stats.events += 1


def _sanitise(event: Event) -> Event:
    """Whatever an integration sends, a full PAN stops here."""
    if isinstance(event, Transaction):
        masked = mask_pan(event.card)
        return event if masked == event.card else replace(event, card=masked)
    if isinstance(event, ReceiptText):
        return replace(event, lines=tuple(scrub_text(x) for x in event.lines))
    return event
