"""What every byte source is: open, read chunks, close; two exceptions and nothing library-specific above it.

A :class:`ByteSource` opens a device, hands out whatever bytes arrived, and says clearly when the
device went away (:class:`DeviceGone`) or when a finite input is exhausted (:class:`EndOfStream`).
Library errors (pyserial's ``SerialException``, ``OSError``) are translated at this boundary.
A source is a context manager (``with source: ...`` opens and closes it); the
:class:`~drivers.transports.supervisor.Supervisor` instead opens and reopens it in a loop.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import TracebackType


class DeviceGone(Exception):
    """The device is not there (never plugged in, unplugged, peer closed, directory removed)."""


class EndOfStream(Exception):
    """A finite input (a capture file) is exhausted; the reader ends, nothing is reopened."""


@dataclass(frozen=True, slots=True)
class Chunk:
    """Bytes from a source; ``boundary`` marks the end of a job, connection or file."""

    data: bytes
    boundary: bool = False


NOTHING = Chunk(b"")  # a read that timed out


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
        token = self.commit_token()
        if token is not None:
            token()

    def commit_token(self) -> Callable[[], None] | None:
        """Right after a boundary: what to call once everything up to it is durable, or None.

        The reader thread takes it; the consumer calls it from its own thread after its commit
        (a spool job is moved to done/ only then, so a crash before the commit re-reads the job).
        """
        return None

    def interrupt(self) -> None:
        """Called from another thread (the supervisor's stop) to cut a pending read short."""
        return None

    def __enter__(self) -> ByteSource:
        self.open()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

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
