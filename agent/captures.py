"""Captures decoded for replay as a stream (issue 20): read a block at a time, year-less terminal times placed
on each capture's own timeline, several captures merged by time. ``agent/replay.py`` runs the stream."""

from __future__ import annotations

import heapq
from array import array
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Any

from drivers.boundary import check_event
from drivers.events import Event, ReceiptText, Settlement, Transaction
from drivers.protocols import build_decoder
from drivers.timeutil import shifted, timeline_shifts

# Protocols whose terminal times carry no year: a capture of them is placed on its own timeline.
YEARLESS = frozenset({"cn_ecr", "zvt"})


class CaptureError(ValueError):
    """A capture the decoder could not read, with where in it (the file and the byte offset of the block
    being decoded): a stream fails part-way, and the person needs to know where."""

    def __init__(self, path: Path, offset: int, cause: Exception) -> None:
        super().__init__(f"{path}: near byte {offset}: {cause}")
        self.path, self.offset, self.cause = path, offset, cause


BLOCK = 1 << 16      # bytes read and decoded at a time: a capture is never held whole
REORDER = 10_000     # events of one capture re-ordered by time (a terminal clock set back a little)
KEEP = 20_000        # a capture of up to this many events is decoded once and kept (a few MB), not twice


@dataclass(frozen=True, slots=True)
class _Capture:
    path: Path
    protocol: str
    tz: tzinfo
    ref: datetime
    options: Mapping[str, Any] | None
    shifts: tuple[tuple[int, int], ...] = ()   # drivers/timeutil.timeline_shifts of its year-less times
    # A small capture's events from the first pass and that pass's decoder stats (None: decode again).
    kept: tuple[Event, ...] | None = None
    kept_stats: Any = None


def _stamp(ev: Event) -> datetime | None:
    """The terminal's own time of a transaction or settlement (the year-less kind), else None."""
    return ev.time if isinstance(ev, Transaction | Settlement) else None


def _decode(cap: _Capture, stats: dict[str, Any] | None = None, key: str = "") -> Iterator[Event]:
    """The capture's events in decoded order, read ``BLOCK`` bytes at a time. A decoder failure names the
    file and the offset; a bad frame the decoder skips is noted with its offset in ``last_error``."""
    if cap.kept is not None:
        if stats is not None:
            stats[key or str(cap.path)] = cap.kept_stats
        yield from cap.kept
        return
    decoder = build_decoder(cap.protocol, tz=cap.tz, options=cap.options, source=cap.protocol)
    if stats is not None:
        stats[key or str(cap.path)] = decoder.stats   # filled in as the stream is read
    offset = before = 0   # where this block starts, and the one before it (a frame may span the two)
    with cap.path.open("rb") as fh:
        while True:
            data = fh.read(BLOCK)
            bad = decoder.stats.bad_frames
            try:
                events = decoder.feed(data, cap.ref) if data else decoder.flush(cap.ref)
            except (ValueError, UnicodeError, IndexError, KeyError) as exc:
                raise CaptureError(cap.path, offset, exc) from exc
            why = decoder.stats.last_error
            if decoder.stats.bad_frames > bad and why and " (bytes " not in why:
                # Bad frames are skipped and counted (nothing lost but them); where is worth saying.
                decoder.stats.last_error = f"{why} (bytes {before}-{offset + len(data)} of {cap.path.name})"
            yield from events
            if not data:
                return
            before, offset = offset, offset + len(data)


def _open_capture(path: Path, protocol: str, tz: tzinfo, received: datetime | None,
                  options: Mapping[str, Any] | None) -> _Capture:
    """A capture ready to stream. Year-less times are placed back from the capture's end, which a stream
    only knows at its end: a first pass decodes it keeping one 8-byte integer per stamped event, and
    keeps how far each run of them moves (a few runs: the shift changes only where dates wrap)."""
    ref = received or datetime.fromtimestamp(path.stat().st_mtime, UTC)
    cap = _Capture(path, protocol, tz, ref, options)
    if protocol not in YEARLESS:
        build_decoder(protocol, tz=tz, options=options, source=protocol)   # a bad option fails here, not mid-replay
        return cap
    micros = array("q")
    kept: list[Event] | None = []
    stats: dict[str, Any] = {}
    for ev in _decode(cap, stats):
        if (t := _stamp(ev)) is not None:
            micros.append(_micros(t))
        if kept is not None:
            kept.append(ev)
            if len(kept) > KEEP:
                kept = None   # too many to hold: the replay decodes the capture again as a stream
    return replace(cap, shifts=tuple(timeline_shifts(micros, tz, ref)),
                   kept=tuple(kept) if kept is not None else None, kept_stats=stats.get(str(path)))


def _micros(t: datetime) -> int:
    d = t - _EPOCH
    return (d.days * 86_400 + d.seconds) * 1_000_000 + d.microseconds


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _stream(cap: _Capture, stats: dict[str, Any] | None, key: str) -> Iterator[tuple[Event, datetime]]:
    """One capture's events, each with the instant it is replayed at, in time order.

    A receipt's text (stamped when it was read, not when it was printed) and any event without a time are
    replayed with the timed event that follows them in the capture, which the receipt was printed for
    (held until that event comes); at the end of a capture with the one before; in a capture without any time, at
    the reference. So a receipt keeps its place when several captures are merged by time. A capture is
    in time order but for a terminal clock set back: up to ``REORDER`` events are re-ordered (stable)."""
    runs = cap.shifts
    k, n_stamped = 0, 0
    next_run = runs[1][0] if len(runs) > 1 else None
    shift = runs[0][1] if runs else 0
    untimed: list[Event] = []
    last: datetime | None = None
    heap: list[tuple[datetime, int, Event]] = []
    seq = 0
    for ev in _decode(cap, stats, key):
        if (stamp := _stamp(ev)) is not None:
            while next_run is not None and n_stamped >= next_run:
                k += 1
                shift = runs[k][1]
                next_run = runs[k + 1][0] if k + 1 < len(runs) else None
            n_stamped += 1
            if shift:
                moved = replace(ev, time=shifted(stamp, shift))   # type: ignore[type-var]
                # Still inside the boundary's limits (replay does not check decoded events twice), or as decoded.
                ev = moved if check_event(moved) is None else ev
        t = None if isinstance(ev, ReceiptText) else ev.time
        if t is None:
            untimed.append(ev)
            continue
        at = t.astimezone(UTC)
        for held in (*untimed, ev):
            heapq.heappush(heap, (at, seq, held))
            seq += 1
        untimed.clear()
        last = at
        while len(heap) > REORDER:
            at0, _, ev0 = heapq.heappop(heap)
            yield ev0, at0
    at_end = last or cap.ref.astimezone(UTC)
    for held in untimed:
        heapq.heappush(heap, (at_end, seq, held))
        seq += 1
    while heap:
        at0, _, ev0 = heapq.heappop(heap)
        yield ev0, at0


class Captures:
    """Decoded captures as a stream, merged by time (re-iterable: each iteration decodes again).

    Memory stays bounded by ``BLOCK`` bytes, ``REORDER`` events per capture and the first pass's integer per
    stamped event, not by the capture's size (issue 20: a million transactions held as one sorted list
    peaked at 1.6 GiB). Within one instant a capture named earlier comes first, and within a capture the
    decoded order is kept (a receipt before the transaction printed on it), as a stable sort would."""

    def __init__(self, captures: Sequence[tuple[_Capture, str | None]]) -> None:
        self._captures = list(captures)
        # Path -> the decoder's stats of the latest pass, filled in as the stream is read (the summary
        # is printed after the replay).
        self.stats: dict[str, Any] = {}

    def __iter__(self) -> Iterator[Any]:
        streams = []
        for cap, name in self._captures:
            one = _stream(cap, self.stats, str(cap.path) if name is None else f"{name}={cap.path}")
            streams.append(one if name is None else _named(one, name))
        if len(streams) == 1:
            return iter(streams[0])
        return heapq.merge(*streams, key=lambda item: item[1])


def _named(stream: Iterator[tuple[Event, datetime]], name: str) -> Iterator[tuple[Event, datetime, str]]:
    for ev, at in stream:
        yield ev, at, name


def decode_captures(paths: Sequence[Path], protocol: str, tz: tzinfo, received: datetime | None = None, *,
                    options: Mapping[str, Any] | None = None) -> tuple[Captures, dict[str, Any]]:
    """Every capture decoded with ``options`` (the configured source's, from
    :func:`agent.sources.decoder_options`) as a stream of (event, the instant it is replayed at), merged by
    time; and the decoders' stats, per path, complete once the stream has been read."""
    captures = Captures([(_open_capture(p, protocol, tz, received, options), None) for p in paths])
    return captures, captures.stats


# An event and the instant it is replayed at, optionally with the [[source]] it came from (several wires).
ReplayItem = tuple[Event, datetime] | tuple[Event, datetime, str]


@dataclass(frozen=True, slots=True)
class Wire:
    """One capture of a several-wire replay: the [[source]] it is replayed as, its protocol, the file."""

    name: str
    protocol: str
    path: Path
    options: Mapping[str, Any] = field(default_factory=dict)


def decode_wires(wires: Sequence[Wire], tz: tzinfo, received: datetime | None = None,
                 ) -> tuple[Captures, dict[str, Any]]:
    """Each capture decoded as its source would decode it live, then all merged by time (a stream of
    (event, instant, source name)): a day of the terminal line and the till's printer replays as the
    daemon saw it. Within one instant a capture named earlier comes first; within a capture the decoded
    order is kept (a receipt before the transaction printed on it). Stats are keyed ``NAME=PATH``."""
    captures = Captures([(_open_capture(w.path, w.protocol, tz, received, w.options), w.name) for w in wires])
    return captures, captures.stats
