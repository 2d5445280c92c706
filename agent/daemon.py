"""The running service: reader threads, one pipeline thread, one delivery thread.

Only this module reads the wall clock (everything else takes ``clock``), and
only this module installs signal handlers and talks to systemd.
"""

from __future__ import annotations

import logging
import queue
import signal
import threading
import time as _time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agent.config import LoadedConfig
from agent.control import ControlServer
from agent.journal import Journal
from agent.outbox import Outbox
from agent.pipeline import STOP, AlertChange, Command, EventBatch, Pipeline
from agent.schedule import Scheduler, missed_review
from agent.sdnotify import SdNotify, watchdog_interval
from agent.sources import SourceRunner

log = logging.getLogger("settleguard.daemon")


def wall_clock() -> datetime:
    return datetime.now(UTC)


def journal_path(state_dir: Path) -> Path:
    return state_dir / "settleguard.sqlite3"


class Daemon:
    def __init__(self, loaded: LoadedConfig, state_dir: Path, *, clock: Callable[[], datetime] = wall_clock,
                 listeners: Sequence[Callable[[AlertChange], None]] = (), notify: SdNotify | None = None,
                 sender: Any = None, use_scheduler: bool = True) -> None:
        self.loaded = loaded
        self.state_dir = Path(state_dir)
        self.clock = clock
        self.listeners = list(listeners)
        self.notify = notify or SdNotify()
        self.inbox: queue.Queue[EventBatch | Command] = queue.Queue(maxsize=10000)
        self.stop_event = threading.Event()
        self.threads: list[threading.Thread] = []
        self.sources: list[SourceRunner] = []
        self.sender = sender
        self.use_scheduler = use_scheduler  # the demo and tests drive the schedule on simulated time
        self.pipeline: Pipeline | None = None
        self.delivery: Any = None
        self.scheduler: Scheduler | None = None
        self.control: ControlServer | None = None
        self.started_at = _time.monotonic()

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        from agent.channels.factory import build_channels
        from agent.delivery import Delivery

        self.state_dir.mkdir(parents=True, exist_ok=True)
        cfg = self.loaded.config
        channels = build_channels(cfg, tz=self.loaded.tz, state_dir=self.state_dir, path=self.loaded.path)
        journal = Journal(journal_path(self.state_dir))
        self.pipeline = Pipeline(self.loaded, journal, clock=self.clock, channels=[c.name for c in channels],
                                 people_channels=[c.name for c in channels if c.groups],
                                 listeners=self.listeners, on_commit=self._wake_delivery,
                                 evidence_dir=self.state_dir / "evidence")
        if self.sender is None:
            from agent.channels.http import HttpxSender

            self.sender = HttpxSender(timeout=cfg.delivery.timeout.total_seconds())
        outbox = Outbox(journal_path(self.state_dir))
        source_id = f"settleguard://{_slug(cfg.shop.name)}/{cfg.shop.till}"
        self.delivery = Delivery(outbox, channels, self.sender, clock=self.clock, config=cfg.delivery,
                                 shop=cfg.shop.name, source=source_id)
        self._thread("pipeline", self.pipeline.run, self.inbox, self.stop_event)
        self._thread("delivery", self.delivery.run, self.stop_event)
        for scfg in cfg.source:
            runner = SourceRunner(scfg, self.loaded.tz, self.inbox, clock=self.clock)
            runner.start()
            self.sources.append(runner)
        self._thread("housekeeping", self._housekeeping)
        if self.use_scheduler:
            self.scheduler = Scheduler(self.loaded, self.inbox)
            self.scheduler.start()
        last = journal.get_meta("last_review")
        if missed_review(self.loaded, datetime.fromisoformat(last) if last else None, self.clock()):
            log.warning("the pre-close review was missed while settleguard was down; reviewing now")
            self.inbox.put(Command("review"))
        self.control = ControlServer(self.state_dir / "control.sock", self._control)
        self.control.start()
        self.notify.ready(self.status_line())
        log.info("settleguard running: %d source(s), %d channel(s), state in %s", len(self.sources),
                 len(channels), self.state_dir)

    def _thread(self, name: str, target: Callable[..., Any], *args: Any) -> None:
        t = threading.Thread(target=target, args=args, name=name, daemon=True)
        t.start()
        self.threads.append(t)

    def _wake_delivery(self) -> None:
        if self.delivery is not None:
            self.delivery.wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        self.notify.stopping()
        if self.control is not None:
            self.control.stop()
        if self.scheduler is not None:
            self.scheduler.stop()
        for runner in self.sources:
            runner.stop(timeout=2.0)
        self.inbox.put(STOP)
        for t in self.threads:
            if t.name == "pipeline":
                t.join(timeout)
        self.stop_event.set()
        if self.delivery is not None:
            self.delivery.wake.set()
        for t in self.threads:
            t.join(timeout)
        if self.pipeline is not None:
            self.pipeline.journal.close()
        if self.delivery is not None:
            self.delivery.outbox.close()
        if self.sender is not None and hasattr(self.sender, "close"):
            self.sender.close()

    def run_forever(self) -> int:
        """systemd's entry point: run until SIGTERM/SIGINT."""
        done = threading.Event()

        def _stop(signum: int, frame: Any) -> None:
            done.set()

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
        self.start()
        wd = watchdog_interval()
        while not done.wait(wd or 5.0):
            if wd and self.healthy():
                self.notify.watchdog()
            self.notify.status(self.status_line())
        self.stop()
        return 0

    # -- health ------------------------------------------------------------------------------
    def healthy(self, stuck_after: float = 30.0) -> bool:
        """Every thread alive and making progress (a stuck reader must get us restarted)."""
        now = _time.monotonic()
        if not all(t.is_alive() for t in self.threads):
            return False
        if self.pipeline and now - self.pipeline.last_progress > stuck_after:
            return False
        if self.delivery and now - self.delivery.last_progress > stuck_after:
            return False
        return all(now - r.last_progress <= stuck_after for r in self.sources)

    def status_line(self) -> str:
        p = self.pipeline
        if p is None:
            return "starting"
        c = p.counts
        return (f"{c['new_transactions']} txns, {c['alerts_opened']} alerts opened, "
                f"{c['alerts_resolved']} resolved; sources: "
                + ", ".join(f"{r.cfg.name}={r.state}" for r in self.sources))

    def _housekeeping(self) -> None:
        while not self.stop_event.wait(0.25):
            for runner in self.sources:
                try:
                    runner.idle_flush()
                except Exception:
                    log.exception("idle flush of %s failed", runner.cfg.name)

    # -- commands from the CLI ------------------------------------------------------------------
    def _control(self, request: dict[str, Any]) -> dict[str, Any]:
        cmd = request.pop("cmd")
        if cmd == "status":
            return {"ok": True, "status": self.status_line(), "healthy": self.healthy(),
                    "sources": {r.cfg.name: {"state": r.state, "detail": r.state_detail,
                                             "events": r.events} for r in self.sources}}
        result: dict[str, Any] = self.command(cmd, **request)
        return result

    def command(self, name: str, timeout: float = 10.0, **args: Any) -> Any:
        reply: queue.Queue[Any] = queue.Queue()
        self.inbox.put(Command(name, args, reply))
        return reply.get(timeout=timeout)


def _slug(name: str) -> str:
    out = "".join(ch if ch.isalnum() and ch.isascii() else "-" for ch in name.lower()).strip("-")
    return "-".join(filter(None, out.split("-"))) or "shop"
