"""sd_notify(3) without libsystemd: one datagram to $NOTIFY_SOCKET.

The protocol is a stable, documented text format (READY=1, STATUS=...,
WATCHDOG=1, RELOADING=1 + MONOTONIC_USEC, STOPPING=1, EXTEND_TIMEOUT_USEC=...); writing it ourselves
saves a C dependency on a till.

Sending never blocks: the socket is non-blocking, so a NOTIFY_SOCKET whose reader is gone or slow
(its queue full) costs a dropped datagram, counted in ``dropped``, never a hung ``stop()``. A dropped
WATCHDOG=1 is what systemd would conclude anyway from a service it cannot hear.
"""

from __future__ import annotations

import os
import socket

from drivers.clock import SYSTEM_CLOCK, Clock


class SdNotify:
    def __init__(self, address: str | None = None, *, clock: Clock = SYSTEM_CLOCK) -> None:
        # RELOADING=1 carries a CLOCK_MONOTONIC reading; SystemClock.monotonic() is that clock on Linux.
        self.clock = clock
        self.address = address if address is not None else os.environ.get("NOTIFY_SOCKET")
        self._sock: socket.socket | None = None
        self.dropped = 0
        if self.address:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._sock.setblocking(False)

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def send(self, *lines: str) -> bool:
        if self._sock is None or not self.address:
            return False
        addr = self.address
        if addr.startswith("@"):
            addr = "\0" + addr[1:]  # abstract namespace socket
        try:
            self._sock.sendto("\n".join(lines).encode(), addr)
            return True
        except OSError:  # BlockingIOError when the reader's queue is full; gone or refused otherwise
            self.dropped += 1
            return False

    def ready(self, status: str | None = None) -> bool:
        return self.send("READY=1", *([f"STATUS={status}"] if status else []))

    def status(self, text: str) -> bool:
        return self.send(f"STATUS={text}")

    def extend_timeout(self, seconds: float, status: str | None = None) -> bool:
        """Still starting (or stopping): systemd waits ``seconds`` more from now before it gives up on us
        (TimeoutStartSec=/TimeoutStopSec=), as long as we keep sending this. systemd 236 and later (Debian 12
        has 252, Ubuntu 20.04 245); an older one ignores the line and keeps its own timeout."""
        usec = max(1, int(seconds * 1_000_000))
        return self.send(f"EXTEND_TIMEOUT_USEC={usec}", *([f"STATUS={status}"] if status else []))

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def reloading(self) -> bool:
        usec = int(self.clock.monotonic() * 1_000_000)
        return self.send("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def stopping(self) -> bool:
        return self.send("STOPPING=1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def watchdog_interval() -> float | None:
    """Half of WatchdogSec (systemd's advice), or None when the watchdog is off or meant for another PID."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid.isdigit() and int(pid) != os.getpid()):
        return None
    try:
        return int(usec) / 1_000_000 / 2
    except ValueError:
        return None
