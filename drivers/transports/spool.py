"""A spool directory a virtual printer drops one file per print job into."""

from __future__ import annotations

import functools
import logging
import os
import stat
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, BinaryIO

from watchdog.events import (
    FileClosedEvent,
    FileClosedNoWriteEvent,
    FileCreatedEvent,
    FileModifiedEvent,
    FileOpenedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer

from drivers.clock import SYSTEM_CLOCK, Clock
from drivers.transports.base import NOTHING, ByteSource, Chunk, DeviceGone


class _WatchdogStopNoise(logging.Filter):
    """watchdog 7.1 logs this at ERROR on every orderly stop of an inotify watch (a race in its own
    shutdown); in the daemon it would read as a fault every time a spool source closes."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "called when the thread is inactive" not in record.getMessage()


def _quiet_watchdog_stop() -> None:
    logger = logging.getLogger("watchdog.observers.inotify")
    if not any(isinstance(f, _WatchdogStopNoise) for f in logger.filters):
        logger.addFilter(_WatchdogStopNoise())


@dataclass(slots=True)
class _Candidate:
    size: int
    mtime_ns: int
    since: float        # clock time this (size, mtime) was first seen
    checked: float      # clock time of the latest scan that saw it unchanged
    closed: bool        # a close-after-write or a rename into the directory vouched it is complete

    @property
    def signature(self) -> tuple[int, int]:
        return self.size, self.mtime_ns


class _SpoolEvents(FileSystemEventHandler):
    """Runs on the watchdog thread: only records hints and wakes the reader."""

    def __init__(self, owner: SpoolDirSource) -> None:
        self.owner = owner

    def on_any_event(self, event: FileSystemEvent) -> None:
        # Our own reads open and close job files; those events carry no news.
        if isinstance(event, FileOpenedEvent | FileClosedNoWriteEvent) or event.is_directory:
            return
        complete: str | None = None
        if isinstance(event, FileClosedEvent):
            complete = os.fsdecode(event.src_path)
        elif event.event_type == "moved" and event.dest_path:
            # Write-then-rename into the spool is the usual way to publish a finished file.
            complete = os.fsdecode(event.dest_path)
            self.owner._hint_gone(os.fsdecode(event.src_path))
        elif isinstance(event, FileCreatedEvent | FileModifiedEvent):
            # Created or written and not closed yet: a writer holds it open, maybe pausing mid-job.
            self.owner._hint_writing(os.fsdecode(event.src_path))
            return
        elif event.event_type == "deleted":
            self.owner._hint_gone(os.fsdecode(event.src_path))
        self.owner._hint(complete)


class SpoolDirSource(ByteSource):
    """A directory where a virtual printer drops one file per print job.

    Each complete file is delivered as one job (its bytes, then a boundary chunk) and, once the
    consumer has handled it (:meth:`commit`), moved into ``done/`` -- so every file is processed
    once, also across restarts. Files already there at start are processed too, oldest first.

    A file counts as complete when the writer closed it (inotify close-after-write), when it was
    renamed into the directory, or when its size and mtime have not changed for
    ``settle_seconds``. Empty files are only taken on a close or rename, because "empty and not
    growing" is what a file looks like between open() and the first write. While the watcher runs,
    a file it saw created or written and not yet closed is still open in its writer: a writer that
    pauses mid-job is waited for, not read in half -- up to ``open_write_seconds`` unchanged, in
    case the close event was lost (an inotify queue overflow).
    Hidden files and names ending in ``.part``/``.tmp``/``.partial`` are work in progress.

    Delivery is at least once: a job is moved to ``done/`` only when the consumer calls the
    :meth:`commit_token` it took at the job's boundary (after its journal commit); a crash before
    that re-delivers the job at the next start, and the journal's identity merge makes the second
    reading change nothing.
    """

    WIP_SUFFIXES = (".part", ".tmp", ".partial", ".crdownload")

    def __init__(self, directory: str | os.PathLike[str], *, name: str | None = None,
                 done_dir: str = "done", settle_seconds: float = 1.0, rescan_seconds: float = 2.0,
                 chunk_size: int = 64 * 1024, max_candidates: int = 10_000, watch: bool = True,
                 open_write_seconds: float = 600.0, clock: Clock = SYSTEM_CLOCK) -> None:
        self.directory = os.path.abspath(os.fspath(directory))
        super().__init__(name or self.directory)
        self.done_path = os.path.join(self.directory, done_dir)
        self.settle_seconds = settle_seconds
        self.open_write_seconds = open_write_seconds
        self.rescan_seconds = rescan_seconds
        self.chunk_size = chunk_size
        self.max_candidates = max_candidates
        self.watch = watch
        self.clock = clock
        self.jobs_delivered = 0
        self.jobs_committed = 0
        self.jobs_failed = 0
        self.last_error: str | None = None
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closed_hints: set[str] = set()
        self._writing: set[str] = set()    # created/written and not closed since (watcher's view)
        # The consumer's commit arrives on its own thread: _delivered and the moves to done/ are shared.
        self._done_lock = threading.Lock()
        self._candidates: dict[str, _Candidate] = {}
        self._delivered: dict[str, tuple[int, int]] = {}   # handed out, not yet moved to done/
        self._failed: dict[str, tuple[int, int]] = {}      # unreadable; retried only when it changes
        self._current: BinaryIO | None = None
        self._current_path: str | None = None
        self._current_sig: tuple[int, int] = (0, 0)
        self._awaiting_commit: tuple[str, tuple[int, int]] | None = None
        self._observer: Any = None
        self._dir_identity: tuple[int, int] | None = None
        self._next_scan = 0.0

    def describe(self) -> str:
        return f"spool {self.directory}"

    @property
    def pending(self) -> int:
        """Files seen in the spool and not delivered yet (for ``doctor``)."""
        return len(self._candidates)

    @property
    def uncommitted(self) -> int:
        """Jobs delivered whose commit has not come yet (or whose move to done/ failed)."""
        with self._done_lock:
            return len(self._delivered)

    def being_written(self) -> list[str]:
        """Files the watcher saw opened for writing and not closed yet."""
        with self._lock:
            return sorted(self._writing)

    def _open(self) -> None:
        self._close()
        st = os.stat(self.directory)
        if not stat.S_ISDIR(st.st_mode):
            raise DeviceGone(f"{self.describe()}: not a directory")
        self._dir_identity = (st.st_dev, st.st_ino)
        os.makedirs(self.done_path, exist_ok=True)
        if self.watch:
            _quiet_watchdog_stop()
            # The timeout bounds how long stopping the watcher blocks (default 1 s per close).
            observer = Observer(timeout=0.2)
            observer.daemon = True
            try:
                observer.schedule(_SpoolEvents(self), self.directory, recursive=False)
                observer.start()
            except OSError as exc:
                # inotify watch limit and the like: periodic rescans still find every job.
                self.last_error = f"{self.describe()}: file watching unavailable, polling only: {exc}"
            else:
                self._observer = observer
        self._wake.set()

    def _close(self) -> None:
        observer, self._observer = self._observer, None
        if observer is not None:
            observer.stop()
            observer.join(timeout=2.0)
        fh, self._current = self._current, None
        self._current_path = None
        if fh is not None:
            fh.close()  # an interrupted job stays in the spool and is delivered whole next time
        self._awaiting_commit = None
        self._candidates.clear()
        with self._lock:
            self._closed_hints.clear()
            self._writing.clear()   # a new watcher starts without history: settling decides again

    def _hint(self, complete_path: str | None) -> None:
        with self._lock:
            if complete_path is not None:
                if len(self._closed_hints) >= self.max_candidates:
                    self._closed_hints.clear()  # hints only speed things up; settling still works
                self._closed_hints.add(complete_path)
                self._writing.discard(complete_path)
        self._wake.set()

    def _hint_writing(self, path: str) -> None:
        with self._lock:
            if len(self._writing) >= self.max_candidates:
                self._writing.clear()  # settling (and open_write_seconds) still decide
            self._writing.add(path)
            self._closed_hints.discard(path)  # reopened for writing after a close: not complete

    def _hint_gone(self, path: str) -> None:
        with self._lock:
            self._writing.discard(path)

    def commit_token(self) -> Callable[[], None] | None:
        pending, self._awaiting_commit = self._awaiting_commit, None
        if pending is None:
            return None
        return functools.partial(self._mark_done, *pending)

    def _mark_done(self, path: str, sig: tuple[int, int]) -> None:
        """Move a delivered job to done/ (any thread: the consumer calls it after its commit)."""
        with self._done_lock:
            try:
                st = os.stat(path)
                if (st.st_size, st.st_mtime_ns) != sig:
                    # The printer reused the name for a new job meanwhile: that one is not read yet.
                    self._delivered.pop(path, None)
                    return
                os.rename(path, self._done_target(os.path.basename(path)))
            except FileNotFoundError:
                self._delivered.pop(path, None)
            except OSError as exc:
                # Keep it out of this run's deliveries; it comes back after a restart.
                self.last_error = f"{self.describe()}: could not move {path} to done/: {exc}"
            else:
                self._delivered.pop(path, None)
                self.jobs_committed += 1

    def _done_target(self, base: str) -> str:
        target = os.path.join(self.done_path, base)
        n = 0
        while os.path.lexists(target):
            n += 1
            target = os.path.join(self.done_path, f"{base}.~{n}~")
        return target

    def _remember(self, table: dict[str, tuple[int, int]], path: str, sig: tuple[int, int]) -> None:
        if len(table) >= self.max_candidates:
            table.pop(next(iter(table)))
        table[path] = sig

    def _read_chunk(self, timeout: float) -> Chunk:
        if self._current is not None:
            return self._continue_job()
        # Settling is measured on the injected clock; the one wait below only paces the thread,
        # so a test's manual clock decides when a file has settled, not the machine's speed.
        waited = False
        while True:
            now = self.clock.monotonic()
            if self._wake.is_set() or now >= self._scan_due():
                self._wake.clear()
                self._scan(now)
                self._next_scan = now + self.rescan_seconds
            path = self._pick_ready()
            if path is not None and self._start_job(path):
                return self._continue_job()
            if path is not None:
                continue
            if waited or timeout <= 0:
                return NOTHING
            self._wake.wait(max(0.0, min(timeout, self._scan_due() - now)))
            waited = True

    def _continue_job(self) -> Chunk:
        assert self._current is not None and self._current_path is not None
        data = self._current.read(self.chunk_size)
        if data:
            return Chunk(data)
        self._current.close()
        self._current = None
        path, self._current_path = self._current_path, None
        self._awaiting_commit = (path, self._current_sig)
        with self._done_lock:
            self._remember(self._delivered, path, self._current_sig)
        self.jobs_delivered += 1
        return Chunk(b"", boundary=True)

    def _start_job(self, path: str) -> bool:
        cand = self._candidates.pop(path)
        try:
            self._current = open(path, "rb")  # noqa: SIM115 - read across several read_chunk calls
        except FileNotFoundError:
            return False
        except OSError as exc:
            self.jobs_failed += 1
            self.last_error = f"{self.describe()}: cannot read job {path}: {exc}"
            self._remember(self._failed, path, cand.signature)
            return False
        self._current_path = path
        self._current_sig = cand.signature
        return True

    def _scan(self, now: float) -> None:
        st = os.stat(self.directory)
        if (st.st_dev, st.st_ino) != self._dir_identity:
            # Replaced or remounted: the watch is on the old directory. Rebuild from scratch.
            raise DeviceGone(f"{self.describe()}: directory was replaced")
        with self._lock:
            closed, self._closed_hints = self._closed_hints, set()
        with self._done_lock:
            handed_out = dict(self._delivered)
        seen: dict[str, _Candidate] = {}
        with os.scandir(self.directory) as entries:
            for entry in entries:
                if not self._is_job_name(entry.name):
                    continue
                try:
                    if not entry.is_file(follow_symlinks=False):
                        continue
                    est = entry.stat(follow_symlinks=False)
                except OSError:
                    continue  # vanished between listing and stat
                sig = (est.st_size, est.st_mtime_ns)
                if handed_out.get(entry.path) == sig or self._failed.get(entry.path) == sig:
                    continue
                cand = self._candidates.get(entry.path)
                if cand is None or cand.signature != sig:
                    cand = _Candidate(est.st_size, est.st_mtime_ns, since=now, checked=now, closed=False)
                cand.checked = now
                if entry.path in closed:
                    cand.closed = True
                seen[entry.path] = cand
        if len(seen) > self.max_candidates:
            keep = sorted(seen, key=lambda p: (seen[p].mtime_ns, p))[: self.max_candidates]
            seen = {p: seen[p] for p in keep}
        self._candidates = seen
        with self._lock:
            self._writing &= set(seen)  # forget files that are gone (moved away, deleted)

    def _is_job_name(self, name: str) -> bool:
        return not name.startswith(".") and not name.endswith(self.WIP_SUFFIXES)

    def _settle_time(self, path: str, writing: set[str]) -> float:
        # Still open in its writer: wait for the close, or for open_write_seconds without a change.
        return self.open_write_seconds if path in writing else self.settle_seconds

    def _is_ready(self, path: str, cand: _Candidate, writing: set[str]) -> bool:
        if cand.closed:
            return True
        # Unchanged between two scans at least the settle time apart, not merely "old enough".
        return cand.size > 0 and cand.checked - cand.since >= self._settle_time(path, writing)

    def _pick_ready(self) -> str | None:
        with self._lock:
            writing = set(self._writing)
        ready = [(c.mtime_ns, p) for p, c in self._candidates.items() if self._is_ready(p, c, writing)]
        return min(ready)[1] if ready else None

    def _scan_due(self) -> float:
        """When to list the directory again: the periodic rescan, or a candidate's settle time."""
        due = self._next_scan
        with self._lock:
            writing = set(self._writing)
        for path, cand in self._candidates.items():
            if cand.size > 0 and not cand.closed:
                due = min(due, cand.since + self._settle_time(path, writing))
        return due
