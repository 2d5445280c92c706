"""Byte transports: the only place that touches the wire.

One module per kind of source, all behind :class:`~drivers.transports.base.ByteSource`
(``open`` / ``read_chunk`` / ``commit`` / ``close``, or ``with source:``):

* :mod:`.serial` -- any pyserial URL (``/dev/ttyUSB0``, ``/dev/serial/by-id/...``, ``socket://``,
  ``rfc2217://``, ``loop://``), and the simulator's write-only end.
* :mod:`.file` -- a capture file, read once.
* :mod:`.spool` -- a directory a virtual printer drops job files in.
* :mod:`.tcp` -- a pass-through between the till and a network receipt printer.
* :mod:`.virtual` -- an in-process source tests push bytes into.

:mod:`.supervisor` holds the open / read / reopen loop once for every source.
"""

from __future__ import annotations

from drivers.transports.base import ByteSource, Chunk, DeviceGone, EndOfStream
from drivers.transports.file import FileSource
from drivers.transports.serial import SerialSource, SerialWriter
from drivers.transports.spool import SpoolDirSource
from drivers.transports.supervisor import Supervisor
from drivers.transports.tcp import PassThroughStats, TcpPassThrough, parse_host_port
from drivers.transports.virtual import VirtualSource

__all__ = [
    "ByteSource", "Chunk", "DeviceGone", "EndOfStream", "FileSource", "PassThroughStats", "SerialSource",
    "SerialWriter", "SpoolDirSource", "Supervisor", "TcpPassThrough", "VirtualSource", "parse_host_port",
]
