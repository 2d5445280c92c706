"""Byte transports: the only place that touches the wire (python-can style).

A :class:`ByteSource` opens a device, hands out whatever bytes arrived, and
says clearly when the device went away (:class:`DeviceGone`) or when a finite
input is exhausted (:class:`EndOfStream`). Library errors (pyserial's
``SerialException``, ``OSError``) are translated at this boundary; nothing
above it knows which library sat below.

The :class:`Supervisor` thread holds the open / read / reopen loop once for
every source: it reports state changes, flushes the decoder when a device
vanishes, and reopens with capped, fully jittered exponential backoff until
stopped.

Sources:

* :class:`SerialSource` -- any pyserial URL (``/dev/ttyUSB0``,
  ``/dev/serial/by-id/...``, ``socket://``, ``rfc2217://``, ``loop://``).
* :class:`FileSource` -- a capture file, read once.
* :class:`SpoolDirSource` -- a directory a virtual printer drops job files in.
* :class:`TcpPassThrough` -- sits between the till and a network receipt
  printer, forwards everything unchanged and hands a copy to the decoder.

This module is the only one in the project that imports ``serial``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import random
import select
import socket
import stat
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, BinaryIO

import serial
from watchdog.events import (
    FileClosedEvent,
    FileClosedNoWriteEvent,
    FileOpenedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer

try:  # only the POSIX backend honours ``exclusive`` (flock on the tty)
    from serial.serialposix import Serial as _PosixSerial
except ImportError:  # pragma: no cover - Windows
    _PosixSerial = None

__all__ = [
    "ByteSource",
    "Chunk",
    "DeviceGone",
    "EndOfStream",
    "FileSource",
    "PassThroughStats",
    "SerialSource",
    "SerialWriter",
    "SpoolDirSource",
    "Supervisor",
    "TcpPassThrough",
    "backoff_delay",
    "open_serial_writer",
    "parse_host_port",
]


class DeviceGone(Exception):
    """The device is not there (never plugged in, unplugged, peer closed, directory removed)."""


class EndOfStream(Exception):
    """A finite input (a capture file) is exhausted; the reader ends, nothing is reopened."""


@dataclass(frozen=True, slots=True)
class Chunk:
    """Bytes from a source; ``boundary`` marks the end of a job, connection or file."""

    data: bytes
    boundary: bool = False


_NOTHING = Chunk(b"")


class ByteSource(ABC):
    """One input of bytes. Subclasses override ``_open``/``_close``/``describe`` and one reader:
    ``_read`` for plain streams or ``_read_chunk`` for sources that know job boundaries.

    The public methods translate every ``OSError`` (``serial.SerialException`` is one) into
    :class:`DeviceGone`, so callers handle exactly two exceptions.
    """

    name: str

    def __init__(self, name: str) -> None:
        self.name = name

    def open(self) -> None:
        with self._translated("open"):
            self._open()

    def read(self, timeout: float) -> bytes:
        """Bytes that arrived within ``timeout`` seconds; ``b""`` on timeout."""
        return self.read_chunk(timeout).data

    def read_chunk(self, timeout: float) -> Chunk:
        with self._translated("read"):
            return self._read_chunk(timeout)

    def commit(self) -> None:
        """The consumer has handled everything up to the last boundary (a spool job is marked done)."""
        return None

    def interrupt(self) -> None:
        """Called from another thread by :meth:`Supervisor.stop` to cut a pending read short."""
        return None

    def close(self) -> None:
        # Closing is best effort: the device may already be gone, and there is nobody to tell.
        with contextlib.suppress(OSError):
            self._close()

    @abstractmethod
    def describe(self) -> str:
        """One line for logs and ``doctor``: ``serial /dev/ttyUSB0 @9600``."""

    @abstractmethod
    def _open(self) -> None: ...

    @abstractmethod
    def _close(self) -> None: ...

    def _read(self, timeout: float) -> bytes:
        raise NotImplementedError(f"{type(self).__name__} must override _read or _read_chunk")

    def _read_chunk(self, timeout: float) -> Chunk:
        return Chunk(self._read(timeout))

    @contextlib.contextmanager
    def _translated(self, action: str) -> Iterator[None]:
        try:
            yield
        except (DeviceGone, EndOfStream):
            raise
        except OSError as exc:
            text = str(exc)
            if not text.startswith(action):  # pyserial often says "read failed: ..." itself
                text = f"{action} failed: {text}"
            raise DeviceGone(f"{self.describe()}: {text}") from exc


# -- serial ---------------------------------------------------------------------------------------

def _is_url(port: str) -> bool:
    return "://" in port


def _make_port(url: str, *, baudrate: int, bytesize: int, parity: str, stopbits: float,
               exclusive: bool, timeout: float | None) -> Any:
    port = serial.serial_for_url(url, do_not_open=True, baudrate=baudrate, bytesize=bytesize,
                                 parity=parity, stopbits=stopbits, timeout=timeout)
    if exclusive and _PosixSerial is not None and isinstance(port, _PosixSerial):
        # Two readers on one tty each get half the bytes; refuse to share instead.
        port.exclusive = True
    return port


class SerialSource(ByteSource):
    """A serial port or any pyserial URL.

    The URL is opened afresh on every :meth:`open`, so a ``/dev/serial/by-id/...`` symlink that
    a replugged adapter now points at a different ``ttyUSBn`` is followed.
    """

    def __init__(self, url: str, *, baudrate: int = 9600, bytesize: int = 8, parity: str = "N",
                 stopbits: float = 1, exclusive: bool = True, name: str | None = None,
                 max_chunk: int = 4096) -> None:
        super().__init__(name or url)
        self.url = url
        self.baudrate = baudrate
        self.bytesize = bytesize
        self.parity = parity
        self.stopbits = stopbits
        self.exclusive = exclusive
        self.max_chunk = max_chunk
        self._port: Any = None
        self._resolved: str | None = None
        self._pending_error: OSError | None = None
        # Fail at construction on a bad URL scheme or line setting (ValueError): that is a
        # configuration mistake, not a device that may come back.
        _make_port(url, baudrate=baudrate, bytesize=bytesize, parity=parity, stopbits=stopbits,
                   exclusive=exclusive, timeout=None)

    def describe(self) -> str:
        where = self.url
        if self._resolved and self._resolved != self.url:
            where = f"{self.url} -> {self._resolved}"
        return f"serial {where} @{self.baudrate}"

    def _open(self) -> None:
        if self._port is not None:
            self._close()
        port = _make_port(self.url, baudrate=self.baudrate, bytesize=self.bytesize, parity=self.parity,
                          stopbits=self.stopbits, exclusive=self.exclusive, timeout=0.0)
        self._resolved = None if _is_url(self.url) else os.path.realpath(self.url)
        port.open()
        self._port = port

    def _close(self) -> None:
        port, self._port = self._port, None
        self._pending_error = None
        if port is not None:
            port.close()

    def interrupt(self) -> None:
        port = self._port
        cancel = getattr(port, "cancel_read", None)
        if cancel is not None:
            with contextlib.suppress(Exception):
                cancel()

    def write(self, data: bytes) -> None:
        """For active protocols that must answer the terminal (ZVT acknowledgements)."""
        port = self._port
        if port is None:
            raise DeviceGone(f"{self.describe()}: not open")
        with self._translated("write"):
            port.write(data)
            port.flush()

    def _read(self, timeout: float) -> bytes:
        port = self._port
        if port is None:
            raise DeviceGone(f"{self.describe()}: not open")
        if self._pending_error is not None:
            exc, self._pending_error = self._pending_error, None
            raise exc
        if port.timeout != timeout:
            port.timeout = timeout
        # read(1) returns as soon as one byte is there; read(4096) would sit out the whole
        # timeout collecting bytes and delay every event by it.
        first: bytes = port.read(1)
        if not first:
            if self.hung_up():
                raise DeviceGone(f"{self.describe()}: device reports readiness to read but returned no data"
                                 " (unplugged?)")
            return b""
        buf = bytearray(first)
        try:
            while len(buf) < self.max_chunk:
                waiting = port.in_waiting
                if waiting <= 0:
                    break
                more: bytes = port.read(min(waiting, self.max_chunk - len(buf)))
                if not more:
                    break
                buf += more
        except OSError as exc:
            # Hand out what arrived before the line dropped; the next read reports the loss.
            self._pending_error = exc
        return bytes(buf)

    def hung_up(self) -> bool:
        """True when the tty is readable with nothing to read: the other end is gone.

        pyserial 3.5 raises for this itself; other backends and versions may just return
        nothing, which would make an unplugged adapter look like a quiet terminal forever.
        """
        port = self._port
        fd = getattr(port, "fd", None)
        if port is None or not isinstance(fd, int) or not hasattr(select, "poll"):
            return False
        poller = select.poll()
        poller.register(fd, select.POLLIN | select.POLLPRI)
        try:
            events = poller.poll(0)
            if not events:
                return False
            if events[0][1] & (select.POLLHUP | select.POLLERR | select.POLLNVAL):
                return True
            # Readable: real data (arrived just after the read timed out) or end of file.
            return bool(port.in_waiting == 0)
        except OSError:
            return True  # the tty no longer answers ioctls (EIO): as gone as it gets


class SerialWriter:
    """A write-only serial port for the simulator (``settleguard simulate --port``)."""

    def __init__(self, url: str, *, baudrate: int = 9600, bytesize: int = 8, parity: str = "N",
                 stopbits: float = 1, write_timeout: float | None = 5.0) -> None:
        self.url = url
        try:
            port = _make_port(url, baudrate=baudrate, bytesize=bytesize, parity=parity, stopbits=stopbits,
                              exclusive=False, timeout=0.0)
            port.write_timeout = write_timeout
            port.open()
        except OSError as exc:
            raise DeviceGone(f"serial {url}: open failed: {exc}") from exc
        self._port = port

    def write(self, data: bytes) -> None:
        try:
            self._port.write(data)
            self._port.flush()
        except OSError as exc:
            raise DeviceGone(f"serial {self.url}: write failed: {exc}") from exc

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._port.close()


def open_serial_writer(url: str, *, baudrate: int = 9600, bytesize: int = 8, parity: str = "N",
                       stopbits: float = 1) -> SerialWriter:
    return SerialWriter(url, baudrate=baudrate, bytesize=bytesize, parity=parity, stopbits=stopbits)


# -- capture file ---------------------------------------------------------------------------------

class FileSource(ByteSource):
    """A capture file, read once from the start; then :class:`EndOfStream`."""

    def __init__(self, path: str | os.PathLike[str], *, name: str | None = None,
                 chunk_size: int = 64 * 1024) -> None:
        self.path = os.fspath(path)
        super().__init__(name or self.path)
        self.chunk_size = chunk_size
        self._fh: BinaryIO | None = None

    def describe(self) -> str:
        return f"file {self.path}"

    def _open(self) -> None:
        self._close()
        self._fh = open(self.path, "rb")  # noqa: SIM115 - lives until close(), across many reads

    def _close(self) -> None:
        fh, self._fh = self._fh, None
        if fh is not None:
            fh.close()

    def _read(self, timeout: float) -> bytes:
        if self._fh is None:
            raise DeviceGone(f"{self.describe()}: not open")
        data = self._fh.read(self.chunk_size)
        if not data:
            raise EndOfStream(self.describe())
        return data


# -- spool directory ------------------------------------------------------------------------------

class _WatchdogStopNoise(logging.Filter):
    """watchdog 7.1 logs this at ERROR on every orderly stop of an inotify watch (a race in its own
    shutdown); in the daemon it would read as a fault every time a spool source closes."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "called when the thread is inactive" not in record.getMessage()


_watchdog_filter_installed = False


def _quiet_watchdog_stop() -> None:
    global _watchdog_filter_installed
    if not _watchdog_filter_installed:
        logging.getLogger("watchdog.observers.inotify").addFilter(_WatchdogStopNoise())
        _watchdog_filter_installed = True


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
        self.owner._hint(complete)


class SpoolDirSource(ByteSource):
    """A directory where a virtual printer drops one file per print job.

    Each complete file is delivered as one job (its bytes, then a boundary chunk) and, once the
    consumer has handled it (:meth:`commit`), moved into ``done/`` -- so every file is processed
    once, also across restarts. Files already there at start are processed too, oldest first.

    A file counts as complete when the writer closed it (inotify close-after-write), when it was
    renamed into the directory, or when its size and mtime have not changed for
    ``settle_seconds``. Empty files are only taken on a close or rename, because "empty and not
    growing" is what a file looks like between open() and the first write.
    Hidden files and names ending in ``.part``/``.tmp``/``.partial`` are work in progress.

    Delivery is at least once: a crash between delivery and the move re-delivers that job.
    """

    WIP_SUFFIXES = (".part", ".tmp", ".partial", ".crdownload")

    def __init__(self, directory: str | os.PathLike[str], *, name: str | None = None,
                 done_dir: str = "done", settle_seconds: float = 1.0, rescan_seconds: float = 2.0,
                 chunk_size: int = 64 * 1024, max_candidates: int = 10_000, watch: bool = True,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.directory = os.path.abspath(os.fspath(directory))
        super().__init__(name or self.directory)
        self.done_path = os.path.join(self.directory, done_dir)
        self.settle_seconds = settle_seconds
        self.rescan_seconds = rescan_seconds
        self.chunk_size = chunk_size
        self.max_candidates = max_candidates
        self.watch = watch
        self.clock = clock
        self.jobs_delivered = 0
        self.jobs_failed = 0
        self.last_error: str | None = None
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closed_hints: set[str] = set()
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

    def _hint(self, complete_path: str | None) -> None:
        with self._lock:
            if complete_path is not None:
                if len(self._closed_hints) >= self.max_candidates:
                    self._closed_hints.clear()  # hints only speed things up; settling still works
                self._closed_hints.add(complete_path)
        self._wake.set()

    def commit(self) -> None:
        pending, self._awaiting_commit = self._awaiting_commit, None
        if pending is None:
            return
        path, sig = pending
        self._candidates.pop(path, None)
        try:
            target = self._done_target(os.path.basename(path))
            os.rename(path, target)
        except OSError as exc:
            # Keep it out of this run's deliveries; it comes back after a restart.
            self.last_error = f"{self.describe()}: could not move {path} to done/: {exc}"
            self._remember(self._delivered, path, sig)
        else:
            self._delivered.pop(path, None)

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
        deadline = self.clock() + timeout
        while True:
            now = self.clock()
            if self._wake.is_set() or now >= self._scan_due():
                self._wake.clear()
                self._scan(now)
                self._next_scan = now + self.rescan_seconds
            path = self._pick_ready()
            if path is not None and self._start_job(path):
                return self._continue_job()
            if path is not None:
                continue
            remaining = deadline - now
            if remaining <= 0:
                return _NOTHING
            self._wake.wait(max(0.0, min(remaining, self._scan_due() - now)))

    def _continue_job(self) -> Chunk:
        assert self._current is not None and self._current_path is not None
        data = self._current.read(self.chunk_size)
        if data:
            return Chunk(data)
        self._current.close()
        self._current = None
        path, self._current_path = self._current_path, None
        self._awaiting_commit = (path, self._current_sig)
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
                if self._delivered.get(entry.path) == sig or self._failed.get(entry.path) == sig:
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

    def _is_job_name(self, name: str) -> bool:
        return not name.startswith(".") and not name.endswith(self.WIP_SUFFIXES)

    def _is_ready(self, cand: _Candidate) -> bool:
        if cand.closed:
            return True
        # Unchanged between two scans at least settle_seconds apart, not merely "old enough".
        return cand.size > 0 and cand.checked - cand.since >= self.settle_seconds

    def _pick_ready(self) -> str | None:
        ready = [(c.mtime_ns, p) for p, c in self._candidates.items() if self._is_ready(c)]
        return min(ready)[1] if ready else None

    def _scan_due(self) -> float:
        """When to list the directory again: the periodic rescan, or a candidate's settle time."""
        due = self._next_scan
        for cand in self._candidates.values():
            if cand.size > 0 and not cand.closed:
                due = min(due, cand.since + self.settle_seconds)
        return due


# -- TCP printer pass-through ---------------------------------------------------------------------

def parse_host_port(value: str) -> tuple[str, int]:
    """``"0.0.0.0:9100"`` or ``"[::1]:9100"`` -> (host, port)."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"expected host:port, got {value!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    number = int(port)
    if not 0 <= number <= 65535:
        raise ValueError(f"port out of range in {value!r}")
    return host, number


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(slots=True)
class PassThroughStats:
    connections: int = 0            # till connections accepted and forwarded
    active: int = 0
    refused: int = 0                # over max_connections, closed at once
    forward_failures: int = 0       # printer unreachable: the till's connection was closed
    bytes_to_printer: int = 0
    bytes_to_till: int = 0
    copies_dropped: int = 0         # the decoder fell behind; printing was not held up
    bytes_dropped: int = 0
    printer_reachable: bool | None = None
    last_error: str | None = None


class _Link:
    """One till connection and its printer connection."""

    def __init__(self, conn_id: int, till: socket.socket, printer: socket.socket) -> None:
        self.conn_id = conn_id
        self.till = till
        self.printer = printer
        self.till_done = threading.Event()

    def abort(self) -> None:
        # shutdown() (unlike close()) wakes the other pump thread blocked on these sockets.
        for sock in (self.till, self.printer):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class TcpPassThrough(ByteSource):
    """Listen where the till prints to (``:9100``) and forward every connection to the printer.

    Bytes go both ways unchanged (printer status replies reach the till). A copy of the
    till->printer bytes is put, without blocking, on a bounded queue that :meth:`read_chunk`
    drains; when the decoder falls behind the copy is dropped and counted, so printing never waits
    for us. If the printer cannot be reached the till's connection is closed (the till retries)
    and ``on_problem`` is told once per change.

    Copies from overlapping connections are delivered in arrival order with a boundary whenever
    the connection changes, so the decoder never joins bytes of two connections into one receipt.
    """

    def __init__(self, listen_host: str, listen_port: int, forward_host: str, forward_port: int, *,
                 name: str | None = None, copy_queue_size: int = 256, recv_size: int = 16 * 1024,
                 connect_timeout: float = 5.0, linger_seconds: float = 5.0, max_connections: int = 8,
                 drain_seconds: float = 2.0, on_problem: Callable[[str], None] | None = None) -> None:
        self.listen = (listen_host, listen_port)
        self.forward = (forward_host, forward_port)
        super().__init__(name or f"{listen_host}:{listen_port}")
        self.copy_queue_size = copy_queue_size
        self.recv_size = recv_size
        self.connect_timeout = connect_timeout
        self.linger_seconds = linger_seconds
        self.max_connections = max_connections
        self.drain_seconds = drain_seconds
        self.on_problem = on_problem
        self.stats = PassThroughStats()
        self.address: tuple[str, int] | None = None
        self._copies: queue.Queue[tuple[int, bytes | None]] = queue.Queue(maxsize=copy_queue_size)
        self._lock = threading.Lock()
        self._stopping = threading.Event()   # no new connections
        self._abort = threading.Event()      # cut the open ones
        self._listener: socket.socket | None = None
        self._acceptor: threading.Thread | None = None
        self._accept_error: str | None = None
        self._links: dict[int, _Link] = {}
        self._threads: set[threading.Thread] = set()
        self._next_id = 0
        self._copy_conn: int | None = None   # connection whose bytes the decoder is in the middle of
        self._held: tuple[int, bytes | None] | None = None
        self._end_lost = False

    def describe(self) -> str:
        return f"tcp pass-through {_host_port(*(self.address or self.listen))} -> {_host_port(*self.forward)}"

    @property
    def copy_backlog(self) -> int:
        return self._copies.qsize()

    def _open(self) -> None:
        self._close()
        self._stopping.clear()
        self._abort.clear()
        self._accept_error = None
        self._copies = queue.Queue(maxsize=self.copy_queue_size)
        self._copy_conn, self._held, self._end_lost = None, None, False
        family = socket.AF_INET6 if ":" in self.listen[0] else socket.AF_INET
        listener = socket.create_server(self.listen, family=family, reuse_port=False)
        listener.settimeout(0.2)  # lets the accept loop notice stop; closing does not wake accept()
        self._listener = listener
        host, port = listener.getsockname()[:2]
        self.address = (host, port)
        self._acceptor = threading.Thread(target=self._accept_loop, args=(listener,),
                                          name=f"passthrough-accept:{port}", daemon=True)
        self._acceptor.start()

    def _close(self) -> None:
        self._stopping.set()
        acceptor, self._acceptor = self._acceptor, None
        if acceptor is not None:
            acceptor.join(timeout=2.0)
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        with self._lock:
            threads = list(self._threads)
        # A restart of the agent should not cut a receipt in half: let running jobs finish.
        deadline = time.monotonic() + self.drain_seconds
        for thread in threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        self._abort.set()
        with self._lock:
            links = list(self._links.values())
            threads = list(self._threads)
        for link in links:
            link.abort()
        for thread in threads:
            thread.join(timeout=2.0)

    def _read_chunk(self, timeout: float) -> Chunk:
        if self._accept_error is not None:
            raise DeviceGone(f"{self.describe()}: {self._accept_error}")
        item = self._held
        self._held = None
        if item is None:
            try:
                item = self._copies.get(timeout=timeout)
            except queue.Empty:
                with self._lock:
                    end_lost, self._end_lost = self._end_lost, False
                if end_lost and self._copy_conn is not None:
                    self._copy_conn = None
                    return Chunk(b"", boundary=True)
                return _NOTHING
        conn_id, data = item
        if data is None:
            if conn_id == self._copy_conn:
                self._copy_conn = None
                return Chunk(b"", boundary=True)
            return _NOTHING  # already flushed when another connection took over
        if self._copy_conn is not None and conn_id != self._copy_conn:
            self._held = item
            self._copy_conn = None
            return Chunk(b"", boundary=True)
        self._copy_conn = conn_id
        return Chunk(data)

    def _accept_loop(self, listener: socket.socket) -> None:
        while not self._stopping.is_set():
            try:
                till, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError as exc:
                if not self._stopping.is_set():
                    self._accept_error = f"accept failed: {exc}"
                return
            with self._lock:
                over = self.stats.active >= self.max_connections
                if over:
                    self.stats.refused += 1
                else:
                    self.stats.active += 1
                    self._next_id += 1
                    conn_id = self._next_id
            if over:
                till.close()
                self._problem(f"more than {self.max_connections} till connections; refused one")
                continue
            thread = threading.Thread(target=self._serve, args=(till, conn_id),
                                      name=f"passthrough-conn:{conn_id}", daemon=True)
            with self._lock:
                self._threads.add(thread)
            thread.start()

    def _serve(self, till: socket.socket, conn_id: int) -> None:
        try:
            try:
                printer = socket.create_connection(self.forward, timeout=self.connect_timeout)
            except OSError as exc:
                self._printer_down(exc)
                till.close()
                return
            self._printer_up()
            # Blocking sends: a printer that stalls (paper out) holds the till back through TCP,
            # exactly as it would without us. A send timeout could cut a job in the middle.
            printer.settimeout(None)
            till.settimeout(None)
            link = _Link(conn_id, till, printer)
            with self._lock:
                self._links[conn_id] = link
            back = threading.Thread(target=self._pump_back, args=(link,),
                                    name=f"passthrough-back:{conn_id}", daemon=True)
            back.start()
            try:
                self._pump_forward(link)
            finally:
                back.join()
                with self._lock:
                    self._links.pop(conn_id, None)
                printer.close()
                till.close()
        finally:
            self._copy(conn_id, None)
            with self._lock:
                self.stats.active -= 1
                self._threads.discard(threading.current_thread())

    def _pump_forward(self, link: _Link) -> None:
        try:
            with _poller(link.till) as wait_readable:
                while not self._abort.is_set():
                    if not wait_readable(0.25):
                        continue
                    data = link.till.recv(self.recv_size)
                    if not data:
                        link.printer.shutdown(socket.SHUT_WR)  # the printer sees the job end
                        return
                    link.printer.sendall(data)
                    with self._lock:
                        self.stats.bytes_to_printer += len(data)
                    self._copy(link.conn_id, data)
        except OSError as exc:
            self._note(f"connection {link.conn_id}: till->printer: {exc}")
            link.abort()
        finally:
            link.till_done.set()

    def _pump_back(self, link: _Link) -> None:
        deadline: float | None = None
        try:
            with _poller(link.printer) as wait_readable:
                while not self._abort.is_set():
                    if link.till_done.is_set() and deadline is None:
                        # The till has finished sending; give the printer a moment for status bytes.
                        deadline = time.monotonic() + self.linger_seconds
                    if deadline is not None and time.monotonic() >= deadline:
                        break
                    if not wait_readable(0.25):
                        continue
                    data = link.printer.recv(self.recv_size)
                    if not data:
                        with contextlib.suppress(OSError):
                            link.till.shutdown(socket.SHUT_WR)
                        break
                    link.till.sendall(data)
                    with self._lock:
                        self.stats.bytes_to_till += len(data)
        except OSError as exc:
            self._note(f"connection {link.conn_id}: printer->till: {exc}")
            link.abort()
        # A printer that only half-closed may still be reading: the forward pump carries on.

    def _copy(self, conn_id: int, data: bytes | None) -> None:
        try:
            self._copies.put_nowait((conn_id, data))
        except queue.Full:
            with self._lock:
                if data is None:
                    self._end_lost = True
                else:
                    self.stats.copies_dropped += 1
                    self.stats.bytes_dropped += len(data)

    def _printer_down(self, exc: OSError) -> None:
        with self._lock:
            self.stats.forward_failures += 1
            changed = self.stats.printer_reachable is not False
            self.stats.printer_reachable = False
        message = (f"printer {_host_port(*self.forward)} unreachable ({exc}); "
                   "closed the till's connection so it retries")
        self._note(message)
        if changed:
            self._problem(message)

    def _printer_up(self) -> None:
        with self._lock:
            changed = self.stats.printer_reachable is False
            self.stats.printer_reachable = True
        if changed:
            self._problem(f"printer {_host_port(*self.forward)} reachable again")

    def _note(self, message: str) -> None:
        with self._lock:
            self.stats.last_error = message

    def _problem(self, message: str) -> None:
        if self.on_problem is None:
            return
        # A failing reporter must not take a till connection down with it.
        with contextlib.suppress(Exception):
            self.on_problem(message)


@contextlib.contextmanager
def _poller(sock: socket.socket) -> Iterator[Callable[[float], bool]]:
    """wait(timeout) -> True when ``sock`` is readable (data, EOF or error). Not limited to fd < 1024."""
    import selectors

    sel = selectors.DefaultSelector()
    sel.register(sock, selectors.EVENT_READ)
    try:
        yield lambda timeout: bool(sel.select(timeout))
    finally:
        sel.close()


# -- supervisor -----------------------------------------------------------------------------------

def backoff_delay(failures: int, *, base: float, cap: float, rng: random.Random) -> float:
    """Full jitter: uniform(0, min(cap, base * 2**failures)) (AWS architecture blog)."""
    ceiling = min(cap, base * 2.0 ** min(failures, 62))
    return rng.uniform(0.0, ceiling)


OnBytes = Callable[[bytes, datetime, bool], None]
OnState = Callable[[str, str], None]


def _utc_now() -> datetime:
    return datetime.now(UTC)


class Supervisor(threading.Thread):
    """Open, read, and on :class:`DeviceGone` close and reopen ``source`` -- forever, until stop().

    ``on_bytes(chunk, received, boundary)``: ``received`` is a UTC-aware receive time;
    ``boundary`` means "flush the decoder after this chunk" (end of a job, connection or file,
    or the device vanished mid-stream).
    ``on_state(state, detail)`` is called once per change of state: ``opening``, ``open``,
    ``waiting`` (not there at start), ``gone`` (vanished; silent retries follow), ``ended``
    (a finite source is exhausted), ``closed`` (stopped).

    ``last_progress`` (``clock()`` time) moves on every loop turn, also while waiting to retry,
    so a watchdog can tell a stuck reader from a quiet line.
    """

    def __init__(self, source: ByteSource, on_bytes: OnBytes, on_state: OnState, *,
                 clock: Callable[[], float] = time.monotonic, utc_now: Callable[[], datetime] = _utc_now,
                 backoff_base: float = 0.5, backoff_cap: float = 30.0, read_timeout: float = 0.2,
                 stable_seconds: float = 10.0, rng: random.Random | None = None,
                 name: str | None = None) -> None:
        super().__init__(name=name or f"source:{source.name}", daemon=True)
        self.source = source
        self.on_bytes = on_bytes
        self.on_state = on_state
        self.clock = clock
        self.utc_now = utc_now
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.read_timeout = read_timeout
        self.stable_seconds = stable_seconds
        self.rng = rng if rng is not None else random.Random()
        self.state = "new"
        self.state_detail = ""
        self.last_progress = clock()
        self.reconnects = 0
        self.bytes_delivered = 0
        self.callback_errors = 0
        self.last_error: str | None = None
        self.last_callback_error: str | None = None
        self._stop_event = threading.Event()
        self._dirty = False   # bytes delivered since the last boundary

    def stop(self) -> None:
        """Ask the thread to finish; it does within about ``read_timeout``. Then join()."""
        self._stop_event.set()
        self.source.interrupt()

    @property
    def stopping(self) -> bool:
        return self._stop_event.is_set()

    def run(self) -> None:
        try:
            self._loop()
        finally:
            self.source.close()

    def _loop(self) -> None:
        self._set_state("opening", self.source.describe())
        failures = 0
        opened_before = False
        while not self.stopping:
            self._touch()
            try:
                self.source.open()
            except Exception as exc:  # anything but a stop keeps the reader alive
                self.source.close()
                self.last_error = _explain(exc)
                if self.state == "opening":
                    self._set_state("waiting", self.last_error)
                self._pause(failures)
                failures += 1
                continue
            if opened_before:
                self.reconnects += 1
            opened_before = True
            self._set_state("open", self.source.describe())
            opened_at = self.clock()
            outcome = self._pump()
            self.source.close()
            if self.clock() - opened_at >= self.stable_seconds:
                # Only a connection that held for a while earns a fast retry; one that drops
                # right after every open (flapping adapter, converter that hangs up) backs off.
                failures = 0
            if outcome == "ended":
                self._set_state("ended", self.source.describe())
                return
            if outcome == "gone":
                self._pause(failures)
                failures += 1
        self._set_state("closed", self.source.describe())

    def _pump(self) -> str:
        while not self.stopping:
            try:
                chunk = self.source.read_chunk(self.read_timeout)
            except EndOfStream:
                self._touch()
                self._flush_pending()
                return "ended"
            except Exception as exc:  # DeviceGone, or a bug below: rebuild from scratch
                self._touch()
                self.last_error = _explain(exc)
                self._set_state("gone", self.last_error)
                self._flush_pending()
                return "gone"
            self._touch()
            if chunk.boundary:
                self._deliver(chunk.data, True)
                try:
                    self.source.commit()
                except Exception as exc:  # a failed commit only means a re-delivery later
                    self.last_error = _explain(exc)
            elif chunk.data:
                self._deliver(chunk.data, False)
        self._flush_pending()
        return "stopped"

    def _flush_pending(self) -> None:
        if self._dirty:
            self._deliver(b"", True)

    def _deliver(self, data: bytes, boundary: bool) -> None:
        self._dirty = not boundary
        self.bytes_delivered += len(data)
        try:
            self.on_bytes(data, self.utc_now(), boundary)
        except Exception as exc:  # a decoder bug must not stop the reading
            self.callback_errors += 1
            self.last_callback_error = _explain(exc)

    def _pause(self, failures: int) -> None:
        delay = backoff_delay(failures, base=self.backoff_base, cap=self.backoff_cap, rng=self.rng)
        end = self.clock() + delay
        while not self.stopping:
            remaining = end - self.clock()
            if remaining <= 0:
                break
            self._stop_event.wait(min(remaining, self.read_timeout))
            self._touch()

    def _touch(self) -> None:
        self.last_progress = self.clock()

    def _set_state(self, state: str, detail: str) -> None:
        if state == self.state:
            return
        self.state, self.state_detail = state, detail
        try:
            self.on_state(state, detail)
        except Exception as exc:  # reporting must not stop the reading
            self.callback_errors += 1
            self.last_callback_error = _explain(exc)


def _explain(exc: BaseException) -> str:
    if isinstance(exc, DeviceGone | EndOfStream):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"
