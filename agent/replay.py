"""``settleguard replay``: the full pipeline on simulated time, for tuning rules on past data.

Captures are decoded with the same decoders the daemon uses; events are
ordered by their own timestamps; the day's schedule (pre-close review,
cutoff, reminders, baseline refresh) fires at its simulated times; the
journal lives in a temporary directory unless ``--state`` is given. Nothing
is sent: what would be sent is counted per channel.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any

from agent.config import LoadedConfig
from agent.messages import Command, EventBatch
from agent.pipeline import Pipeline
from agent.schedule import fire_times, plan
from agent.store.journal import Journal
from agent.store.schema import journal_path
from drivers.clock import ManualClock
from drivers.events import Event, ReceiptText
from drivers.protocols import build_decoder

CHUNK = 2000  # events per journal transaction: one commit per chunk keeps replay fast and still atomic


@dataclass
class ReplayResult:
    notifications: list[Any] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    outbox: dict[str, int] = field(default_factory=dict)
    decoder_stats: dict[str, Any] = field(default_factory=dict)
    first: datetime | None = None
    last: datetime | None = None


def decode_captures(paths: Sequence[Path], protocol: str, tz: tzinfo, received: datetime | None = None, *,
                    options: Mapping[str, Any] | None = None,
                    ) -> tuple[list[tuple[Event, datetime]], dict[str, Any]]:
    """Every capture decoded with ``options`` (the configured source's, from
    :func:`agent.sources.decoder_options`); each event paired with the instant it is replayed at."""
    out: list[tuple[Event, datetime]] = []
    stats: dict[str, Any] = {}
    for path in paths:
        data = path.read_bytes()
        ref = received or datetime.fromtimestamp(path.stat().st_mtime, UTC)
        decoder = build_decoder(protocol, tz=tz, options=options, source=protocol)
        events = decoder.feed(data, ref) + decoder.flush(ref)
        stats[str(path)] = decoder.stats
        last_time: datetime | None = None
        for ev in events:
            t = ev.time if ev.time is not None else last_time
            if t is None:
                t = ref
            last_time = t
            out.append((ev, t.astimezone(UTC)))
    # A receipt keeps its place right before the transaction it printed (same instant, stable sort).
    out.sort(key=lambda pair: pair[1])
    return out, stats


def replay(loaded: LoadedConfig, events: Iterable[tuple[Event, datetime]], *, state: Path | None = None,
           listener: Callable[[Any], None] | None = None, source: str = "replay") -> ReplayResult:
    result = ReplayResult()
    items = list(events)
    holder = None
    # Evidence bundles are files for a person: worth writing only where they will still exist afterwards.
    keep_evidence = state is not None
    if state is None:
        holder = tempfile.TemporaryDirectory(prefix="settleguard-replay-")
        state = Path(holder.name)
    state.mkdir(parents=True, exist_ok=True)
    try:
        return _run(loaded, items, state, listener, source, result, keep_evidence)
    finally:
        if holder is not None:
            holder.cleanup()


def _run(loaded: LoadedConfig, items: list[tuple[Event, datetime]], state: Path,
         listener: Callable[[Any], None] | None, source: str, result: ReplayResult,
         keep_evidence: bool) -> ReplayResult:
    from agent.delivery.channels.factory import build_channels, routing

    channels = build_channels(loaded.config, tz=loaded.tz, path=loaded.path)
    journal = Journal(journal_path(state))
    # Replay runs on the events' own time: the clock is where the capture is, moved before each batch
    # and each scheduled job. With nothing to replay, any instant will do: nothing reads it.
    clock = ManualClock(items[0][1] - timedelta(seconds=1) if items else None)
    start = clock.now()

    def follow(item: EventBatch | Command) -> None:
        if isinstance(item, EventBatch):
            clock.set(item.received)

    def collect(item: Any) -> None:
        result.notifications.append(item)
        if listener is not None:
            listener(item)

    primary, people = routing(loaded.config, channels)
    pipeline = Pipeline(loaded, journal, clock=clock, channels=primary, people_channels=people,
                        listeners=[collect], evidence_dir=state / "evidence" if keep_evidence else None)

    def run_job(when: datetime, name: str) -> None:
        clock.set(when)
        pipeline.process([Command(name)])

    if items:
        result.first, result.last = items[0][1], items[-1][1]
        end = items[-1][1] + timedelta(hours=1)
        schedule = fire_times([j for j in plan(loaded) if j.name != "reminders"], start, end)
        # Reminders only matter while something is open; a 1-minute tick over a month would dominate.
        schedule += [(t, "reminders") for t in _hourly(start, end)]
        schedule.sort(key=lambda x: x[0])
        pending: list[EventBatch | Command] = []
        held: list[Event] = []  # a receipt travels with the transaction printed on it (one batch)
        si = 0
        for event, at in items:
            while si < len(schedule) and schedule[si][0] <= at:
                if pending:
                    pipeline.process(pending, before_each=follow)
                    pending = []
                run_job(*schedule[si])
                si += 1
            if isinstance(event, ReceiptText):
                held.append(event)
                continue
            pending.append(EventBatch(source, (*held, event), at))
            held = []
            if len(pending) >= CHUNK:
                pipeline.process(pending, before_each=follow)
                pending = []
        if held:
            pending.append(EventBatch(source, tuple(held), items[-1][1]))
        if pending:
            pipeline.process(pending, before_each=follow)
        for when, name in schedule[si:]:
            run_job(when, name)
    result.counts = dict(pipeline.counts)
    result.outbox.update(journal.outbox_counts_by_channel())
    journal.close()
    return result


def _hourly(start: datetime, end: datetime) -> list[datetime]:
    out = []
    t = start.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    while t <= end:
        out.append(t)
        t += timedelta(hours=1)
    return out
