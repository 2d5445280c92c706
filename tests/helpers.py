"""Small builders shared by tests (not fixtures, so tests read top to bottom)."""

from __future__ import annotations

import contextlib
import json
import queue
import socket
import sqlite3
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from agent.config import LoadedConfig, parse_config
from agent.messages import AlertChange, Command, EventBatch
from agent.pipeline import Pipeline
from agent.service.control import request
from agent.service.daemon import Daemon
from agent.sim.terminal import PtyTerminal
from agent.store.journal import Journal
from agent.store.schema import journal_path
from drivers.clock import SYSTEM_CLOCK, ManualClock
from drivers.events import Event, Transaction

SHANGHAI = ZoneInfo("Asia/Shanghai")

BASE_CONFIG = """
[shop]
name = "测试店"
till = "t1"
timezone = "Asia/Shanghai"

[settlement]
cutoff = "23:00"
"""


# The issue-16 example shop's hours: closes 21:30 Monday-Thursday, 22:00 Friday and Saturday, shut Sunday.
EXAMPLE_HOURS = """
[shop.hours]
mon = ["09:00-21:30"]
tue = ["09:00-21:30"]
wed = ["09:00-21:30"]
thu = ["09:00-21:30"]
fri = ["09:00-22:00"]
sat = ["09:00-22:00"]
sun = "closed"
"""


def jsonl_line_config(shop: str, device: str, extra: str = "") -> str:
    """A shop with one JSON-lines terminal on ``device`` (a pty) and no channels."""
    return (f'[shop]\nname = "{shop}"\ntill = "t1"\ntimezone = "Asia/Shanghai"\n\n'
            f'[[source]]\nname = "terminal"\nprotocol = "jsonl"\nport = "{device}"\n' + extra)


def config(extra: str = "", base: str = BASE_CONFIG) -> LoadedConfig:
    return parse_config(base + extra, "<test>")


def sale(voucher: str, amount: int, at: datetime, *, card: str = "622576******6691", kind: str = "sale",
         original: str | None = None, result: str = "approved", terminal: str = "15221155",
         batch: str = "000128", source: str = "jsonl", rrn: str | None = None) -> Transaction:
    return Transaction(source=source, kind=kind, result=result, amount_minor=amount, time=at,
                       terminal_id=terminal, merchant_id="104152253311021", batch_no=batch, voucher_no=voucher,
                       trace_no=f"1{voucher}", rrn=rrn or f"9254{voucher}00", currency="CNY", card=card,
                       card_type="UnionPay", entry_mode="chip", operator="01", original_voucher_no=original)


class Harness:
    """A pipeline on a real SQLite file and simulated time, collecting alert changes."""

    def __init__(self, tmp: Path, loaded: LoadedConfig | None = None, *, channels: tuple[str, ...] = ("hook",),
                 start: datetime | None = None) -> None:
        self.clock = ManualClock(start or datetime(2026, 11, 27, 9, 0, tzinfo=SHANGHAI))
        self.journal = Journal(tmp / "settleguard.sqlite3")
        self.changes: list[AlertChange] = []
        self.pipeline = Pipeline(loaded or config(), self.journal, clock=self.clock, channels=channels,
                                 listeners=[self.changes.append])
        self.inbox: queue.Queue[EventBatch] = queue.Queue()

    def feed(self, *events: Event, source: str = "terminal") -> None:
        for ev in events:
            t = getattr(ev, "time", None)
            if t is not None and t > self.clock.now():
                self.clock.set(t)
            self.pipeline.process([EventBatch(source, (ev,), self.clock.now())])

    def command(self, name: str, **args: Any) -> Any:
        """Run one command through the pipeline, as the daemon's control socket does; its reply."""
        reply: queue.Queue[Any] = queue.Queue()
        self.pipeline.process([Command(name, args, reply)])
        return reply.get_nowait()

    def opened(self, rule: str | None = None) -> list[AlertChange]:
        return [c for c in self.changes if c.notice == "opened" and (rule is None or c.alert.rule == rule)]


def committed_alerts(daemon: Daemon) -> int:
    """Alerts the daemon's journal holds, read on a connection of our own: what is committed.

    Not ``pipeline.counts``: the pipeline counts an alert inside its transaction, so a test that waited
    on the count could read the journal (or the page, or ``ack``) a moment before the commit.
    """
    path = journal_path(daemon.state_dir)
    if not path.exists():
        return 0
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM alerts").fetchone()[0])
    except sqlite3.OperationalError:   # the schema not created yet
        return 0
    finally:
        conn.close()


def wait_until(condition: Callable[[], object], what: str, *, timeout: float = 10.0, pace: float = 0.02,
               wakeup: threading.Condition | None = None, detail: Callable[[], object] | None = None) -> object:
    """Poll ``condition`` until it is true and return its value; fail the test naming ``what`` on timeout.

    The one way tests wait for other threads and processes. ``timeout`` is real seconds, generous
    on purpose: it only bounds a failure. With ``wakeup`` (a Condition its producer notifies) a
    result is seen at once instead of at the next ``pace``. ``detail`` adds the state worth seeing
    when the wait fails.
    """
    deadline = SYSTEM_CLOCK.monotonic() + timeout
    while not (value := condition()):
        left = deadline - SYSTEM_CLOCK.monotonic()
        if left <= 0:
            extra = f"; {detail()}" if detail is not None else ""
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}{extra}")
        if wakeup is None:
            time.sleep(min(pace, left))
        else:
            with wakeup:
                wakeup.wait(min(pace, left))
    return value


class NotifyListener:
    """systemd's end of $NOTIFY_SOCKET: every datagram the daemon sends, in order.

    A thread reads all the time, as systemd does: the kernel queues only a few datagrams
    (net.unix.max_dgram_qlen), and a daemon whose sd_notify blocks on a full queue would stall.
    Positions in :attr:`messages` (see :meth:`mark`) say "after this point" exactly, where a
    timestamp would need a margin.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.05)
        self.messages: list[str] = []
        self.arrived = threading.Condition()
        self._closing = threading.Event()
        self._reader = threading.Thread(target=self._read, name="notify-listener", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while not self._closing.is_set():
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            with self.arrived:
                self.messages.append(data.decode(errors="replace"))
                self.arrived.notify_all()

    def mark(self) -> int:
        with self.arrived:
            return len(self.messages)

    def lines(self, since: int = 0) -> list[str]:
        with self.arrived:
            return [line for text in self.messages[since:] for line in text.splitlines()]

    def wait_for(self, line: str, *, since: int = 0, timeout: float = 10.0,
                 detail: Callable[[], object] | None = None) -> None:
        wait_until(lambda: line in self.lines(since), f"{line} on the notify socket", timeout=timeout,
                   wakeup=self.arrived, detail=detail or (lambda: f"got {self.lines(since)}"))

    def close(self) -> None:
        self._closing.set()
        self._reader.join(2.0)
        self.sock.close()
        self.path.unlink(missing_ok=True)


# -- a live daemon on a pty, for the health tests --------------------------------------------------------
def sale_line(voucher: str, amount: int = 12800, card: str = "622576******6691") -> bytes:
    """One approved sale as a JSON-lines terminal sends it (terminal T1, batch 000001)."""
    return json.dumps({"type": "transaction", "source": "jsonl", "kind": "sale", "result": "approved",
                       "terminal_id": "T1", "batch_no": "000001", "voucher_no": voucher, "amount_minor": amount,
                       "currency": "CNY", "card": card, "time": "2026-11-27T14:00:00+08:00"}).encode() + b"\n"


def daemon_on_pty(tmp_path: Path, term: PtyTerminal, extra: str = "", **kwargs: Any) -> Daemon:
    """The real daemon, started, reading a JSON-lines terminal on ``term``, on a ManualClock at 14:00
    Shanghai, with a 30 s "stuck" limit and no scheduler unless asked for."""
    clock = ManualClock(datetime(2026, 11, 27, 14, 0, tzinfo=SHANGHAI))
    kwargs.setdefault("use_scheduler", False)
    daemon = Daemon(parse_config(jsonl_line_config("健康测试店", term.device, extra)), tmp_path / "state",
                    clock=clock, stuck_after=30.0, **kwargs)
    daemon.start()
    return daemon


def quiet_request(sock: Path, payload: dict[str, object]) -> None:
    """Send a control request whose reply does not matter (the test looks at the pipeline and health)."""
    with contextlib.suppress(OSError, ValueError):
        request(sock, payload, timeout=15.0)


# A one-till shop with a 23:00 cutoff and a webhook nothing listens on: what month-long replay/pipeline
# comparisons run (tests/test_replay_batched.py, tests/test_lookback_differential.py).
MONTH_CONFIG = """
[shop]
name = "回放测试店"
till = "t1"
timezone = "Asia/Shanghai"

[settlement]
cutoff = "23:00"

[[channel]]
name = "hq"
type = "webhook"
url = "http://127.0.0.1:9/never-called"
"""
