"""A capture file as a byte source: read once, then :class:`~drivers.transports.base.EndOfStream`."""

from __future__ import annotations

import os
from typing import BinaryIO

from drivers.transports.base import ByteSource, DeviceGone, EndOfStream


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
