"""Captures decoded for replay as a stream (issue 20): read a block at a time, year-less terminal times placed
on each capture's own timeline, several captures merged by time. ``agent/replay.py`` runs the stream."""

from __future__ import annotations

import contextlib
import heapq
import io
import os
import pickle
import tempfile
import weakref
from array import array
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime, tzinfo
from itertools import repeat
from operator import attrgetter
from pathlib import Path
from typing import IO, Any

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


class SpillError(CaptureError):
    """The first pass could not keep a large capture's decoded events in the temporary directory (a full
    or read-only disk): say where, and what to do, instead of a traceback."""

    def __init__(self, path: Path, cause: OSError) -> None:
        ValueError.__init__(self, f"{path}: no room to keep its decoded events in {tempfile.gettempdir()} "
                                  f"({cause.strerror or cause}): free space there, or set TMPDIR to a "
                                  "directory with room, and run the replay again")
        self.path, self.offset, self.cause = path, -1, cause


BLOCK = 1 << 16      # bytes read and decoded at a time: a capture is never held whole
REORDER = 10_000     # events of one capture re-ordered by time (a terminal clock set back a little)
KEEP = 20_000        # a capture of up to this many events is kept in memory from the first pass (a few MB)
SPILL_CHUNK = 1024   # a larger one's events go to a temporary file this many at a time (_Spill)


@dataclass(frozen=True, slots=True)
class _Capture:
    path: Path
    protocol: str
    tz: tzinfo
    ref: datetime
    options: Mapping[str, Any] | None
    shifts: tuple[tuple[int, int], ...] = ()   # drivers/timeutil.timeline_shifts of its year-less times
    # The first pass's events (a small capture's in memory, a larger one's spilled to a temporary file)
    # and that pass's decoder stats; None: a protocol without a first pass, decoded as it is streamed.
    kept: tuple[Event, ...] | _Spill | None = None
    kept_stats: Any = None


_STAMPED = (Transaction, Settlement)   # a tuple built once: ``A | B`` builds a union object per call


def _stamp(ev: Event) -> datetime | None:
    """The terminal's own time of a transaction or settlement (the year-less kind), else None."""
    return ev.time if isinstance(ev, _STAMPED) else None


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
    keeps how far each run of them moves (a few runs: the shift changes only where dates wrap). The same
    pass keeps the events it decoded, in memory up to ``KEEP`` and beyond that in a :class:`_Spill` file
    (~135 bytes an event: ~140 MB for a million transactions, in the system's temporary directory), so
    the replay reads them back instead of decoding the capture again."""
    ref = received or datetime.fromtimestamp(path.stat().st_mtime, UTC)
    cap = _Capture(path, protocol, tz, ref, options)
    if protocol not in YEARLESS:
        build_decoder(protocol, tz=tz, options=options, source=protocol)   # a bad option fails here, not mid-replay
        return cap
    micros = array("q")
    kept: list[Event] = []
    spill: _Spill | None = None
    stats: dict[str, Any] = {}
    try:
        for ev in _decode(cap, stats):
            if (t := _stamp(ev)) is not None:
                micros.append(_micros(t))
            kept.append(ev)
            if spill is not None and len(kept) >= SPILL_CHUNK:
                spill.write(kept)
                kept.clear()
            elif spill is None and len(kept) > KEEP:
                spill = _Spill(path)   # too many to hold: to disk, read back as the replay streams them
                spill.write(kept)
                kept.clear()
        if spill is not None:
            spill.write(kept)
    except BaseException:
        if spill is not None:
            spill.close()
        raise
    return replace(cap, shifts=tuple(timeline_shifts(micros, tz, ref)),
                   kept=spill if spill is not None else tuple(kept), kept_stats=stats.get(str(path)))


class _Spill:
    """A large capture's events from the first pass, in an unnamed temporary file (gone when closed, or
    when the process ends however it ends), read back a chunk at a time: the capture is decoded once,
    not once for its timeline and again for the replay, and memory stays bounded by a chunk.

    Why not decode twice with a lighter first pass: the timeline is placed from the events that pass the
    event boundary (drivers/boundary.py), and a time the boundary would refuse changes the year given to
    the events before it (tests/test_replay_spill.py); only the real decode knows which pass. A chunk is
    a pickled list of (type, field values): every event type is a frozen slotted dataclass whose fields
    are plain values and datetimes, and each is rebuilt as it was, without running its checks again.
    A datetime's zone comes back as the very object it went out as (see :meth:`_dumps`): arithmetic
    between aware datetimes depends on whether their tzinfo is the same object."""

    def __init__(self, path: Path) -> None:
        self._path = path   # the capture: named in a SpillError
        try:
            self._file = tempfile.TemporaryFile(prefix="settleguard-replay-")  # noqa: SIM115 - outlives this call
        except OSError as exc:
            raise SpillError(path, exc) from exc
        # Closed (and so deleted) when the stream holding it goes away, without a ResourceWarning.
        self.close = weakref.finalize(self, _close_quietly, self._file)
        self._chunks: list[tuple[int, int]] = []   # (offset, length) of each pickled chunk
        self._size = 0
        self._zones: list[tzinfo] = []

    def write(self, events: Sequence[Event]) -> None:
        # SPILL_CHUNK at a time: reading back holds one chunk's rows beside the replay, not the ``KEEP``
        # events held before the spill began.
        for start in range(0, len(events), SPILL_CHUNK):
            blob = self._dumps([(type(ev), _shape(type(ev))[0](ev)) for ev in events[start:start + SPILL_CHUNK]])
            try:
                self._file.write(blob)
            except OSError as exc:   # a full disk: said plainly, not as a traceback (buffered: or at the flush)
                raise SpillError(self._path, exc) from exc
            self._chunks.append((self._size, len(blob)))
            self._size += len(blob)

    def __iter__(self) -> Iterator[Event]:
        try:
            self._file.flush()
        except OSError as exc:
            raise SpillError(self._path, exc) from exc
        fd = self._file.fileno()
        for offset, length in self._chunks:
            # pread: several iterations of one capture (a re-iterated stream) never share a file position.
            blob = os.pread(fd, length, offset)
            if len(blob) != length:
                raise OSError(f"replay spill file cut short ({len(blob)} of {length} bytes)")
            for cls, row in self._loads(blob):
                ev: Event = _NEW(cls)
                # object.__setattr__ for each field, looped in C (a frozen dataclass refuses plain setattr).
                _drain(map(_SET, repeat(ev), _shape(cls)[1], row))
                yield ev

    def _dumps(self, rows: list[tuple[type, tuple[Any, ...]]]) -> bytes:
        buf = io.BytesIO()
        _ZonePickler(buf, self._zones).dump(rows)
        return buf.getvalue()

    def _loads(self, blob: bytes) -> list[tuple[type, tuple[Any, ...]]]:
        rows: list[tuple[type, tuple[Any, ...]]] = _ZoneUnpickler(io.BytesIO(blob), self._zones).load()
        return rows


def _close_quietly(file: IO[bytes]) -> None:
    """Close (and so delete) a spill file; closing flushes what is buffered, which a full disk refuses: the
    file is gone either way and the error that matters was raised already (SpillError)."""
    with contextlib.suppress(OSError):
        file.close()


def _zone(k: int) -> tzinfo:   # pragma: no cover - never called: _ZoneUnpickler answers for it
    raise AssertionError("a spilled zone is read back by _ZoneUnpickler only")


class _ZonePickler(pickle.Pickler):
    """Pickles each zone as a reference to the spill's list of zones, the object itself kept there."""

    def __init__(self, file: io.BytesIO, zones: list[tzinfo]) -> None:
        super().__init__(file, pickle.HIGHEST_PROTOCOL)
        self._zones = zones

    def reducer_override(self, obj: Any) -> Any:
        # Called for datetimes and zones, not for str/int/None/tuple (pickle's own fast path skips those).
        if isinstance(obj, tzinfo):
            zones = self._zones
            for k, z in enumerate(zones):
                if z is obj:
                    return _zone, (k,)
            zones.append(obj)
            return _zone, (len(zones) - 1,)
        return NotImplemented


class _ZoneUnpickler(pickle.Unpickler):
    def __init__(self, file: io.BytesIO, zones: list[tzinfo]) -> None:
        super().__init__(file)
        self._zones = zones

    def find_class(self, module: str, name: str) -> Any:
        if module == __name__ and name == "_zone":
            return self._zones.__getitem__
        return super().find_class(module, name)


# Event type -> (its field values as a tuple, its field names): read in C by attrgetter.
_SHAPES: dict[type, tuple[Callable[[Any], tuple[Any, ...]], tuple[str, ...]]] = {}
_NEW = object.__new__
_drain: Callable[[Iterator[None]], None] = deque[None](maxlen=0).extend
_SET = object.__setattr__


def _shape(cls: type) -> tuple[Callable[[Any], tuple[Any, ...]], tuple[str, ...]]:
    shape = _SHAPES.get(cls)
    if shape is None:
        names = tuple(f.name for f in fields(cls))
        get = attrgetter(*names)
        # attrgetter of one name returns the value, not a 1-tuple.
        shape = _SHAPES[cls] = ((lambda ev: (get(ev),)) if len(names) == 1 else get, names)
    return shape


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
    """Decoded captures as a stream, merged by time (re-iterable: each iteration decodes again, or reads
    again what a year-less capture's first pass kept).

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
