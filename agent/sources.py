"""One reader per configured source: transport bytes -> decoder -> the pipeline's queue.

The transport (drivers.transport) owns opening, reading and reopening the
wire; the decoder (drivers.protocols) owns what the bytes say; this glue owns
only the hand-over, the idle flush of printer streams, and the counters the
watchdog, metrics and ``doctor`` read.
"""

from __future__ import annotations

import logging
import queue
import threading
import time as _time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from typing import Any

from agent.config import SourceConfig
from agent.messages import Command, EventBatch
from drivers.events import Event
from drivers.protocols import Decoder, DecoderStats, make_decoder, sniff

log = logging.getLogger("settleguard.source")


class SniffingDecoder:
    """``protocol = "auto"``: hold bytes until the first ones tell which protocol this is."""

    protocol = "auto"
    MAX_SNIFF = 4096

    def __init__(self, *, tz: tzinfo, source: str | None = None, **options: Any) -> None:
        self.tz, self.source, self.options = tz, source, options
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
        self.inner = make_decoder(name, tz=self.tz, source=self.source, **self.options)
        self.protocol = name
        self.stats = self.inner.stats
        held, self._held = bytes(self._held), bytearray()
        return self.inner.feed(held, received)

    def flush(self, received: datetime | None = None) -> list[Event]:
        return self.inner.flush(received) if self.inner is not None else []


def build_decoder(cfg: SourceConfig, tz: tzinfo) -> Any:
    options = dict(cfg.options)
    if cfg.protocol == "escpos" and cfg.templates:
        options.setdefault("templates", list(cfg.templates))
    if cfg.protocol == "zvt" and "transport" not in options:
        # A tty carries DLE-framed ZVT; a socket carries bare APDUs. Guessing ("auto") can misread a
        # tap that starts mid-frame, so say which when the configuration knows.
        if cfg.port and not cfg.port.startswith(("socket://", "rfc2217://")):
            options["transport"] = "serial"
        elif cfg.port or cfg.listen:
            options["transport"] = "tcp"
    if cfg.protocol == "auto":
        return SniffingDecoder(tz=tz, source=cfg.protocol, **options)
    return make_decoder(cfg.protocol, tz=tz, source=cfg.protocol, **options)


def build_transport(cfg: SourceConfig) -> Any:
    from drivers import transport

    if cfg.port:
        return transport.SerialSource(cfg.port, baudrate=cfg.baudrate, bytesize=cfg.bytesize, parity=cfg.parity,
                                      stopbits=cfg.stopbits)
    if cfg.file:
        return transport.FileSource(cfg.file)
    if cfg.spool:
        return transport.SpoolDirSource(cfg.spool)
    if cfg.listen and cfg.forward:
        lhost, lport = cfg.listen.rsplit(":", 1)
        fhost, fport = cfg.forward.rsplit(":", 1)
        return transport.TcpPassThrough(lhost, int(lport), fhost, int(fport),
                                        on_problem=lambda m: log.warning("source %s: %s", cfg.name, m))
    raise ValueError(f"source {cfg.name}: nothing to read")


@dataclass
class SourceRunner:
    """A configured source, its decoder and its supervisor thread."""

    cfg: SourceConfig
    tz: tzinfo
    inbox: queue.Queue[EventBatch | Command]
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    decoder: Any = None
    supervisor: Any = None
    state: str = "new"
    state_detail: str = ""
    last_bytes_at: float | None = None     # monotonic
    last_event_at: float | None = None     # monotonic
    events: int = 0
    _flushed: bool = True
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        from drivers import transport

        self.decoder = build_decoder(self.cfg, self.tz)
        source = build_transport(self.cfg)
        self.supervisor = transport.Supervisor(source, self._on_bytes, self._on_state)
        self.supervisor.start()

    def stop(self, timeout: float = 5.0) -> None:
        if self.supervisor is not None:
            self.supervisor.stop()
            self.supervisor.join(timeout)
        self.idle_flush(force=True)

    def _on_state(self, state: str, detail: str) -> None:
        self.state, self.state_detail = state, detail
        level = logging.WARNING if state in ("gone", "waiting") else logging.INFO
        log.log(level, "source %s: %s%s", self.cfg.name, state, f" ({detail})" if detail else "")

    def _on_bytes(self, chunk: bytes, received: datetime, boundary: bool) -> None:
        with self._lock:
            events: list[Event] = []
            if chunk:
                self.last_bytes_at = _time.monotonic()
                events.extend(self.decoder.feed(chunk, received))
                self._flushed = False
            if boundary:
                events.extend(self.decoder.flush(received))
                self._flushed = True
        self._emit(events, received)

    def idle_flush(self, *, force: bool = False) -> None:
        """Printer streams end a receipt after a quiet spell; called by the daemon's housekeeping."""
        with self._lock:
            if self._flushed or self.decoder is None:
                return
            idle = _time.monotonic() - (self.last_bytes_at or 0)
            if not force and idle < self.cfg.idle_flush.total_seconds():
                return
            received = self.clock()
            events = self.decoder.flush(received)
            self._flushed = True
        self._emit(events, received)

    def _emit(self, events: list[Event], received: datetime) -> None:
        if events:
            self.events += len(events)
            self.last_event_at = _time.monotonic()
            self.inbox.put(EventBatch(self.cfg.name, tuple(events), received))

    @property
    def stats(self) -> DecoderStats | None:
        return self.decoder.stats if self.decoder is not None else None

    @property
    def last_progress(self) -> float:
        sup = self.supervisor
        return float(getattr(sup, "last_progress", _time.monotonic())) if sup is not None else _time.monotonic()
