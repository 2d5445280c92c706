"""An in-process byte source that tests and the demo push bytes into (python-can's VirtualBus idea).

Everything a real device can do to a reader can be done to it from the test's thread: bytes in any
split, the end of a job (a boundary), an unplug (:class:`DeviceGone` on the next read, until
:meth:`VirtualSource.replug`), and the end of a finite input (:class:`EndOfStream`).
"""

from __future__ import annotations

import queue
import threading

from drivers.transports.base import NOTHING, ByteSource, Chunk, DeviceGone, EndOfStream

_UNPLUG = object()
_END = object()


class VirtualSource(ByteSource):
    def __init__(self, name: str = "virtual") -> None:
        super().__init__(name)
        self._queue: queue.Queue[Chunk | object] = queue.Queue()
        self._plugged = threading.Event()
        self._plugged.set()
        self.opened = 0   # how many times a reader opened it: a reconnect shows here

    def describe(self) -> str:
        return f"virtual {self.name}"

    # -- the device's side (any thread) ---------------------------------------------------------
    def push(self, data: bytes) -> None:
        self._queue.put(Chunk(bytes(data)))

    def end_job(self) -> None:
        """A print job, connection or file ends here: the reader flushes its decoder."""
        self._queue.put(Chunk(b"", boundary=True))

    def unplug(self) -> None:
        """The next read fails with DeviceGone, and opening fails until :meth:`replug`."""
        self._plugged.clear()
        self._queue.put(_UNPLUG)

    def replug(self) -> None:
        self._plugged.set()

    def finish(self) -> None:
        """No more bytes will ever come (a capture file's end)."""
        self._queue.put(_END)

    # -- the reader's side --------------------------------------------------------------------------
    def _open(self) -> None:
        if not self._plugged.is_set():
            raise DeviceGone(f"{self.describe()}: not plugged in")
        self.opened += 1

    def _close(self) -> None:
        return None

    def interrupt(self) -> None:
        self._queue.put(NOTHING)

    def _read_chunk(self, timeout: float) -> Chunk:
        try:
            item = self._queue.get(timeout=timeout) if timeout > 0 else self._queue.get_nowait()
        except queue.Empty:
            return NOTHING
        if item is _UNPLUG:
            raise DeviceGone(f"{self.describe()}: unplugged")
        if item is _END:
            raise EndOfStream(self.describe())
        assert isinstance(item, Chunk)
        return item
