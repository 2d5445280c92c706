"""``settleguard fleet watch``: CHAIN-001 as a small durable JetStream consumer (optional).

It reads ``settleguard.*.*.transaction`` through a durable pull consumer, so a restart resumes after the
last message it acknowledged; a message is acknowledged only after its findings were published (stored
by the server), so a crash in between re-reads it, and the deterministic ``Nats-Msg-Id`` of each finding
makes the second publish a no-op within the stream's duplicate window. On a restart the window is warmed
from what the durable already judged (read, never judged again), so a pair split across the restart is
still found. Created the first time, the durable starts ``window + late`` back, not at the stream's start:
months of old pairs are nobody's business any more.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from agent.fleet.chain import ChainWindow, Finding, alert_events, charge
from agent.fleet.names import DEFAULT_DURABLE, kind_filter, subject
from agent.fleet.stream import NatsOptions, parse_event, read
from drivers.clock import Clock


@dataclass(frozen=True)
class WatchOptions:
    window: timedelta = timedelta(minutes=10)
    late: timedelta = timedelta(hours=1)
    durable: str = DEFAULT_DURABLE
    once: bool = False
    batch: int = 256
    wait: float = 2.0            # a fetch's wait: how soon a stop request is noticed


@dataclass
class WatchResult:
    read: int = 0          # transaction messages taken from the durable consumer
    warmed: int = 0        # charges re-read into the window from before the restart
    findings: int = 0
    published: int = 0     # alert CloudEvents the server stored
    duplicates: int = 0    # ... and those it already had (same Nats-Msg-Id): a restart's republish
    skipped: int = 0       # messages that were not transaction CloudEvents


async def _deadline(js: Any, options: NatsOptions, till: tuple[str, str]) -> str | None:
    """The till's next cutoff from its last heartbeat: the alert's deadline there (None when unknown)."""
    try:
        raw = await js.get_last_msg(options.stream, subject(*till, "heartbeat"))
    except Exception:   # no heartbeat yet (NotFoundError) or a hiccup: the alert goes without a deadline
        return None
    event = parse_event(raw.data or b"")
    cutoff = event["data"].get("next_cutoff") if event else None
    return cutoff if isinstance(cutoff, str) else None


async def _consumer(js: Any, options: NatsOptions, wopts: WatchOptions, clock: Clock,
                    window: ChainWindow, result: WatchResult) -> Any:
    from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
    from nats.js.errors import NotFoundError

    try:
        info = await js.consumer_info(options.stream, wopts.durable)
    except NotFoundError:
        info = None
    if info is None:
        since = clock.now() - wopts.window - wopts.late
        config = ConsumerConfig(durable_name=wopts.durable, name=wopts.durable,
                                description="settleguard fleet watch (CHAIN-001)",
                                deliver_policy=DeliverPolicy.BY_START_TIME, opt_start_time=since,
                                ack_policy=AckPolicy.EXPLICIT, ack_wait=60.0, max_ack_pending=4 * wopts.batch,
                                filter_subject=kind_filter("transaction"))
        await js.add_consumer(options.stream, config=config)
    else:
        floor = info.ack_floor.stream_seq if info.ack_floor else 0
        if floor > 0:
            since = clock.now() - wopts.window - wopts.late
            async for entry in read(js, options, kind_filter("transaction"), since=since, upto_seq=floor):
                seen = charge(entry.subject, entry.event)
                if seen is not None:
                    window.add(seen, find=False)
                    result.warmed += 1
    return await js.pull_subscribe_bind(durable=wopts.durable, stream=options.stream)


async def watch(options: NatsOptions, wopts: WatchOptions, clock: Clock, *, stop: asyncio.Event | None = None,
                report: Callable[[Finding], None] | None = None) -> WatchResult:
    """Run the rule until ``stop`` is set (or, with ``once``, until nothing is pending)."""
    from nats.errors import TimeoutError as NatsTimeout

    from agent.fleet.stream import connect, stream_subjects

    stop = stop or asyncio.Event()
    result = WatchResult()
    window = ChainWindow(wopts.window, wopts.late)
    nc = await connect(options, reconnect=not wopts.once)
    try:
        js = nc.jetstream(timeout=options.timeout)
        await stream_subjects(js, options)      # a clear error when the stream is missing
        sub = await _consumer(js, options, wopts, clock, window, result)
        if wopts.once and not (await sub.consumer_info()).num_pending:
            return result
        while not stop.is_set():
            try:
                msgs = await sub.fetch(wopts.batch, timeout=wopts.wait)
            except NatsTimeout:
                if wopts.once:
                    break
                continue
            for msg in msgs:
                result.read += 1
                seen = charge(msg.subject, parse_event(msg.data))
                if seen is None:
                    result.skipped += 1
                for finding in window.add(seen) if seen is not None else []:
                    result.findings += 1
                    deadlines = {t: await _deadline(js, options, t) for t in (finding.first.till, finding.second.till)}
                    for subj, message_id, event in alert_events(finding, clock.now(), deadlines, wopts.window):
                        ack = await js.publish(subj, json.dumps(event, ensure_ascii=False).encode(),
                                               stream=options.stream, headers={"Nats-Msg-Id": message_id})
                        if ack.duplicate:
                            result.duplicates += 1
                        else:
                            result.published += 1
                    if report is not None:
                        report(finding)
                # Acknowledged only once its findings are stored: a crash before this re-reads it.
                await msg.ack_sync()
            if wopts.once and msgs and msgs[-1].metadata.num_pending == 0:
                break
    finally:
        await nc.close()
    return result
