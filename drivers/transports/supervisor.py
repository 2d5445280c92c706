"""The reader thread: open, read, and on :class:`DeviceGone` close and reopen a source, until stopped."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from datetime import datetime

from drivers.backoff import backoff_delay
from drivers.clock import SYSTEM_CLOCK, Clock
from drivers.transports.base import ByteSource, DeviceGone, EndOfStream

OnBytes = Callable[[bytes, datetime, bool], None]
OnState = Callable[[str, str], None]


class Supervisor(threading.Thread):
    """Open, read, and on :class:`DeviceGone` close and reopen ``source`` -- forever, until stop().

    ``on_bytes(chunk, received, boundary)``: ``received`` is a UTC-aware receive time;
    ``boundary`` means "flush the decoder after this chunk" (end of a job, connection or file,
    or the device vanished mid-stream).
    ``on_state(state, detail)`` is called once per change of state: ``opening``, ``open``,
    ``waiting`` (not there at start), ``gone`` (vanished; silent retries follow), ``ended``
    (a finite source is exhausted), ``closed`` (stopped).

    After a boundary the supervisor commits the source (a spool job is moved to done/) -- unless
    ``consumer_commits``: then ``on_bytes`` takes ``source.commit_token()`` itself and calls it once
    what it made of the bytes is durable (the daemon: after the journal transaction).

    ``received`` and every duration (backoff, how long a connection held, ``last_progress``) come from
    the injected ``clock``. ``last_progress`` (``clock.monotonic()``) moves on every loop turn, also
    while waiting to retry, so a watchdog can tell a stuck reader from a quiet line.
    """

    def __init__(self, source: ByteSource, on_bytes: OnBytes, on_state: OnState, *,
                 clock: Clock = SYSTEM_CLOCK,
                 backoff_base: float = 0.5, backoff_cap: float = 30.0, read_timeout: float = 0.2,
                 stable_seconds: float = 10.0, rng: random.Random | None = None,
                 name: str | None = None, consumer_commits: bool = False) -> None:
        super().__init__(name=name or f"source:{source.name}", daemon=True)
        self.source = source
        self.on_bytes = on_bytes
        self.on_state = on_state
        self.clock = clock
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.read_timeout = read_timeout
        self.stable_seconds = stable_seconds
        self.consumer_commits = consumer_commits
        self.rng = rng if rng is not None else random.Random()
        self.state = "new"
        self.state_detail = ""
        self.last_progress = clock.monotonic()
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
            opened_at = self.clock.monotonic()
            outcome = self._pump()
            self.source.close()
            if self.clock.monotonic() - opened_at >= self.stable_seconds:
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
                if not self.consumer_commits:
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
            self.on_bytes(data, self.clock.now(), boundary)
        except Exception as exc:  # a decoder bug must not stop the reading
            self.callback_errors += 1
            self.last_callback_error = _explain(exc)

    def _pause(self, failures: int) -> None:
        delay = backoff_delay(failures, base=self.backoff_base, cap=self.backoff_cap, rng=self.rng)
        end = self.clock.monotonic() + delay
        while not self.stopping:
            remaining = end - self.clock.monotonic()
            if remaining <= 0:
                break
            self._stop_event.wait(min(remaining, self.read_timeout))
            self._touch()

    def _touch(self) -> None:
        self.last_progress = self.clock.monotonic()

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
