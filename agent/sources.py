"""One reader per configured source: transport bytes -> decoder -> the pipeline's queue.

The transport (drivers.transports) owns opening, reading and reopening the
wire; the decoder (drivers.protocols) owns what the bytes say; this glue owns
only the hand-over, the idle flush of printer streams, and the counters the
watchdog, metrics and ``doctor`` read.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from typing import Any

from agent.config import SourceConfig
from agent.messages import Command, EventBatch
from drivers.boundary import take_rejected
from drivers.clock import SYSTEM_CLOCK, Clock
from drivers.events import Event, Rejected, Settlement, Transaction
from drivers.protocols import Decoder, DecoderStats, build_decoder
from drivers.transports import ByteSource, FileSource, SerialSource, SpoolDirSource, Supervisor, TcpPassThrough
from drivers.transports.tcp import parse_host_port, parse_listen

log = logging.getLogger("settleguard.source")


def decoder_options(cfg: SourceConfig) -> dict[str, Any]:
    """The decoder options a ``[[source]]`` implies: its ``options``, plus what its other keys say.

    The daemon and ``replay`` both decode with these, so a capture replays as it was read live.
    """
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
    if cfg.carries_requests and cfg.protocol in ("zvt", "cn_ecr"):
        options.setdefault("ecr_requests", True)
    return options


def source_decoder(cfg: SourceConfig, tz: tzinfo) -> Decoder:
    return build_decoder(cfg.protocol, tz=tz, options=decoder_options(cfg), source=cfg.protocol)


def build_transport(cfg: SourceConfig, clock: Clock = SYSTEM_CLOCK) -> ByteSource:
    if cfg.port:
        return SerialSource(cfg.port, baudrate=cfg.baudrate, bytesize=cfg.bytesize, parity=cfg.parity,
                            stopbits=cfg.stopbits)
    if cfg.file:
        return FileSource(cfg.file)
    if cfg.spool:
        return SpoolDirSource(cfg.spool, clock=clock)
    if cfg.listen and cfg.forward:
        lhost, lport = parse_listen(cfg.listen)
        fhost, fport = parse_host_port(cfg.forward)
        # A terminal's proxy (issue 17) copies both directions: the till's requests and the terminal's answers.
        return TcpPassThrough(lhost, lport, fhost, fport, clock=clock, allow=cfg.allow,
                              copy_replies=cfg.protocol in ("zvt", "cn_ecr"),
                              on_problem=lambda m: log.warning("source %s: %s", cfg.name, m))
    raise ValueError(f"source {cfg.name}: nothing to read")


@dataclass
class SourceRunner:
    """A configured source, its decoder and its supervisor thread.

    ``transport`` replaces the one the configuration names (tests pass a
    :class:`~drivers.transports.VirtualSource`); ``clock`` stamps what arrives and measures idleness.
    """

    cfg: SourceConfig
    tz: tzinfo
    inbox: queue.Queue[EventBatch | Command]
    clock: Clock = SYSTEM_CLOCK
    transport: ByteSource | None = None
    decoder: Decoder | None = None
    supervisor: Supervisor | None = None
    state: str = "new"
    state_detail: str = ""
    last_bytes_at: float | None = None     # monotonic
    last_event_at: float | None = None     # monotonic
    events: int = 0
    # Wall-clock times for dead-wire detection (agent/watch/wires.py): when reading began, bytes and
    # transactions last came.
    started_time: datetime | None = None
    last_bytes_time: datetime | None = None
    last_txn_time: datetime | None = None
    _flushed: bool = True
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        self.started_time = self.clock.now()
        self.decoder = source_decoder(self.cfg, self.tz)
        if self.transport is None:
            self.transport = build_transport(self.cfg, self.clock)
        # The pipeline, not the reader, says when a job is done: after its journal commit.
        self.supervisor = Supervisor(self.transport, self._on_bytes, self._on_state, clock=self.clock,
                                     consumer_commits=True)
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
        ack = None
        with self._lock:
            assert self.decoder is not None
            events: list[Event] = []
            if chunk:
                self.last_bytes_at = self.clock.monotonic()
                self.last_bytes_time = received
                events.extend(self.decoder.feed(chunk, received))
                self._flushed = False
            if boundary:
                events.extend(self.decoder.flush(received))
                self._flushed = True
                if self.transport is not None:
                    ack = self.transport.commit_token()
            refused = take_rejected(self.decoder)
        self._emit(events, received, ack, refused)

    def idle_flush(self, *, force: bool = False) -> None:
        """Printer streams end a receipt after a quiet spell; called by the daemon's housekeeping."""
        with self._lock:
            if self._flushed or self.decoder is None:
                return
            idle = self.clock.monotonic() - (self.last_bytes_at or 0)
            if not force and idle < self.cfg.idle_flush.total_seconds():
                return
            received = self.clock.now()
            events = self.decoder.flush(received)
            self._flushed = True
            refused = take_rejected(self.decoder)
        self._emit(events, received, refused=refused)

    def _emit(self, events: list[Event], received: datetime, ack: Callable[[], None] | None = None,
              refused: list[Rejected] | None = None) -> None:
        if events:
            self.events += len(events)
            self.last_event_at = self.clock.monotonic()
            if any(isinstance(e, Transaction | Settlement) for e in events):
                self.last_txn_time = received
        if events or ack is not None or refused:
            # What the boundary refused travels with the events of the same read, to the quarantine.
            self.inbox.put(EventBatch(self.cfg.name, tuple(events), received, ack, rejected=tuple(refused or ())))

    def wire_report(self) -> dict[str, Any]:
        """What agent/watch/wires.py judges this source by; also what doctor and metrics show of it."""
        stats = self.stats
        sup = self.supervisor
        transport_error = getattr(self.transport, "last_error", None)
        return {
            "name": self.cfg.name,
            "started": self.started_time, "bytes_at": self.last_bytes_time, "txn_at": self.last_txn_time,
            "unmatched": stats.counters.get("unmatched_receipts", 0) if stats else 0,
            # A decoder that raised (the supervisor kept reading) and a spool job it could not read.
            "decoder_errors": (sup.callback_errors if sup else 0) + int(getattr(self.transport, "jobs_failed", 0)),
            "bad_frames": stats.bad_frames if stats else 0,
            "quarantined": int(stats.counters.get("quarantined", 0)) if stats else 0,
            "last_error": (sup.last_callback_error if sup else None) or transport_error,
        }

    @property
    def stats(self) -> DecoderStats | None:
        return self.decoder.stats if self.decoder is not None else None

    @property
    def last_progress(self) -> float:
        sup = self.supervisor
        return sup.last_progress if sup is not None else self.clock.monotonic()


# How often the daemon hands the readers' reports to the pipeline for the dead-wire check (seconds).
WIRE_CHECK_EVERY = 30.0


def wire_command(runners: list[SourceRunner]) -> Command:
    """The pipeline's "wires" command: every reader's report (agent/watch/wires.py decides what is quiet)."""
    return Command("wires", {"reports": [r.wire_report() for r in runners]})
