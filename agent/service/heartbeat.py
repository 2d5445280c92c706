"""The till's heartbeat to head office (issue 19): ``settleguard.heartbeat`` on machine channels.

A channel with ``heartbeat = "5m"`` gets one at start-up and then every interval (the scheduler posts a
``heartbeat`` command, agent/schedule.py; the pipeline thread runs :func:`send`, so the journal figures
are read in the pipeline's own transaction and the outbox row commits with it). Without heartbeats a
quiet till and a dead till look the same from head office; with them, a missing heartbeat is the
alarm (``settleguard fleet`` flags it as stale).

The data is the contract in COMMON5.md / ARCHITECTURE.md ("Heartbeat"): identity, version, health as the
daemon judges it (``healthy`` = "still seeing": every thread alive and making progress), each source's
state and its last byte and transaction, open alerts, the next cutoff, the outbox and the journal.
Only the newest unsent heartbeat of a channel is worth sending: the delivery loop supersedes older
ones (agent/delivery/loop.py), so a server down for a day gets one heartbeat, not 288.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from agent import __version__
from agent.alerts.lifecycle import AWAITING_VOID, NoticeKind
from agent.alerts.remedy import next_cutoff
from agent.store.schema import SCHEMA_VERSION

if TYPE_CHECKING:
    from agent.pipeline import Pipeline
    from agent.sources import SourceRunner

# Reader states that mean the wire is not being read at all (drivers/transports/supervisor.py).
DOWN_STATES = frozenset({"waiting", "gone", "closed"})


def message_id(shop_id: str, till_id: str, at: datetime) -> str:
    """Stable per till and second: a retried heartbeat keeps its id (the stream deduplicates by it)."""
    return f"heartbeat.{shop_id}.{till_id}.{at:%Y%m%dT%H%M%S}"


def daemon_status(started: datetime, problems: Sequence[str], runners: Sequence[SourceRunner]) -> dict[str, Any]:
    """The daemon's half of a heartbeat (the pipeline cannot see threads or readers): when it started,
    its health problems, and each reader's state and last byte / transaction."""
    return {
        "started": started.isoformat(),   # the daemon's clock; build() puts it on the shop's wall clock
        "problems": list(problems),
        "sources": {r.cfg.name: {"runner": r.state,
                                 "last_byte": _iso(r.last_bytes_time), "last_event": _iso(r.last_txn_time)}
                    for r in runners},
    }


def build(pipeline: Pipeline, now: datetime, interval: timedelta, status: dict[str, Any] | None) -> dict[str, Any]:
    """The heartbeat data (the CloudEvent ``data``), as of ``now``, inside the pipeline's transaction."""
    shop = pipeline.config.shop
    journal = pipeline.journal
    status = status or {}
    now = now.astimezone(pipeline.tz)   # the shop's wall clock, as every deadline in the alert JSON
    readers: dict[str, dict[str, Any]] = status.get("sources") or {}
    episodes = pipeline.wires.episodes
    sources = []
    problems = [f"运行异常：{p}" for p in status.get("problems", ())]
    for cfg in pipeline.config.source:
        reader = readers.get(cfg.name) or {}
        state = _source_state(reader.get("runner"), episodes.get(cfg.name))
        if state != "ok":
            problems.append(f"{_SOURCE_PROBLEM.get(state, '线路异常')}：{cfg.name} ({state})")
        sources.append({"name": cfg.name, "protocol": cfg.protocol, "state": state,
                        "last_byte": reader.get("last_byte"), "last_event": reader.get("last_event")})
    if pipeline.journal_error is not None:
        problems.append(f"日志库无法写入：{pipeline.journal_error}")
    counts = journal.alert_counts()
    outbox = journal.outbox_stats(now)
    oldest = (now - timedelta(seconds=outbox["oldest_pending_seconds"])).isoformat() if outbox["pending"] else None
    cutoff = next_cutoff(now, pipeline.config.settlement.cutoff_time, pipeline.tz)
    return {
        "shop_id": shop.shop_id, "till_id": shop.till_slug, "shop": shop.name, "till": shop.till,
        "version": __version__,
        "started": _local(status.get("started"), pipeline.tz),
        "at": now.isoformat(),
        "interval_s": int(interval.total_seconds()),
        # The daemon's own health (threads alive and making progress, the journal written): what systemd's
        # watchdog is fed by. A quiet wire is in ``sources`` and ``problems``, not here.
        "healthy": not status.get("problems") and pipeline.journal_error is None,
        "problems": problems,
        "sources": sources,
        "open_alerts": sum(n for (_, state), n in counts.items() if state in AWAITING_VOID),
        "next_cutoff": cutoff.isoformat() if cutoff is not None else None,
        "outbox": {"pending": int(outbox["pending"]), "dead": int(outbox["dead"]), "oldest_pending": oldest},
        "journal": {"ok": pipeline.journal_error is None, "schema": SCHEMA_VERSION,
                    "size_bytes": _size(journal.path)},
    }


def send(pipeline: Pipeline, args: dict[str, Any], now: datetime,
         status: Callable[[], dict[str, Any]] | None) -> dict[str, Any]:
    """The pipeline's ``heartbeat`` command: one heartbeat to the channel ``args["channel"]`` (or to
    every channel with a heartbeat when none is named: the start-up one)."""
    channels = {c.name: c.heartbeat for c in pipeline.config.channel if c.enabled and c.heartbeat is not None}
    wanted = [args["channel"]] if args.get("channel") else list(channels)
    targets = [name for name in wanted if name in channels]   # a channel gone by a reload sends nothing
    if not targets:
        return {"ok": True, "sent": 0}
    shared = status() if status is not None else None
    shop = pipeline.config.shop
    local = now.astimezone(pipeline.tz)
    for name in targets:
        every = channels[name]
        assert every is not None
        data = build(pipeline, now, every, shared)
        pipeline.announcer.to_machines(NoticeKind.HEARTBEAT, data, now,
                                       message_id=message_id(shop.shop_id, shop.till_slug, local), channels=[name])
    return {"ok": True, "sent": len(targets)}


_SOURCE_PROBLEM = {"down": "线路断开", "silent": "线路无数据", "blind": "读不到交易"}


def _source_state(runner: str | None, episode: Any) -> str:
    if runner in DOWN_STATES:
        return "down"
    if episode is not None:
        return str(episode.kind)          # silent | blind (agent/watch/wires.py)
    if runner in (None, "new", "opening"):
        return "starting" if runner is not None else "unknown"
    return "ok"                           # open, or a capture file read to its end


def _local(iso: Any, tz: Any) -> str | None:
    return datetime.fromisoformat(iso).astimezone(tz).isoformat() if isinstance(iso, str) else None


def _iso(at: datetime | None) -> str | None:
    return at.isoformat() if at is not None else None


def _size(path: Any) -> int:
    """The journal's bytes on disk, its write-ahead log included (what fills a till's disk)."""
    total = 0
    for suffix in ("", "-wal"):
        with contextlib.suppress(OSError):   # no WAL file between checkpoints
            total += os.path.getsize(f"{path}{suffix}")
    return total
