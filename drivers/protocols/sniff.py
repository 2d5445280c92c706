"""``--protocol auto``: guess the protocol from a stream's first bytes (gpsd style), then decode with it."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from drivers.events import Event, Rejected
from drivers.protocols.base import Decoder, DecoderStats


def sniff(data: bytes) -> str | None:
    """Guess the protocol from the first bytes; None when it cannot tell yet."""
    head = data.lstrip(b"\x06\x15\r\n\t ")[:64]
    if not head:
        return None
    if head[:1] == b"{":
        return "jsonl"
    if head[:2] == b"\x10\x02":
        return "zvt"
    if head[:1] == b"\x02" and len(head) >= 4 and head[3:5] in (b"\xdf\x01", b"\xdf\x02"):
        return "cn_ecr"
    if head[:2] in (b"\x1b\x40", b"\x1b\x74", b"\x1b\x21", b"\x1c\x26", b"\x1b\x61", b"\x1d\x21"):
        return "escpos"
    # Raw ZVT APDUs (TCP transport): class/instr pairs a terminal sends.
    if head[:2] in (b"\x04\x0f", b"\x04\xff", b"\x06\x0f", b"\x06\x1e", b"\x06\xd1", b"\x06\xd3", b"\x80\x00",
                    b"\x84\x00", b"\x06\x50"):
        return "zvt"
    if head[:1] == b"\x02":
        return "cn_ecr"
    return None


class SniffingDecoder:
    """Holds bytes until :func:`sniff` recognises them, then hands everything to the decoder for that protocol.

    ``build(protocol)`` makes that decoder (:func:`drivers.protocols.build_decoder` passes itself, with the
    source's options), so this class knows nothing about which protocols exist.
    """

    protocol = "auto"
    MAX_SNIFF = 4096

    def __init__(self, build: Callable[[str], Decoder]) -> None:
        self.build = build
        self.inner: Decoder | None = None
        self._held = bytearray()
        self.stats = DecoderStats()

    def feed(self, data: bytes, received: datetime | None = None) -> list[Event]:
        if self.inner is not None:
            return self.inner.feed(data, received)
        self._held += data
        name = sniff(bytes(self._held))
        if name is None:
            if len(self._held) > self.MAX_SNIFF:
                self.stats.bytes_skipped += len(self._held)
                self.stats.last_error = "could not recognise the protocol in the first 4 KiB; skipped"
                self._held.clear()
            return []
        self.inner = self.build(name)
        self.protocol = name
        self.stats = self.inner.stats
        held, self._held = bytes(self._held), bytearray()
        return self.inner.feed(held, received)

    def flush(self, received: datetime | None = None) -> list[Event]:
        return self.inner.flush(received) if self.inner is not None else []

    @property
    def rejected(self) -> list[Rejected] | None:
        """The sniffed decoder's rejected inputs, for the boundary to drain."""
        return getattr(self.inner, "rejected", None)
