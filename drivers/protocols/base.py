"""The decoder contract every protocol follows (h11 / pymodbus framer style).

``feed(data, received)`` takes whatever bytes arrived and returns the events
that are now complete. Decoders never touch a socket, a clock or a logger:
the caller passes the receive time (used only to place year-less terminal
timestamps), and problems are counted in :class:`DecoderStats`, never raised.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from drivers.events import Event


@dataclass(slots=True)
class DecoderStats:
    bytes_in: int = 0
    bytes_skipped: int = 0          # garbage between/inside frames, dropped
    frames: int = 0                 # well-formed frames (or lines, or receipts)
    bad_frames: int = 0             # checksum/length/content errors, skipped whole
    events: int = 0
    ignored_frames: int = 0         # well-formed but carrying nothing we map (ACKs, intermediate status)
    last_error: str | None = None   # human sentence for `doctor`
    counters: dict[str, int] = field(default_factory=dict)  # protocol-specific (images_skipped, ...)

    def bump(self, name: str, n: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + n


class Decoder(Protocol):
    # Read-only here, so that a wrapper (drivers/boundary.py) may answer them from the decoder it wraps.
    @property
    def protocol(self) -> str: ...

    @property
    def stats(self) -> DecoderStats: ...

    def feed(self, data: bytes, received: datetime | None = None) -> list[Event]:
        """Consume ``data``; return the events completed by it (possibly none)."""
        ...

    def flush(self, received: datetime | None = None) -> list[Event]:
        """End of input or idle timeout: emit what a boundary would complete."""
        ...

