"""A serial port or any pyserial URL, read (the terminal's line) or written (the simulator's end).

This module is the only one in the project that imports ``serial``.
"""

from __future__ import annotations

import contextlib
import os
import select
from typing import Any

import serial

from drivers.transports.base import ByteSource, DeviceGone

try:  # only the POSIX backend honours ``exclusive`` (flock on the tty)
    from serial.serialposix import Serial as _PosixSerial
except ImportError:  # pragma: no cover - Windows
    _PosixSerial = None


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
    """A write-only serial port for the simulator (``settleguard simulate --port``): the terminal's end.

    It lives here, not in agent/sim, because this is the one module that imports pyserial.
    """

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

    def __enter__(self) -> SerialWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

