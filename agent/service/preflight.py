"""Build everything a configuration makes, without starting it: what check-config, run and reload share.

Parsing proves a value has the right shape; some values only fail when used (a duration that
overflows a date, a secret that does not decode, a template file that is missing). So before a
configuration is accepted — by ``check-config``, by ``run`` at start-up and by a hot reload before
anything running is touched — every part is built once: channels, decoders (which load their
receipt templates), the schedule over the next two days, and the rules with a dry run of one sale
and every scheduled job through a real pipeline on a throw-away journal. Whatever raises becomes
a :class:`ConfigError`, so the caller refuses the file with one plain line.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import tempfile
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from agent.config import ConfigError, LoadedConfig
from agent.service.threads import describe
from drivers.clock import ManualClock

# A sale far from any real one, so the dry run exercises the rules without touching real data.
_DRY_AMOUNT = 12345


def preflight(loaded: LoadedConfig, now: datetime, *, sending: bool = True) -> list[Any]:
    """Build every part of ``loaded``; returns the channels (the daemon uses them); raises ConfigError.

    ``sending=False`` (check-config, having warned about unreadable secrets) builds the channels with
    inert stand-ins for their env:/file: secrets: everything else is still checked."""
    from agent.delivery.channels.factory import build_channels

    path = loaded.path
    channels = build_channels(loaded.config, tz=loaded.tz, path=path, sending=sending)   # raises ConfigError itself
    _step(path, "source", lambda: _decoders(loaded))
    _step(path, "settlement", lambda: _schedule(loaded, now))
    _step(path, "rules", lambda: _dry_run(loaded, channels, now))
    if sending and loaded.config.web is not None:
        # The page's PINs, read as the page will read them (check-config reported unreadable ones already).
        try:
            loaded.config.web.resolved()
        except ValueError as exc:
            raise ConfigError(path, "web", str(exc)) from None
    return channels


def _step(path: str, field: str, build: Any) -> None:
    try:
        build()
    except ConfigError:
        raise
    except Exception as exc:  # anything a part raises on this configuration is a configuration error
        raise ConfigError(path, field, f"accepted by the parser but fails when used: {describe(exc)}") from None


def _decoders(loaded: LoadedConfig) -> None:
    from agent.sources import source_decoder

    for i, source in enumerate(loaded.config.source):
        try:
            source_decoder(source, loaded.tz)
        except Exception as exc:
            raise ConfigError(loaded.path, f"source[{i}] ({source.name})", describe(exc)) from None


def _schedule(loaded: LoadedConfig, now: datetime) -> None:
    from agent.schedule import Scheduler, catch_up, fire_times, plan

    jobs = plan(loaded)
    fire_times(jobs, now, now + timedelta(days=2))
    catch_up(loaded, now - timedelta(days=1), now)
    Scheduler(loaded, queue.Queue(), ManualClock(now))


def _dry_run(loaded: LoadedConfig, channels: list[Any], now: datetime) -> None:
    from agent.delivery.channels.factory import routing
    from agent.messages import Command, EventBatch
    from agent.pipeline import Pipeline
    from agent.store.journal import Journal
    from drivers.events import Transaction

    primary, people = routing(loaded.config, channels)
    with _quiet_this_thread(), tempfile.TemporaryDirectory(prefix="settleguard-preflight-") as tmp:
        journal = Journal(Path(tmp) / "dry.sqlite3", synchronous="OFF")
        try:
            clock = ManualClock(now)
            pipeline = Pipeline(loaded, journal, clock=clock, channels=primary, people_channels=people,
                                evidence_dir=Path(tmp) / "evidence")
            sale = Transaction(source="jsonl", kind="sale", result="approved", amount_minor=_DRY_AMOUNT,
                               time=now, terminal_id="PREFLIGHT", batch_no="000001", voucher_no="000001",
                               currency=loaded.config.shop.currency, card="622576******0000")
            pipeline.process([EventBatch("preflight", (sale,), now)])
            pipeline.process([Command(name) for name in ("review", "reminders", "baseline", "cutoff")])
        finally:
            journal.close()


class _NotFromThread(logging.Filter):
    def __init__(self, ident: int) -> None:
        super().__init__()
        self.ident = ident

    def filter(self, record: logging.LogRecord) -> bool:
        return record.thread != self.ident


@contextlib.contextmanager
def _quiet_this_thread() -> Iterator[None]:
    """The dry run's own log lines (rule warnings, a batch closed) would read as the real service's:
    drop what this thread logs meanwhile, and nothing the running threads log (a reload runs beside them)."""
    quiet = _NotFromThread(threading.get_ident())
    handlers = list(logging.getLogger().handlers)
    for handler in handlers:
        handler.addFilter(quiet)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(quiet)
