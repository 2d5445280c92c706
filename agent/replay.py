"""``settleguard replay``: the full pipeline on simulated time, for tuning rules and the noise budget.

Captures are decoded with the same decoders the daemon uses; events are
ordered by their own timestamps; the daemon's own :class:`~agent.schedule.Scheduler`
is stepped on the simulated clock (pre-close review, cutoff, reminders with
their cadence and quiet hours, baseline refresh: one code path with the
daemon); the journal lives in a temporary directory unless ``--state`` is
given. Nothing is sent: the real delivery loop is run over the outbox on
simulated time to count what each phone would have received.
"""

from __future__ import annotations

import collections
import itertools
import queue
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any

from agent.alerts.budget import NoiseBudget
from agent.alerts.review import next_reminder

# The stream of decoded captures lives in agent/captures.py; its names are part of replay's interface.
from agent.captures import YEARLESS as YEARLESS
from agent.captures import CaptureError as CaptureError
from agent.captures import Captures, ReplayItem
from agent.captures import Wire as Wire
from agent.captures import decode_captures as decode_captures
from agent.captures import decode_wires as decode_wires
from agent.config import LoadedConfig
from agent.delivery.channels.base import Channel, HttpFailure, HttpRequest, HttpResponse, Notice, Outcome
from agent.messages import Command, EventBatch
from agent.model import Alert
from agent.pipeline import Pipeline
from agent.schedule import Scheduler, fire_times
from agent.store.journal import Journal
from agent.store.outbox import OutboxAsOf
from agent.store.schema import journal_path
from drivers.clock import ManualClock
from drivers.events import Event, ReceiptText, Transaction

CHUNK = 2000  # events per journal transaction: one commit per chunk keeps replay fast and still atomic


@dataclass
class ReplayResult:
    notifications: list[Any] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    outbox: dict[str, int] = field(default_factory=dict)
    decoder_stats: dict[str, Any] = field(default_factory=dict)
    first: datetime | None = None
    last: datetime | None = None
    end: datetime | None = None                    # the schedule ran up to here
    people_channels: list[str] = field(default_factory=list)
    phones: list[PhoneMessage] = field(default_factory=list)
    # Rule id -> transactions it could not judge for lack of history (RuleEngine.insufficient).
    silent: dict[str, int] = field(default_factory=dict)


def replay(loaded: LoadedConfig, events: Iterable[ReplayItem], *, state: Path | None = None,
           listener: Callable[[Any], None] | None = None, source: str = "replay",
           until: datetime | None = None, phones: bool = True, batched: bool = True) -> ReplayResult:
    """The captured events through the pipeline, the daemon's scheduler stepping on simulated time
    until ``until`` (default: an hour after the last event); with ``phones``, what each people
    channel would have received, counted by the real delivery loop (:func:`count_phones`).

    An item that names its source (:func:`decode_wires`) is handed to the pipeline as that source's, as
    the daemon would (``[match] sources`` names the till's wires); the others as ``source``'s.

    ``batched`` (the default) writes up to :data:`CHUNK` events per journal transaction and keeps the
    baseline's amounts in memory; without it each event is its own transaction and the baseline is
    re-read from the journal, as the daemon does. Both give the same alerts (tests/test_replay_batched.py)."""
    result = ReplayResult()
    holder = None
    # Evidence bundles are files for a person: worth writing only where they will still exist afterwards.
    keep_evidence = state is not None
    if state is None:
        holder = tempfile.TemporaryDirectory(prefix="settleguard-replay-")
        state = Path(holder.name)
    state.mkdir(parents=True, exist_ok=True)
    try:
        journal = Journal(journal_path(state))
        # Events of decoded captures passed the decoder's boundary (drivers/boundary.py); others are checked.
        checked = isinstance(events, Captures)
        try:
            if batched:
                # One commit per ~5,000 transactions, no fsync, an unread index built at the end
                # (Journal.bulk_load: the durability contract is there and in the README).
                with journal.bulk_load(build_after=keep_evidence, card_lookback=_card_lookback(loaded)):
                    _run(loaded, iter(events), journal, checked, state, listener, source, result, keep_evidence,
                         until, CHUNK)
            else:
                _run(loaded, iter(events), journal, checked, state, listener, source, result, keep_evidence,
                     until, 1)
        finally:
            journal.close()   # also when a capture breaks part-way (CaptureError): what was replayed stays
        if phones and result.first is not None and result.end is not None:
            result.phones = count_phones(loaded, journal_path(state), result.first, result.end)
        return result
    finally:
        if holder is not None:
            holder.cleanup()


def _run(loaded: LoadedConfig, stream: Iterator[ReplayItem], journal: Journal, checked: bool, state: Path,
         listener: Callable[[Any], None] | None, source: str, result: ReplayResult,
         keep_evidence: bool, until: datetime | None, chunk: int) -> None:
    from agent.delivery.channels.factory import build_channels, routing

    channels = build_channels(loaded.config, tz=loaded.tz, path=loaded.path, sending=False)
    # Replay runs on the events' own time: the clock is where the capture is, moved before each batch
    # and each scheduled job. With nothing to replay, any instant will do: nothing reads it.
    # The events come as a stream (a million would not fit in a till's memory): only the first is looked at
    # ahead, for the clock's start; the schedule's firings are computed a day at a time (_Firings).
    first_item = next(stream, None)
    clock = ManualClock(first_item[1] - timedelta(seconds=1) if first_item is not None else None)
    start = clock.now()

    def follow(item: EventBatch | Command) -> None:
        if isinstance(item, EventBatch):
            clock.set(item.received)

    def collect(item: Any) -> None:
        result.notifications.append(item)
        if listener is not None:
            listener(item)

    primary, people = routing(loaded.config, channels)
    result.people_channels = list(people)
    pipeline = Pipeline(loaded, journal, clock=clock, channels=primary, people_channels=people,
                        listeners=[collect], evidence_dir=state / "evidence" if keep_evidence else None,
                        baseline_in_memory=chunk > 1, rules_in_memory=True)
    # The daemon's own scheduler (agent/schedule.py), stepped instead of threaded: the same plan,
    # the same coalescing and grace, posting the same commands onto a queue the pipeline drains.
    inbox: queue.Queue[Any] = queue.Queue()
    scheduler = Scheduler(loaded, inbox, clock, since=start)
    budget = pipeline.budget

    if first_item is not None:
        result.first = first_item[1]
        # Without ``until`` the end is an hour after the last event, known only at the end of the stream; every
        # firing up to an event's time is before it, so firings need no cap until then.
        fixed = _Firings(scheduler.jobs, start, until)
        reminder_step = next((j.trigger.interval for j in scheduler.jobs if j.name == "reminders"), None)
        # Reminders are for people: without a people channel the job never sends anything.
        reminding = reminder_step is not None and bool(people)

        def step_to(t: datetime) -> None:
            clock.set(t)
            scheduler.run_due()
            posted = []
            while not inbox.empty():
                posted.append(inbox.get_nowait())
            if posted:
                pipeline.process(posted)

        # Matching the till's sales (agent/match.py): live, the idle pipeline judges a charge the moment its
        # grace ends. Replay does the same at that instant, so a sale printed after the grace is too late
        # here as it is live, and an alert opens when it would.
        matcher = pipeline.till.matcher
        grace = matcher.grace if matcher is not None else None

        def judge_at(t: datetime) -> None:
            clock.set(max(t, clock.now()))
            pipeline.process([Command("tick")])

        def schedule_until(limit: datetime) -> None:
            """Every scheduler step due up to ``limit``. Reminder minutes in which the journal says none can
            be due are skipped: the job would find nothing, and the next step posts the latest firing."""
            while True:
                nxt = fixed.next_until(limit)
                due = next_reminder(journal, budget, clock.now()) if reminding else None
                if due is not None and reminder_step is not None:
                    due = max(due, clock.now())
                    due = start + reminder_step * -((start - due) // reminder_step)   # the firing at or after it
                    if due <= clock.now():
                        due += reminder_step
                judge = matcher.next_due() if matcher is not None else None
                t = min((x for x in (nxt, due, judge) if x is not None), default=None)
                if t is None or t > limit:
                    return
                if judge is not None and t == judge and t != nxt and t != due:
                    judge_at(t)
                    continue
                if nxt is not None and t == nxt:
                    fixed.pop()
                step_to(t)

        pending: list[EventBatch | Command] = []
        # A receipt travels with the transaction printed on it (one batch), on its own wire.
        held: dict[str, list[Event]] = {}
        # A chunk spans less than the shortest reminder interval: an alert it opens cannot fall due
        # for a reminder before the chunk is committed and the journal is asked.
        span = budget.first_interval
        since: datetime | None = None     # the first event of the chunk being gathered
        charged: datetime | None = None   # the first transaction of the chunk (matching: its grace runs)
        last = first_item[1]
        for item in itertools.chain((first_item,), stream):
            event, at = item[0], item[1]
            last = at
            wire = item[2] if len(item) > 2 else source   # type: ignore[misc]
            if matcher is not None and grace is not None:
                # Every pending item came before any grace the matcher knows of ends (checked as each came):
                # hand them over, then judge each charge at the end of its grace, up to this item.
                due = matcher.next_due()
                if pending and ((charged is not None and at >= charged + grace) or (due is not None and due <= at)):
                    pipeline.process(pending, before_each=follow, optimistic=chunk > 1)
                    pending, charged = [], None
                    due = matcher.next_due()
                while due is not None and due <= at and ((f := fixed.next_until(at)) is None or due < f):
                    judge_at(due)
                    due = matcher.next_due()
            if reminding and pending and since is not None and at - since >= span:
                pipeline.process(pending, before_each=follow, optimistic=chunk > 1)
                pending = []
            if not pending:
                since, charged = at, None
            if fixed.next_until(at) is not None or (reminding and _reminder_may_fall(
                    journal, budget, clock, at)):
                if pending:
                    pipeline.process(pending, before_each=follow, optimistic=chunk > 1)
                    pending = []
                schedule_until(at)
            if isinstance(event, ReceiptText):
                held.setdefault(wire, []).append(event)
                continue
            pending.append(EventBatch(wire, (*held.pop(wire, ()), event), at, checked=checked))
            if charged is None and isinstance(event, Transaction):
                charged = at
            if len(pending) >= chunk:
                pipeline.process(pending, before_each=follow, optimistic=chunk > 1)
                pending, charged = [], None
        for wire, texts in held.items():
            pending.append(EventBatch(wire, tuple(texts), last, checked=checked))
        if pending:
            pipeline.process(pending, before_each=follow, optimistic=chunk > 1)
        result.last = last
        end = until or last + timedelta(hours=1)
        result.end = end
        fixed.cap(end)
        schedule_until(end)
    result.counts = dict(pipeline.counts)
    result.silent = dict(pipeline.engine.insufficient)
    result.outbox.update(journal.outbox_counts_by_channel())


def _card_lookback(loaded: LoadedConfig) -> timedelta:
    """How far back the rules ask the journal for a card's sales (REF-001's window, AMT-001's card days), with
    a margin for transactions stamped out of order: what replay's bulk load holds in memory instead of the
    card-tail index. A longer look-back is still answered right, by SQLite (store/bulk.py ``BulkTails``)."""
    params = loaded.rule_params
    ref = getattr(params.get("REF-001"), "window", timedelta(0))
    card_days = getattr(params.get("AMT-001"), "card_days", 0)
    return max(ref, timedelta(days=card_days)) + timedelta(days=2)


class _Firings:
    """The schedule's fixed firings (every job but reminders) from ``start``, computed a day at a time as
    replay reaches them (a year's list up front needs the end, which a stream knows last), optionally
    capped at ``until``; same instants and order as one :func:`~agent.schedule.fire_times` call."""

    WINDOW = timedelta(days=1)

    def __init__(self, jobs: Any, start: datetime, until: datetime | None) -> None:
        self._jobs, self._start, self._cap = jobs, start, until
        self._upto = start                  # firings in (start, _upto] are computed
        self._due: collections.deque[datetime] = collections.deque()

    def cap(self, end: datetime) -> None:
        if self._cap is None or end < self._cap:
            self._cap = end
        while self._due and self._due[-1] > self._cap:
            self._due.pop()

    def next_until(self, limit: datetime) -> datetime | None:
        """The next firing not yet run if it is at or before ``limit`` (and the cap), else None."""
        if self._cap is not None:
            limit = min(limit, self._cap)
        while not self._due and self._upto < limit:
            upto = self._upto + self.WINDOW
            if self._cap is not None:
                upto = min(upto, self._cap)
            self._due.extend(at for at, name in fire_times(self._jobs, self._upto, upto, anchor=self._start)
                             if name != "reminders")
            self._upto = upto
        if self._due and self._due[0] <= limit:
            return self._due[0]
        return None

    def pop(self) -> None:
        self._due.popleft()


def _reminder_may_fall(journal: Journal, budget: Any, clock: ManualClock, at: datetime) -> bool:
    due = next_reminder(journal, budget, clock.now())
    return due is not None and due <= at


# -- what each phone would have received --------------------------------------------------------
@dataclass(frozen=True, slots=True)
class PhoneMessage:
    """One message a people channel would have delivered (a digest of several findings is one)."""

    channel: str
    at: datetime
    kind: str
    rules: tuple[str, ...]
    alert_ids: tuple[str, ...]
    quiet: bool          # sent inside quiet hours
    critical: bool       # every finding in it is critical (agent/alerts/budget.py)
    parts: int = 1       # messages on the phone: a robot splits what exceeds its size limit


class _Counter(Channel):
    """Stands in for a people channel: accepts everything, remembers what it was handed and into how
    many messages the real channel would have split it (a robot's size limit: ``payloads``)."""

    def __init__(self, real: Channel) -> None:
        self.name, self.type, self.groups, self.limits = real.name, real.type, True, real.limits
        self.real = real
        self.sent: list[tuple[datetime, Notice, int]] = []

    def send(self, notice: Notice, *, message_id: str, now: datetime, sender: Any) -> Outcome:
        payloads = getattr(self.real, "payloads", None)
        parts = len(payloads(notice, now)) if callable(payloads) else 1
        self.sent.append((now, notice, max(1, parts)))
        return Outcome.ok()


class _NoNetwork:
    """The sender handed to the counting run: nothing may leave the machine (the stand-ins never call it)."""

    def post(self, request: HttpRequest) -> HttpResponse:
        raise HttpFailure("replay sends nothing")


def count_phones(loaded: LoadedConfig, path: Path, start: datetime, end: datetime) -> list[PhoneMessage]:
    """Run the real delivery loop (agent/delivery/loop.py: grouping, group_wait and group_interval,
    superseded announcements, rate limits) over the replay's outbox on simulated time, every channel
    answering "sent"; what each people channel was handed is what its phones would have shown.

    The outbox is seen as it stood at each instant (rows written later do not exist yet), and
    everything the loop marks is rolled back afterwards; a message the real channel would split to fit
    its size limit counts as its parts. Not modelled: failed sends and their retries.
    """
    from agent.delivery.channels.factory import build_channels, routing
    from agent.delivery.loop import Delivery

    cfg = loaded.config
    channels = build_channels(cfg, tz=loaded.tz, path=loaded.path, sending=False)
    _, people = routing(cfg, channels)
    counters = [_Counter(c) for c in channels if c.name in people]
    if not counters:
        return []
    outbox = OutboxAsOf(path, start)
    clock = ManualClock(start)
    delivery = Delivery(outbox, counters, sender=_NoNetwork(), clock=clock, config=cfg.delivery, shop=cfg.shop.name,
                        source=cfg.shop.event_source)
    names = [c.name for c in counters]
    outbox.begin()
    try:
        idle_steps = 0
        while clock.now() <= end:
            outbox.as_of = clock.now()
            wait = delivery.step()
            if any(outbox.pending(n) for n in names):
                if wait <= 0:
                    idle_steps += 1
                    if idle_steps < 1000:   # sent something: look again at once
                        continue
                    wait = 1.0
                idle_steps = 0
                nxt = clock.now() + timedelta(seconds=wait)
                written = outbox.next_written(names)
                clock.set(min(nxt, written) if written is not None else nxt)
                continue
            written = outbox.next_written(names)
            if written is None:
                break
            clock.set(written)
    finally:
        outbox.rollback()
        outbox.close()
    budget = NoiseBudget(loaded)
    out: list[PhoneMessage] = []
    for counter in counters:
        for at, notice, parts in counter.sent:
            alerts = [Alert.from_dict(a) for a in notice.alerts]
            critical = bool(alerts) and all(budget.is_critical(a, notice.created) for a in alerts)
            out.append(PhoneMessage(counter.name, at, str(notice.kind), tuple(sorted({a.rule for a in alerts})),
                                    tuple(a.id for a in alerts), budget.quiet_until(at) is not None, critical,
                                    parts))
    out.sort(key=lambda m: (m.at, m.channel))
    return out


@dataclass(frozen=True, slots=True)
class PhoneDay:
    channel: str
    day: date
    count: int
    by_rule: dict[str, int]
    by_hour: dict[int, int]
    quiet: int               # of them inside quiet hours
    quiet_not_critical: int  # ... and not critical: the budget says this is 0


def phone_days(messages: Sequence[PhoneMessage], tz: tzinfo, first: datetime, last: datetime,
               channels: Sequence[str]) -> list[PhoneDay]:
    """Messages per people channel per shop-local day, every day of the span (a silent day counts 0)."""
    out: list[PhoneDay] = []
    d0, d1 = first.astimezone(tz).date(), last.astimezone(tz).date()
    for channel in channels:
        mine = [m for m in messages if m.channel == channel]
        day = d0
        while day <= d1:
            today = [m for m in mine if m.at.astimezone(tz).date() == day]
            rules: Counter[str] = Counter()
            hours: Counter[int] = Counter()
            for m in today:
                rules.update({r: m.parts for r in m.rules or (m.kind,)})
                hours[m.at.astimezone(tz).hour] += m.parts
            out.append(PhoneDay(channel, day, sum(m.parts for m in today), dict(sorted(rules.items())),
                                dict(sorted(hours.items())), sum(m.parts for m in today if m.quiet),
                                sum(m.parts for m in today if m.quiet and not m.critical)))
            day += timedelta(days=1)
    return out
