"""Shared by the fault tests: the daemon as a real subprocess, the pty terminal, journal reads.

Reduced forms run in ``make test``; ``SETTLEGUARD_FAULTS_FULL=1`` (set by
``python -m bench``) selects the long forms the issue asks for.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from agent.service.control import request
from agent.sim.day import luhn_complete
from agent.sim.terminal import encode_event
from drivers.clock import SYSTEM_CLOCK
from drivers.events import Transaction
from tests.helpers import NotifyListener, wait_until

FULL = os.environ.get("SETTLEGUARD_FAULTS_FULL") == "1"
SHANGHAI = ZoneInfo("Asia/Shanghai")

class DaemonProcess:
    """``settleguard run`` as systemd would run it, restartable after kill -9."""

    def __init__(self, config: Path, state: Path) -> None:
        self.config = config
        self.state = state
        self.notify = NotifyListener(state.parent / f"{state.name}-notify.sock")
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = state.parent / f"{state.name}.log"
        self.starts = 0

    def start(self, timeout: float = 20.0) -> None:
        env = {**os.environ, "NOTIFY_SOCKET": str(self.notify.path)}
        since = self.notify.mark()
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "agent.cli", "run", "--config", str(self.config),
                                          "--state", str(self.state)], env=env, stdout=log, stderr=log)
        self.starts += 1
        self.notify.wait_for("READY=1", since=since, timeout=timeout,
                             detail=lambda: f"log:\n{self.log.read_text()[-3000:]}")
        # READY comes once the reader thread is started; bytes are only ours once the port is open
        # (pyserial flushes the tty's input queue when it opens it).
        self.wait_source("open", timeout)

    def status(self) -> dict[str, Any] | None:
        try:
            return request(self.state / "control.sock", {"cmd": "status"}, timeout=5.0)
        except OSError:
            return None

    def wait_source(self, state: str, timeout: float) -> None:
        def reached() -> bool:
            reply = self.status()
            return bool(reply and reply.get("sources", {}).get("terminal", {}).get("state") == state)

        wait_until(reached, f"the terminal source {state!r}", timeout=timeout,
                   detail=lambda: f"last status {self.status()}")

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.proc = None

    def stop(self) -> int:
        if self.proc is None:
            return 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self.proc = None
        return code

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def close(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
        self.notify.close()


@dataclass
class Till:
    """Writes numbered sales onto the terminal side of the pty; every ``dup_every``-th repeats the last charge."""

    write: Any
    rng: random.Random = field(default_factory=lambda: random.Random(7))
    dup_every: int = 10
    next_voucher: int = 1
    last: tuple[str, int] | None = None
    written: dict[str, float] = field(default_factory=dict)      # voucher -> when its last byte was written
    duplicates: dict[str, str] = field(default_factory=dict)     # duplicate voucher -> first voucher

    def sale(self) -> tuple[str, bytes]:
        number = self.next_voucher
        voucher = f"{number:06d}"
        self.next_voucher += 1
        if self.last is not None and number % self.dup_every == 0:
            card, amount = self.last
            self.duplicates[voucher] = f"{int(voucher) - 1:06d}"
        else:
            card = luhn_complete("622576" + "".join(str(self.rng.randrange(10)) for _ in range(9)))
            amount = self.rng.randrange(10, 2000) * 100
        self.last = (card, amount)
        txn = Transaction(source="sim", kind="sale", result="approved", amount_minor=amount,
                          time=SYSTEM_CLOCK.now().astimezone(SHANGHAI).replace(microsecond=0),
                          terminal_id="15221155",
                          merchant_id="104152253311021", batch_no="000300", voucher_no=voucher,
                          trace_no=voucher, rrn=f"9{voucher:0>11}", auth_code="654321", currency="CNY", card=card,
                          card_type="UnionPay", entry_mode="chip", operator="01")
        return voucher, encode_event("cn_ecr", txn)

    def send(self) -> str:
        voucher, data = self.sale()
        self.write(data)
        self.written[voucher] = SYSTEM_CLOCK.monotonic()
        return voucher


def journal(state: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(f"file:{state / 'settleguard.sqlite3'}?mode=ro", uri=True, timeout=30)
    conn.row_factory = sqlite3.Row
    return conn


def vouchers_in_journal(state: Path) -> dict[str, int]:
    """voucher -> number of sightings recorded for it."""
    with closing(journal(state)) as conn:
        rows = conn.execute("SELECT t.voucher_no, COUNT(s.id) AS n FROM transactions t "
                            "JOIN sightings s ON s.txn_id = t.id GROUP BY t.id").fetchall()
    return {r["voucher_no"]: r["n"] for r in rows}
