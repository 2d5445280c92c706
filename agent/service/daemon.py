"""The running service: reader threads, one pipeline thread, one delivery thread.

(Over 500 lines: the one owner of the service's threads — start, health, restarts, reload, status.)

The daemon takes one :class:`~drivers.clock.Clock` and hands that same object
to everything it builds, so a test or the demo that moves a ManualClock moves
the whole service. Only this module installs signal handlers and talks to
systemd: READY=1 once the journal is open and every source has been started,
WATCHDOG=1 only while every thread is alive and moving, STATUS= with a one-line
summary, and RELOADING=1 ... READY=1 around a configuration reload.
"""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import signal
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import datetime, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.config import ConfigError, LoadedConfig, SourceConfig, load_config
from agent.delivery.channels.factory import event_routing, routing
from agent.history import History
from agent.memory import limit_arenas
from agent.messages import STOP, AlertChange, Command, EventBatch
from agent.pipeline import Pipeline
from agent.schedule import Scheduler, catch_up, heartbeat_intervals, missed_review, read_schedule_mark, scheduled
from agent.service.control import ControlServer
from agent.service.heartbeat import daemon_status
from agent.service.logs import add_secrets
from agent.service.metrics import MetricsServer, Snapshot, SourceSample, read_journal
from agent.service.preflight import preflight
from agent.service.reload import ConfigWatcher, ReloadPlan, config_secrets, plan_reload
from agent.service.sdnotify import SdNotify, watchdog_interval
from agent.service.sender import LazyHttpxSender
from agent.service.threads import Guarded, RestartBudget, describe
from agent.sources import WIRE_CHECK_EVERY, SourceRunner, wire_command
from agent.store.journal import Journal
from agent.store.outbox import Outbox
from agent.store.schema import StoreError, Upgrade, UpgradeStopped, journal_path, private_dir, private_file
from agent.store.turns import WriterTurns
from drivers.clock import SYSTEM_CLOCK, Clock

if TYPE_CHECKING:   # Flask is imported only by a daemon that serves the till page
    from agent.web.auth import Gate
    from agent.web.server import WebServer

log = logging.getLogger("settleguard.daemon")

RunnerFactory = Callable[[SourceConfig, tzinfo, "queue.Queue[EventBatch | Command]", Clock], SourceRunner]



class StateError(Exception):
    """The state directory or the journal cannot be used: a person must fix it (exit 78, no restart loop)."""


# Threads the daemon restarts after an unexpected death, and why that is safe:
#   pipeline     its failed transaction rolled back whole and the rules' memory is rebuilt from the
#                journal (as after a disk-full rollback); the queue waiting behind it is kept, which
#                a process restart would lose. The batch that raised is lost either way (logged).
#   delivery     all its state is the outbox's rows.
#   housekeeping, reload, notify, scheduler, control, metrics, config-watch, web: no state of their own
#                (the scheduler continues from the instant the dead one had handled; the till page's
#                sessions live in the daemon's Gate, so phones stay signed in across a web restart).
#   reader:NAME  a fresh transport and decoder; only a partly received frame is lost.
# Each at most threads.MAX_RESTARTS times in threads.RESTART_WINDOW: one that keeps dying is left
# dead, health reports it, WATCHDOG=1 stops and systemd restarts the whole service.
# A till page whose port was busy is tried again this often (seconds, on the daemon's clock).
WEB_RETRY_EVERY = 60.0
# While the journal is upgraded on the way to READY=1 (agent/store/schema.py: ~6 s for 1M transactions on the
# bench, minutes where a till's card is slow; BENCHMARKS.md 9j), systemd is told "still starting"
# (EXTEND_TIMEOUT_USEC=, STATUS= how far) at each step and at least this often, each time for UPGRADE_EXTEND
# seconds more: ~300x the longest stretch without a word from SQLite measured at 1M (0.18 s, an index's sort and
# commit), so TimeoutStartSec= (90 s) never ends an upgrade that moves, and one that hangs still ends.
UPGRADE_PING_EVERY = 5.0
UPGRADE_EXTEND = 60.0
RESTARTABLE = frozenset({"pipeline", "delivery", "housekeeping", "reload", "notify", "scheduler", "control",
                         "metrics", "config-watch", "web"})


def _default_runner(cfg: SourceConfig, tz: tzinfo, inbox: queue.Queue[EventBatch | Command],
                    clock: Clock) -> SourceRunner:
    return SourceRunner(cfg, tz, inbox, clock=clock)


class Daemon:
    def __init__(self, loaded: LoadedConfig, state_dir: Path, *, clock: Clock = SYSTEM_CLOCK,
                 listeners: Sequence[Callable[[AlertChange], None]] = (), notify: SdNotify | None = None,
                 sender: Any = None, use_scheduler: bool = True, stuck_after: float = 30.0,
                 watch_config: bool | None = None, make_runner: RunnerFactory = _default_runner,
                 reload_debounce: float = 0.5) -> None:
        self.loaded = loaded
        self.state_dir = Path(state_dir)
        self.clock = clock
        self.listeners = list(listeners)
        self.notify = notify or SdNotify(clock=clock)
        self.inbox: queue.Queue[EventBatch | Command] = queue.Queue(maxsize=10000)
        # The pipeline's journal and the delivery thread's outbox write the one file in turn (agent/store/turns.py).
        self.turns = WriterTurns()
        self.stop_event = threading.Event()
        self.guards: dict[str, Guarded] = {}
        self.budget = RestartBudget(clock)
        self._stopping = False
        self._journal_error_since: float | None = None
        self.sources: list[SourceRunner] = []
        self.sender = sender
        self.use_scheduler = use_scheduler  # the demo and tests drive the schedule on simulated time
        # Longer than any legitimate stall (an HTTP timeout in delivery), shorter than WatchdogSec.
        self.stuck_after = stuck_after
        # Only a configuration that came from a file can change under us; tests build them from text.
        self.watch_config = Path(loaded.path).is_file() if watch_config is None else watch_config
        self.make_runner = make_runner
        self.reload_debounce = reload_debounce
        self.pipeline: Pipeline | None = None
        self.delivery: Any = None
        self._delivery_stop = threading.Event()
        self.scheduler: Scheduler | None = None
        self.control: ControlServer | None = None
        self.metrics: MetricsServer | None = None
        self.web: WebServer | None = None
        self.web_error: str | None = None
        self._web_tried = float("-inf")
        self._web_gate: Gate | None = None
        self.watcher: ConfigWatcher | None = None
        self._source_started: dict[str, float] = {}
        # Counters of sources restarted by a reload, so the metrics' *_total never go backwards.
        self._retired: dict[str, Counter[str]] = {}
        self._retired_failures: Counter[str] = Counter()
        self._reload_wanted = threading.Event()
        self._reload_lock = threading.Lock()
        self.last_reload_error: str | None = None
        self.last_reload_at: datetime | None = None
        self.last_reload_summary: str | None = None
        self.reloads = 0
        self.running_digest = _digest(loaded.text)
        self._unhealthy_reported: tuple[str, ...] = ()
        self._term = threading.Event()       # SIGTERM/SIGINT came (run_forever)
        self._upgrade_step, self._upgrade_ping = 0, 0.0

    @property
    def threads(self) -> list[threading.Thread]:
        return [g.thread for g in self.guards.values()]

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        """Raises ConfigError or StateError before any thread starts: nothing to clean up."""
        limit_arenas()   # before our threads allocate (agent/memory.py)
        cfg = self.loaded.config
        add_secrets(config_secrets(self.loaded))
        channels = preflight(self.loaded, self.clock.now())
        journal = self._open_state()
        primary, people = routing(cfg, channels)
        self.pipeline = Pipeline(self.loaded, journal, clock=self.clock, channels=primary,
                                 people_channels=people,
                                 listeners=self.listeners, on_commit=self._wake_delivery,
                                 evidence_dir=self.state_dir / "evidence",
                                 history=(History(self.state_dir / "history", cfg.history, self.loaded.tz)
                                          if cfg.history.enabled else None))
        self.started_at = self.clock.now()
        self.pipeline.heartbeat_status = self._heartbeat_status
        self.pipeline.announcer.route(None, None, event_routing(cfg, channels))   # `events = true` channels
        if self.sender is None:
            # httpx and its SSL context are built on the first send (agent/service/sender.py), not before READY.
            self.sender = LazyHttpxSender(timeout=cfg.delivery.timeout.total_seconds())
        self._start_delivery(self.loaded, channels)
        # Before the readers start: what fell due while we were down is handled before anything new.
        self._catch_up(journal)
        self._thread("pipeline", self.pipeline.run, self.inbox, self.stop_event)
        for scfg in cfg.source:
            self._start_source(scfg, self.loaded.tz)
        self._thread("housekeeping", self._housekeeping)
        if self.use_scheduler:
            self.scheduler = Scheduler(self.loaded, self.inbox, self.clock)
            self.scheduler.start()
        self._start_control()
        self._start_metrics(self.loaded)
        self._start_web(self.loaded)
        self._thread("reload", self._reload_loop)
        if self.watch_config:
            self.watcher = ConfigWatcher(self.loaded.path, self.request_reload, debounce=self.reload_debounce,
                                         clock=self.clock, also=self.loaded.files)
            self.watcher.start()
        self._thread("notify", self._notify_loop)
        if heartbeat_intervals(self.loaded):
            # The start-up heartbeat (then the scheduler's, every interval), once every thread has started: a
            # thread still being started would read as dead and the till would announce itself unhealthy.
            self.inbox.put(Command("heartbeat"))
        self.notify.ready(self.status_line())
        log.info("settleguard running: %d source(s), %d channel(s), state in %s", len(self.sources),
                 len(channels), self.state_dir)

    def _open_state(self) -> Journal:
        """The state directory (0700 when we create it, never world-readable) and the journal (0600)."""
        path = journal_path(self.state_dir)
        try:
            private_dir(self.state_dir)
            private_file(path)
            journal = Journal(path, on_upgrade=self._upgrading, turns=self.turns)
            for suffix in ("-wal", "-shm"):
                private_file(path.with_name(path.name + suffix), create=False)
        except UpgradeStopped:
            raise
        except (OSError, sqlite3.Error, StoreError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            hint = ("move the damaged file aside (a new journal is started) or restore a backup"
                    if isinstance(exc, sqlite3.DatabaseError) and "not a database" in str(exc)
                    else "check the directory's owner and mode, and that its filesystem is mounted writable")
            raise StateError(f"cannot use the journal {path}: {reason}; {hint}") from None
        return journal

    def _upgrading(self, upgrade: Upgrade) -> bool:
        """Journal.on_upgrade: systemd keeps waiting while it hears from us, and `systemctl status` says why.

        Paced on the real monotonic clock, not the daemon's: systemd's timeout runs in real time. True (stop the
        upgrade, keep its finished steps) once SIGTERM has come: EXTEND_TIMEOUT_USEC= would stretch
        TimeoutStopSec= too, and a `systemctl stop` must not wait for the whole upgrade."""
        if self._term.is_set():
            return True
        now = time.monotonic()
        if upgrade.step != self._upgrade_step or now - self._upgrade_ping >= UPGRADE_PING_EVERY:
            self._upgrade_step, self._upgrade_ping = upgrade.step, now
            self.notify.extend_timeout(UPGRADE_EXTEND, upgrade.describe())
        return False

    def _catch_up(self, journal: Journal) -> None:
        """Post what fell due while settleguard was down (agent/schedule.py catch_up), in order, once."""
        now = self.clock.now()
        mark = read_schedule_mark(journal)
        if mark is not None and self.use_scheduler:
            missed = catch_up(self.loaded, mark, now)
            for cmd in missed:
                if cmd.name != "reminders":
                    log.warning("the %s due at %s was missed while settleguard was down; running it now",
                                cmd.name, cmd.args["due"])
                self.inbox.put(cmd)
        else:
            # No mark yet (a journal from before catch-up existed): the review check it had.
            last = journal.get_meta("last_review")
            if missed_review(self.loaded, datetime.fromisoformat(last) if last else None, now):
                log.warning("the pre-close review was missed while settleguard was down; reviewing now")
                self.inbox.put(Command("review"))
        if self.use_scheduler:
            # Marks the journal "schedule handled up to now", so a cutoff missed from here on is caught up.
            self.inbox.put(scheduled("reminders", now))

    def _start_control(self) -> None:
        self.control = ControlServer(self.state_dir / "control.sock", self._control)
        self.control.start()

    def _start_delivery(self, loaded: LoadedConfig, channels: list[Any]) -> None:
        from agent.delivery.loop import Delivery

        cfg = loaded.config
        outbox = Outbox(journal_path(self.state_dir), turns=self.turns)
        self._delivery_stop = threading.Event()
        self.delivery = Delivery(outbox, channels, self.sender, clock=self.clock, config=cfg.delivery,
                                 shop=cfg.shop.name, source=cfg.shop.event_source)
        self._run_delivery()

    def _run_delivery(self) -> None:
        assert self.delivery is not None
        stop = self._delivery_stop
        self._thread("delivery", self.delivery.run, stop, stopping=stop.is_set)

    def _stop_delivery(self, timeout: float) -> None:
        self._delivery_stop.set()
        if self.delivery is None:
            return
        self.delivery.wake.set()
        guard = self.guards.pop("delivery", None)
        if guard is not None:
            guard.join(timeout)
        for name, n in self.delivery.failures.items():
            self._retired_failures[name] += n
        self.delivery.outbox.close()

    def _start_source(self, scfg: SourceConfig, tz: tzinfo) -> None:
        runner = self.make_runner(scfg, tz, self.inbox, self.clock)
        runner.start()
        self.sources.append(runner)
        self._source_started[scfg.name] = self.clock.monotonic()

    def _stop_source(self, name: str) -> None:
        for runner in [r for r in self.sources if r.cfg.name == name]:
            runner.stop(timeout=2.0)
            self.sources.remove(runner)
            retired = self._retired.setdefault(name, Counter())
            for key, value in _source_counters(runner).items():
                retired[key] += value

    def _start_metrics(self, loaded: LoadedConfig) -> None:
        listen = loaded.config.metrics.listen
        if not listen:
            return
        try:
            self.metrics = MetricsServer(listen, self.metrics_snapshot, allow=loaded.config.metrics.allowed)
        except OSError as exc:
            # A busy port must not keep the alerts from running; doctor and the log say why.
            log.error("cannot serve metrics on %s: %s", listen, exc.strerror or exc)
            self.metrics = None
            return
        self.metrics.start()

    def _start_web(self, loaded: LoadedConfig) -> None:
        """The till page (agent/web/), when [web] is configured; a port it cannot bind is logged, not fatal."""
        web = loaded.config.web
        if web is None:
            return
        from agent.web.app import Till
        from agent.web.auth import Gate
        from agent.web.server import WebServer

        till = Till(loaded=lambda: self.loaded, journal=journal_path(self.state_dir),
                    evidence_dir=self.state_dir / "evidence", ask=self.command, status=self.status,
                    clock=self.clock)
        if self._web_gate is None:
            self._web_gate = Gate(self.clock, idle=web.session_idle.total_seconds(),
                                  longest=web.session_max.total_seconds(), on_lockout=self._web_lockout)
        self._web_tried = self.clock.monotonic()
        try:
            self.web = WebServer(web, till, self._web_gate).start()
            self.web_error = None
        except OSError as exc:
            # Like metrics: a busy port must not keep the alerts from going out; status and the log say why.
            self.web_error = f"cannot serve the till page on {web.listen}: {exc.strerror or exc}"
            log.error("%s", self.web_error)
            self.web = None

    def _web_lockout(self, client: str, everyone: bool) -> None:
        """PIN guessing on the till page: the pipeline tells the shop's group (a device notice)."""
        from agent.web.auth import LOCKOUT

        self.inbox.put(Command("web_lockout", {"client": client, "everyone": everyone, "minutes": int(LOCKOUT // 60)}))

    def _retry_web(self) -> bool:
        """A configured page whose port was busy: try again, at most once a minute (it is not a health
        problem — the alerts go out without it — but a page that stays away is shown in doctor)."""
        if self.loaded.config.web is None or self.web is not None:
            return False
        now = self.clock.monotonic()
        if now - self._web_tried < WEB_RETRY_EVERY:
            return False
        self._web_tried = now
        self._start_web(self.loaded)
        return self.web is not None

    def _stop_web(self) -> None:
        if self.web is not None:
            self.web.stop()
            self.web = None

    def _reconcile_web(self, old: LoadedConfig) -> None:
        """After a reload: the page follows [web] (on, off, another address); sessions follow the staff list."""
        before, after = old.config.web, self.loaded.config.web
        gate = self._web_gate
        if gate is not None and after is not None:
            from agent.web.auth import Person

            gate.idle, gate.longest = after.session_idle.total_seconds(), after.session_max.total_seconds()
            gate.drop_people_gone([Person(p.name, p.role, p.pin.get_secret_value()) for p in after.resolved().staff])
        if before is not None and after is not None and before.listen == after.listen and self.web is not None:
            return   # staff, roles and legit_needs are read from self.loaded at each request
        self._stop_web()
        self._start_web(self.loaded)

    def _thread(self, name: str, target: Callable[..., Any], *args: Any,
                stopping: Callable[[], bool] | None = None) -> None:
        def expected_end() -> bool:
            return self._stopping or self.stop_event.is_set() or (stopping is not None and stopping())

        self.guards[name] = Guarded(name, target, args, stopping=expected_end).start()

    def _wake_delivery(self) -> None:
        if self.delivery is not None:
            self.delivery.wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping = True
        self.notify.stopping()
        if self.watcher is not None:
            self.watcher.stop()
        if self.metrics is not None:
            self.metrics.stop()
        self._stop_web()
        if self.control is not None:
            self.control.stop()
        if self.scheduler is not None:
            self.scheduler.stop()
        for runner in self.sources:
            runner.stop(timeout=2.0)
        self.inbox.put(STOP)
        pipeline = self.guards.get("pipeline")
        if pipeline is not None:
            pipeline.join(timeout)
        self.stop_event.set()
        self._delivery_stop.set()
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
        self.notify.close()

    def run_forever(self) -> int:
        """systemd's entry point: run until SIGTERM/SIGINT; SIGHUP reloads the configuration."""
        done = threading.Event()

        def _stop(signum: int, frame: Any) -> None:
            done.set()
            self._term.set()   # also stops a journal upgrade under way in start() (_upgrading)

        def _hup(signum: int, frame: Any) -> None:
            self.request_reload()

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
        signal.signal(signal.SIGHUP, _hup)
        # Files 0600 and directories 0700 however we were started (the unit's UMask= covers systemd
        # only): the journal, its WAL and SHM, evidence bundles. The control socket sets its own mode.
        os.umask(0o077)
        try:
            self.start()
        except UpgradeStopped:
            # Stopped while upgrading the journal (schema.py logged how far); nothing else had started.
            self.notify.stopping()
            return 0
        while not done.wait(1.0):
            pass
        self.stop()
        return 0

    # -- systemd -----------------------------------------------------------------------------
    def _notify_loop(self) -> None:
        """WATCHDOG=1 only while healthy: a stuck thread stops the pings and systemd restarts us."""
        interval = watchdog_interval() or 5.0
        while not self.stop_event.wait(interval):
            self.notify_systemd()

    def notify_systemd(self) -> tuple[str, ...]:
        """One watchdog round; returns the problems that held the ping back (tests call it as a step).

        Dead threads that are safe to restart are restarted first (see RESTARTABLE); those that are
        not, or keep dying, stay among the problems.
        """
        self.revive()
        problems = tuple(self.health_problems())
        if not problems:
            self.notify.watchdog()
        if problems != self._unhealthy_reported:
            if problems:
                log.error("unhealthy, not feeding the watchdog: %s", "; ".join(problems))
            else:
                log.info("healthy again")
            self._unhealthy_reported = problems
        self.notify.status(self.status_line())
        return problems

    # -- health ------------------------------------------------------------------------------
    def health_problems(self) -> list[str]:
        """Why the service is not healthy; empty when every thread is alive and making progress."""
        now = self.clock.monotonic()
        out = [f"thread {name} died: {g.error or 'ended'}" for name, g in list(self.guards.items())
               if g.dead and name not in self.budget.given_up]
        out += self.budget.problems()
        for name, dead, error in self._components():
            if dead and name not in self.budget.given_up:
                out.append(f"thread {name} died: {error}")
        if self.pipeline is not None:
            out += self._journal_stall(now)
        sched = self.scheduler
        if sched is not None and sched.last_error is not None and now - sched.last_ok > self.stuck_after:
            out.append(f"scheduler failing for {now - sched.last_ok:.0f}s: {sched.last_error}")
        if self.pipeline and now - self.pipeline.last_progress > self.stuck_after:
            out.append(f"pipeline stuck for {now - self.pipeline.last_progress:.0f}s")
        if self.delivery and now - self.delivery.last_progress > self.stuck_after:
            out.append(f"delivery stuck for {now - self.delivery.last_progress:.0f}s")
        delivery = self.delivery
        if delivery is not None and delivery.last_error is not None and now - delivery.last_ok > self.stuck_after:
            out.append(f"delivery failing for {now - delivery.last_ok:.0f}s: {delivery.last_error}")
        for r in self.sources:
            sup = r.supervisor
            if sup is None or r.state in ("ended", "closed"):
                continue  # a capture file that was read to the end is finished, not stuck
            if not sup.is_alive():
                out.append(f"reader {r.cfg.name} died")
            elif now - r.last_progress > self.stuck_after:
                out.append(f"reader {r.cfg.name} stuck for {now - r.last_progress:.0f}s")
        return out

    def _journal_stall(self, now: float) -> list[str]:
        """A pipeline retrying a write that keeps failing is alive but blind: unhealthy after journal_stall."""
        assert self.pipeline is not None
        error = self.pipeline.journal_error
        if error is None:
            self._journal_error_since = None
            return []
        if self._journal_error_since is None:
            self._journal_error_since = now
        stalled = now - self._journal_error_since
        if stalled <= self.loaded.config.health.journal_stall.total_seconds():
            return []
        return [f"journal not written for {stalled:.0f}s: {error}"]

    def _components(self) -> list[tuple[str, bool, str]]:
        """Threads owned by other objects: (name, dead, why) — checked and restarted like our own."""
        out: list[tuple[str, bool, str]] = []
        if self._stopping:
            return out
        sched = self.scheduler
        if sched is not None and not sched.stopped:
            out.append(("scheduler", not sched.alive, sched.last_error or "its loop ended"))
        if self.control is not None:
            out.append(("control", not self.control.thread.is_alive(), "the control socket stopped accepting"))
        if self.metrics is not None:
            out.append(("metrics", not self.metrics.thread.is_alive(), "the metrics server stopped"))
        if self.web is not None:
            out.append(("web", not self.web.thread.is_alive(), "the till page server stopped"))
        w = self.watcher
        if w is not None and w.active:
            out.append(("config-watch", not w.alive, "the configuration watcher stopped"))
        return out

    def revive(self) -> list[str]:
        """Restart dead threads within their budget; returns the names restarted."""
        if self._stopping or self.stop_event.is_set():
            return []
        restarted = []
        if self._retry_web():
            restarted.append("web")
        dead = [(name, g.error or "ended") for name, g in list(self.guards.items()) if g.dead]
        dead += [(name, error) for name, is_dead, error in self._components() if is_dead]
        for name, error in dead:
            if name not in self.budget.given_up and self.budget.record(name, error,
                                                                       restartable=name in RESTARTABLE):
                self._restart(name)
                restarted.append(name)
        for runner in list(self.sources):
            sup = runner.supervisor
            if sup is None or sup.is_alive() or runner.state in ("ended", "closed"):
                continue
            name = f"reader:{runner.cfg.name}"
            if name not in self.budget.given_up and self.budget.record(
                    name, getattr(sup, "last_error", None) or "the reader thread ended", restartable=True):
                self._stop_source(runner.cfg.name)
                self._start_source(runner.cfg, self.loaded.tz)
                restarted.append(name)
        return restarted

    def _restart(self, name: str) -> None:
        try:
            if name == "pipeline":
                assert self.pipeline is not None
                self.pipeline._rebuild_rules()
                self._thread("pipeline", self.pipeline.run, self.inbox, self.stop_event)
            elif name == "delivery":
                self._run_delivery()
            elif name == "housekeeping":
                self._thread("housekeeping", self._housekeeping)
            elif name == "reload":
                self._thread("reload", self._reload_loop)
            elif name == "notify":
                self._thread("notify", self._notify_loop)
            elif name == "scheduler" and self.scheduler is not None:
                old = self.scheduler
                self.scheduler = Scheduler(self.loaded, self.inbox, self.clock, since=old.checked)
                self.scheduler.start()
            elif name == "control":
                if self.control is not None:
                    self.control.stop()
                self._start_control()
            elif name == "metrics":
                if self.metrics is not None:
                    self.metrics.stop()
                self._start_metrics(self.loaded)
            elif name == "web":
                self._stop_web()
                self._start_web(self.loaded)
            elif name == "config-watch" and self.watcher is not None:
                self.watcher.stop()
                self.watcher.start()
        except Exception as exc:  # a restart that fails leaves the thread dead: health keeps saying so
            log.exception("restarting thread %s failed", name)
            self.budget.record(name, f"restart failed: {describe(exc)}", restartable=False)

    def healthy(self) -> bool:
        """Every thread alive and making progress (a stuck reader must get us restarted)."""
        return not self.health_problems()

    def status_line(self) -> str:
        p = self.pipeline
        if p is None:
            return "starting"
        c = p.counts
        line = (f"{c['new_transactions']} txns, {c['alerts_opened']} alerts opened, "
                f"{c['alerts_resolved']} resolved; sources: "
                + ", ".join(f"{r.cfg.name}={r.state}" for r in self.sources))
        if self.last_reload_error:
            line += "; last reload REFUSED (see settleguard doctor)"
        if self.web_error and self.web is None:
            line += "; till page NOT served (see settleguard doctor)"
        if p.journal_error:
            line = f"JOURNAL NOT WRITABLE ({p.journal_error}), holding events; " + line
        return line

    def _housekeeping(self) -> None:
        next_wires = self.clock.monotonic()
        while not self.stop_event.wait(0.25):
            if self.clock.monotonic() >= next_wires:  # dead wires and blind taps (agent/watch/wires.py)
                self.inbox.put(wire_command(list(self.sources)))
                next_wires = self.clock.monotonic() + WIRE_CHECK_EVERY
            for runner in list(self.sources):
                try:
                    runner.idle_flush()
                except Exception:
                    log.exception("idle flush of %s failed", runner.cfg.name)

    # -- reload ------------------------------------------------------------------------------
    def request_reload(self) -> None:
        """From SIGHUP or the file watcher: reload on the reload thread, never in a signal handler."""
        self._reload_wanted.set()

    def _reload_loop(self) -> None:
        while not self.stop_event.is_set():
            if self._reload_wanted.wait(0.25):
                self._reload_wanted.clear()
                if self.stop_event.is_set():
                    return
                try:
                    self.reload()
                except Exception as exc:  # a half-applied reload is logged and shown; the thread lives on
                    self.last_reload_error = f"reload failed while applying: {exc}"
                    log.exception("configuration reload failed while applying")

    def reload(self) -> bool:
        """Validate the configuration file completely, then swap; on any error keep the running one."""
        with self._reload_lock:
            self.notify.reloading()
            try:
                ok = self._reload()
            finally:
                self.notify.ready(self.status_line())
            return ok

    def _reload(self) -> bool:
        self.last_reload_at = self.clock.now()
        try:
            new = load_config(self.loaded.path)
            add_secrets(config_secrets(new))
            channels = preflight(new, self.clock.now())
        except ConfigError as exc:
            self.last_reload_error = str(exc)
            log.error("configuration reload refused, still running the previous configuration: %s", exc)
            return False
        plan = plan_reload(self.loaded, new)
        if not plan.empty:
            try:
                self._apply(plan, new, channels)
            except ReloadRolledBack as exc:
                self.last_reload_error = f"reload failed while applying, previous configuration kept: {exc}"
                log.error("%s", self.last_reload_error)
                return False
        old, self.loaded = self.loaded, new
        if self.watcher is not None and new.files != old.files:
            self.watcher.watch(new.files)   # a file newly included is watched from now on
        self._reconcile_web(old)
        self.running_digest = _digest(new.text)
        # Published last: whoever watches these sees a reload that is complete.
        self.last_reload_error = None
        self.last_reload_summary = plan.describe()
        self.reloads += 1
        log.info("configuration reloaded: %s", self.last_reload_summary)
        return True

    def _apply(self, plan: ReloadPlan, new: LoadedConfig, channels: list[Any]) -> None:
        """Swap what ``plan`` names. Whatever can be built is built before anything running stops;
        sources (which may need the old one's port) are swapped first and put back if a new one
        cannot start, raising ReloadRolledBack with nothing else touched."""
        scheduler = None
        if plan.schedule and self.scheduler is not None:
            scheduler = Scheduler(new, self.inbox, self.clock, since=self.scheduler.checked)
        self._swap_sources(plan, new)
        if plan.delivery:
            self._stop_delivery(timeout=15.0)
            self._start_delivery(new, channels)
            if self.pipeline is not None:   # a list swapped whole: the pipeline thread reads it as it is
                self.pipeline.announcer.route(None, None, event_routing(new.config, channels))
        if plan.pipeline:
            # The pipeline thread is the only one touching its state: hand it the new configuration.
            primary, people = routing(new.config, channels)
            self.command("reconfigure", loaded=new, channels=primary, people_channels=people)
        if scheduler is not None and self.scheduler is not None:
            self.scheduler.stop()
            scheduler._checked = max(scheduler.checked, self.scheduler.checked)
            self.scheduler = scheduler
            self.scheduler.start()
        if plan.metrics:
            if self.metrics is not None:
                self.metrics.stop()
                self.metrics = None
            self._start_metrics(new)

    def _swap_sources(self, plan: ReloadPlan, new: LoadedConfig) -> None:
        old_cfgs = {r.cfg.name: r.cfg for r in self.sources}
        old_tz = self.loaded.tz
        by_name = {s.name: s for s in new.config.source}
        for name in (*plan.stop_sources, *plan.restart_sources):
            self._stop_source(name)
        started: list[str] = []
        try:
            for name in (*plan.restart_sources, *plan.start_sources):
                self._start_source(by_name[name], new.tz)
                started.append(name)
        except Exception as exc:
            for name in started:
                self._stop_source(name)
            for name in (*plan.stop_sources, *plan.restart_sources):
                try:
                    self._start_source(old_cfgs[name], old_tz)
                except Exception:
                    log.exception("could not put source %s back after a failed reload", name)
            raise ReloadRolledBack(f"source {name} cannot start: {describe(exc)}") from exc

    def _heartbeat_status(self) -> dict[str, Any]:
        """Asked by the pipeline thread when it builds a heartbeat (agent/service/heartbeat.py)."""
        return daemon_status(self.started_at, self.health_problems(), list(self.sources))

    # -- metrics -----------------------------------------------------------------------------
    def metrics_snapshot(self) -> Snapshot:
        now = self.clock.monotonic()
        samples = []
        for r in list(self.sources):
            counts = _source_counters(r) + self._retired.get(r.cfg.name, Counter())
            since = r.last_event_at if r.last_event_at is not None else self._source_started.get(r.cfg.name, now)
            samples.append(SourceSample(r.cfg.name, counts["events"], counts["bytes_skipped"],
                                        counts["bad_frames"], counts["reconnects"], max(0.0, now - since)))
        failures = Counter(self._retired_failures)
        if self.delivery is not None:
            failures.update(self.delivery.failures)
        shop = self.loaded.config.shop
        return Snapshot(tuple(samples), read_journal(journal_path(self.state_dir), self.clock.now()), dict(failures),
                        identity=(shop.shop_id, shop.till_slug))

    # -- commands from the CLI ------------------------------------------------------------------
    def _control(self, request: dict[str, Any]) -> dict[str, Any]:
        cmd = request.pop("cmd")
        if cmd == "status":
            return self.status()
        request.pop("due", None)  # the schedule's catch-up mark is the scheduler's to set, never a client's
        result: dict[str, Any] = self.command(cmd, **request)
        return result

    def status(self) -> dict[str, Any]:
        """What ``settleguard doctor`` asks a running daemon."""
        sources = {}
        for r in list(self.sources):
            stats = r.stats
            sources[r.cfg.name] = {
                "state": r.state, "detail": r.state_detail, "events": r.events,
                "bytes_skipped": stats.bytes_skipped if stats else 0,
                "bad_frames": stats.bad_frames if stats else 0,
                "decoder_error": stats.last_error if stats else None,
                "reconnects": getattr(r.supervisor, "reconnects", 0),
            }
        return {"ok": True, "status": self.status_line(), "healthy": self.healthy(),
                "problems": self.health_problems(), "config": self.loaded.path, "sources": sources,
                "reload": {"error": self.last_reload_error, "summary": self.last_reload_summary,
                           "at": self.last_reload_at.isoformat() if self.last_reload_at else None,
                           "count": self.reloads,
                           "watching": bool(self.watcher and self.watcher.active),
                           "running_digest": self.running_digest},
                "threads": {"deaths": [d.to_dict() for d in self.budget.deaths],
                            "given_up": sorted(self.budget.given_up)},
                "metrics": self.metrics.address if self.metrics else None,
                "web": {"url": self.web.url() if self.web else None, "error": self.web_error}}

    def command(self, name: str, timeout: float = 10.0, **args: Any) -> Any:
        reply: queue.Queue[Any] = queue.Queue()
        self.inbox.put(Command(name, args, reply))
        return reply.get(timeout=timeout)


class ReloadRolledBack(Exception):
    """A reload that could not be applied and was undone: the previous configuration still runs."""


def _digest(text: str) -> str:
    """Names a configuration's text, so doctor can tell whether the file on disk is the one running."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def _source_counters(runner: SourceRunner) -> Counter[str]:
    stats = runner.stats
    return Counter(events=runner.events, bytes_skipped=stats.bytes_skipped if stats else 0,
                   bad_frames=stats.bad_frames if stats else 0,
                   reconnects=int(getattr(runner.supervisor, "reconnects", 0) or 0))

