"""What the transport tests share: a recorder of what a Supervisor reports, pseudo-terminals, the fixtures' bytes.

Every wait is bounded; the backoff is shrunk so a reconnect takes milliseconds.
"""

from __future__ import annotations

import os
import random
import threading
import tty
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from drivers.transports import ByteSource, Supervisor
from tests.helpers import wait_until

DATA = Path(__file__).parent / "data" / "transport"
RECEIPT_WITH_LOGO = (DATA / "receipt-with-logo.bin").read_bytes()      # 9579 bytes
RECEIPT = (DATA / "preview-tools-receipt.bin").read_bytes()             # 613 bytes
MINIMAL = (DATA / "preview-tools-minimal.bin").read_bytes()             # 41 bytes
FORMATTING = (DATA / "preview-tools-formatting.bin").read_bytes()       # 187 bytes

WAIT = 5.0  # generous upper bound for anything that should take milliseconds
FAST: dict[str, Any] = {"backoff_base": 0.01, "backoff_cap": 0.05, "read_timeout": 0.05}


class Recorder:
    """Collects what a Supervisor reports; lets the test wait for a condition without sleeping."""

    def __init__(self, on_bytes_hook: Callable[[bytes, bool], None] | None = None) -> None:
        self.cond = threading.Condition()
        self.chunks: list[tuple[bytes, datetime, bool]] = []
        self.states: list[tuple[str, str]] = []
        self.hook = on_bytes_hook

    def on_bytes(self, data: bytes, received: datetime, boundary: bool) -> None:
        with self.cond:
            self.chunks.append((data, received, boundary))
            self.cond.notify_all()
        if self.hook is not None:
            self.hook(data, boundary)

    def on_state(self, state: str, detail: str) -> None:
        with self.cond:
            self.states.append((state, detail))
            self.cond.notify_all()

    def wait_for(self, predicate: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
        """Wakes on every report, and polls briefly for conditions on other objects (counters)."""
        wait_until(predicate, what, timeout=timeout, pace=0.005, wakeup=self.cond,
                   detail=lambda: f"states={self.state_names}")

    def wait_state(self, state: str, times: int = 1) -> None:
        self.wait_for(lambda: self.state_names.count(state) >= times, f"state {state!r} x{times}")

    @property
    def state_names(self) -> list[str]:
        return [s for s, _ in self.states]

    @property
    def data(self) -> bytes:
        with self.cond:
            return b"".join(d for d, _, _ in self.chunks)

    @property
    def jobs(self) -> list[bytes]:
        """The byte stream cut at boundaries: one entry per job / connection / file."""
        out: list[bytes] = []
        current = bytearray()
        with self.cond:
            for data, _, boundary in self.chunks:
                current += data
                if boundary:
                    out.append(bytes(current))
                    current.clear()
        return out


@contextmanager
def running(source: ByteSource, rec: Recorder, **kwargs: Any) -> Iterator[Supervisor]:
    sup = Supervisor(source, rec.on_bytes, rec.on_state, **{**FAST, **kwargs})
    sup.start()
    try:
        yield sup
    finally:
        sup.stop()
        sup.join(WAIT)
        assert not sup.is_alive(), "supervisor did not stop"


class Pty:
    """A pseudo-terminal: the test holds the master (the "terminal"), the agent opens the slave path."""

    def __init__(self) -> None:
        self.master, slave = os.openpty()
        tty.setraw(slave)
        self.path = os.ttyname(slave)
        os.close(slave)
        self.closed = False

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self.master, view)
            view = view[n:]

    def unplug(self) -> None:
        if not self.closed:
            os.close(self.master)
            self.closed = True


def repoint(link: Path, target: str) -> None:
    """What udev does on replug: the by-id name now leads to whichever ttyUSBn the adapter got."""
    tmp = link.with_name(link.name + ".new")
    os.symlink(target, tmp)
    os.replace(tmp, link)


class CountingRandom(random.Random):
    """Records the ceiling of every backoff draw."""

    def __init__(self) -> None:
        super().__init__(7)
        self.ceilings: list[float] = []

    @property
    def draws(self) -> int:
        return len(self.ceilings)

    def uniform(self, a: float, b: float) -> float:
        self.ceilings.append(b)
        return super().uniform(a, b)
