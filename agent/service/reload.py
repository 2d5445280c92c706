"""Configuration hot reload: notice a changed file, and work out what a new configuration changes.

The daemon does the swapping (it owns the service's threads); this module
holds the two parts that can be reasoned about without it:

* :class:`ConfigWatcher` watches the configuration *directory*, because editors
  and configuration managers save by writing a temporary file and renaming it
  over the old one; a watch on the file itself would follow the old inode into
  the bin. Bursts of events are debounced into one reload, measured on the
  injected clock (a test moves a ManualClock instead of sleeping).
* :func:`plan_reload` compares two validated configurations and says which
  parts of the running service must be rebuilt, so a changed rule window does
  not drop the serial line, and a changed baud rate restarts only that source.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from watchdog.events import (
    FileClosedNoWriteEvent,
    FileOpenedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer

from agent.config import LoadedConfig, is_secret_ref
from agent.schedule import heartbeat_intervals
from drivers.clock import SYSTEM_CLOCK, Clock

log = logging.getLogger("settleguard.reload")

DEBOUNCE_SECONDS = 0.5
# How often a pending reload looks at the clock: small against the debounce, and quick to follow a
# ManualClock that a test moves.
PACING_SECONDS = 0.05


@dataclass(frozen=True, slots=True)
class ReloadPlan:
    """What a new configuration changes in the running service."""

    stop_sources: tuple[str, ...] = ()       # gone from the configuration
    restart_sources: tuple[str, ...] = ()    # same name, different settings
    start_sources: tuple[str, ...] = ()      # new
    pipeline: bool = False                   # rules, hours, cutoff, zone: a new RuleEngine
    delivery: bool = False                   # channels or delivery timing: new channel objects
    schedule: bool = False                   # review / cutoff times
    metrics: bool = False                    # the metrics listener moved or was switched on/off

    @property
    def empty(self) -> bool:
        return not (self.stop_sources or self.restart_sources or self.start_sources or self.pipeline
                    or self.delivery or self.schedule or self.metrics)

    def describe(self) -> str:
        parts = [f"{verb} source(s) {', '.join(names)}" for verb, names in
                 (("stopped", self.stop_sources), ("restarted", self.restart_sources),
                  ("started", self.start_sources)) if names]
        parts += [what for what, flag in (("rules rebuilt", self.pipeline), ("channels rebuilt", self.delivery),
                                          ("schedule rebuilt", self.schedule), ("metrics moved", self.metrics))
                  if flag]
        return "; ".join(parts) or "nothing changed"


def plan_reload(old: LoadedConfig, new: LoadedConfig) -> ReloadPlan:
    a, b = old.config, new.config
    zone_changed = str(old.tz) != str(new.tz)
    old_sources = {s.name: s for s in a.source}
    new_sources = {s.name: s for s in b.source}
    # Decoders place terminal timestamps in the shop's zone: a new zone means every decoder is stale.
    restart = tuple(n for n in new_sources if n in old_sources
                    and (zone_changed or old_sources[n] != new_sources[n]))
    pipeline = (a.rules != b.rules or a.shop != b.shop or a.settlement != b.settlement or a.notify != b.notify
                or a.delivery.repeat_interval != b.delivery.repeat_interval
                or _enabled_channels(a) != _enabled_channels(b)
                # Whether a terminal line exists decides whether a printed void needs confirming.
                or sorted(s.protocol for s in a.source) != sorted(s.protocol for s in b.source)
                # The alert book enforces [web] legit_needs.
                or a.legit_needs != b.legit_needs
                # The pipeline builds heartbeats from its configuration's channels (agent/service/heartbeat.py).
                or heartbeat_intervals(old) != heartbeat_intervals(new))
    delivery = (a.channel != b.channel or a.delivery != b.delivery or a.shop.name != b.shop.name
                or a.shop.event_source != b.shop.event_source or zone_changed)
    return ReloadPlan(
        stop_sources=tuple(n for n in old_sources if n not in new_sources),
        restart_sources=restart,
        start_sources=tuple(n for n in new_sources if n not in old_sources),
        pipeline=pipeline,
        delivery=delivery,
        # Review times follow the opening hours and the noise budget (agent/alerts/budget.py).
        schedule=(a.settlement != b.settlement or a.shop.hours != b.shop.hours or a.notify != b.notify or zone_changed
                  or heartbeat_intervals(old) != heartbeat_intervals(new)),
        metrics=a.metrics != b.metrics,
    )


def _enabled_channels(config: Any) -> list[tuple[str, str]]:
    return [(c.name, c.type) for c in config.channel if c.enabled]


def config_secrets(loaded: LoadedConfig) -> list[str]:
    """Every resolved secret in a configuration, for the log redactor."""
    out: list[str] = []
    for ch in loaded.config.channel:
        if not ch.enabled:
            continue
        # The URL too: add_secrets registers its userinfo, query values and path tokens.
        # Unreadable now: building the channel refuses it; the reference itself is no secret.
        with contextlib.suppress(ValueError):
            ch = ch.resolved()
        out += [s.get_secret_value() for s in (ch.url, ch.key, ch.secret, *ch.secrets) if s and not is_secret_ref(s)]
    return out


class _DirectoryEvents(FileSystemEventHandler):
    def __init__(self, watcher: ConfigWatcher) -> None:
        self.watcher = watcher

    def on_any_event(self, event: FileSystemEvent) -> None:
        # Our own reads of the file open and close it: reacting to those would reload forever.
        if isinstance(event, FileOpenedEvent | FileClosedNoWriteEvent) or event.is_directory:
            return
        paths = [event.src_path, getattr(event, "dest_path", "")]
        if any(os.path.abspath(os.fsdecode(p)) in self.watcher.files for p in paths if p):
            self.watcher.poke()


class ConfigWatcher:
    """Calls ``on_change`` once, ``debounce`` seconds (on ``clock``) after the last change to the file
    or to a file it includes (``also``: LoadedConfig.files; each one's directory is watched too)."""

    def __init__(self, path: str | os.PathLike[str], on_change: Callable[[], None], *,
                 debounce: float = DEBOUNCE_SECONDS, observer_factory: Callable[[], Any] = Observer,
                 clock: Clock = SYSTEM_CLOCK, also: Sequence[str | os.PathLike[str]] = ()) -> None:
        self.path = Path(path)
        self.name = self.path.name
        self.files = {os.path.abspath(p) for p in (path, *also)}
        self._dirs: set[str] = set()
        self.on_change = on_change
        self.debounce = debounce
        self.observer_factory = observer_factory
        self.clock = clock
        self.observer: Any = None
        self.active = False
        self.fallback_reason: str | None = None
        self._due: float | None = None   # monotonic reading at which the pending reload fires
        self._lock = threading.Lock()
        self._poked = threading.Event()
        self._stopping = threading.Event()
        self._pacer: threading.Thread | None = None

    def start(self) -> bool:
        """Start watching; False (and a log line) when only SIGHUP will reload."""
        try:
            observer = self.observer_factory()
            self._dirs = {os.path.dirname(f) for f in self.files}
            for directory in sorted(self._dirs):
                observer.schedule(_DirectoryEvents(self), directory, recursive=False)
            observer.daemon = True
            observer.start()
        except OSError as exc:
            # Typically ENOSPC from inotify_add_watch: fs.inotify.max_user_watches is used up.
            self.fallback_reason = f"{exc.strerror or exc}"
            log.warning("cannot watch %s for changes (%s, inotify limits?): configuration changes now need "
                        "`systemctl reload settleguard` (SIGHUP)", self.path.parent, self.fallback_reason)
            return False
        self.observer = observer
        self.active = True
        self._stopping.clear()
        self._pacer = threading.Thread(target=self._pace, name="config-debounce", daemon=True)
        self._pacer.start()
        return True

    @property
    def alive(self) -> bool:
        """Both threads running: the observer that hears changes and the pacer that debounces them."""
        observer_ok = self.observer is not None and self.observer.is_alive()
        return observer_ok and self._pacer is not None and self._pacer.is_alive()

    def watch(self, also: Sequence[str | os.PathLike[str]]) -> None:
        """The included files after a reload: a newly included file's directory is watched from now on."""
        self.files = {os.path.abspath(p) for p in (self.path, *also)}
        if self.observer is None:
            return
        for directory in sorted({os.path.dirname(f) for f in self.files} - self._dirs):
            try:
                self.observer.schedule(_DirectoryEvents(self), directory, recursive=False)
                self._dirs.add(directory)
            except OSError as exc:
                log.warning("cannot watch %s for changes (%s): changes there need SIGHUP", directory, exc)

    def poke(self) -> None:
        """A change to the file: (re)start the debounce."""
        with self._lock:
            self._due = self.clock.monotonic() + self.debounce
        self._poked.set()

    @property
    def pending(self) -> bool:
        with self._lock:
            return self._due is not None

    def fire_if_due(self) -> bool:
        """Call ``on_change`` when the debounce has run out; True when it did."""
        with self._lock:
            if self._due is None or self.clock.monotonic() < self._due:
                return False
            self._due = None
        try:
            self.on_change()
        except Exception:  # the watcher must outlive a failing reload
            log.exception("configuration reload failed")
        return True

    def _pace(self) -> None:
        while not self._stopping.is_set():
            if not self.pending:
                self._poked.wait()
                self._poked.clear()
                continue
            self.fire_if_due()
            self._stopping.wait(PACING_SECONDS)

    def stop(self) -> None:
        with self._lock:
            self._due = None
        self._stopping.set()
        self._poked.set()
        if self._pacer is not None:
            self._pacer.join(2.0)
            self._pacer = None
        if self.observer is not None:
            self.observer.stop()
            self.observer.join(2.0)
            self.observer = None
        self.active = False
