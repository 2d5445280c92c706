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
        # A reader asks for the next chunk only after it has handled the last one, so "every pushed
        # item taken, and the reader back for more" means everything pushed has been processed.
        self._progress = threading.Condition()
        self._pushed = 0
        self._handled = 0
        self._holding = False

    def describe(self) -> str:
        return f"virtual {self.name}"

    # -- the device's side (any thread) ---------------------------------------------------------
    def push(self, data: bytes) -> None:
        self._put(Chunk(bytes(data)))

    def end_job(self) -> None:
        """A print job, connection or file ends here: the reader flushes its decoder."""
        self._put(Chunk(b"", boundary=True))

    def unplug(self) -> None:
        """The next read fails with DeviceGone, and opening fails until :meth:`replug`."""
        self._plugged.clear()
        self._put(_UNPLUG)

    def replug(self) -> None:
        self._plugged.set()

    def finish(self) -> None:
        """No more bytes will ever come (a capture file's end)."""
        self._put(_END)

    def wait_handled(self, timeout: float = 5.0) -> bool:
        """Block until the reader has handled everything pushed so far; False on timeout."""
        with self._progress:
            return self._progress.wait_for(lambda: self._handled >= self._pushed, timeout)

    def _put(self, item: Chunk | object) -> None:
        with self._progress:
            self._pushed += 1
        self._queue.put(item)

    # -- the reader's side --------------------------------------------------------------------------
    def _open(self) -> None:
        if not self._plugged.is_set():
            raise DeviceGone(f"{self.describe()}: not plugged in")
        self.opened += 1

    def _close(self) -> None:
        self._handed_back()

    def _handed_back(self) -> None:
        if self._holding:
            self._holding = False
            with self._progress:
                self._handled += 1
                self._progress.notify_all()

    def interrupt(self) -> None:
        self._queue.put(NOTHING)

    def _read_chunk(self, timeout: float) -> Chunk:
        self._handed_back()
        try:
            item = self._queue.get(timeout=timeout) if timeout > 0 else self._queue.get_nowait()
        except queue.Empty:
            return NOTHING
        if item is not NOTHING:
            self._holding = True
        if item is _UNPLUG:
            raise DeviceGone(f"{self.describe()}: unplugged")
        if item is _END:
            raise EndOfStream(self.describe())
        assert isinstance(item, Chunk)
        return item
