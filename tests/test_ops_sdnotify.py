"""sd_notify as systemd sees it: a real AF_UNIX datagram socket, a daemon on a pty, a reader that hangs."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import tzinfo
from pathlib import Path
from typing import Any

import pytest

from agent.config import SourceConfig, parse_config
from agent.messages import Command
from agent.service.daemon import Daemon, journal_path
from agent.sim.terminal import PtyTerminal
from agent.sources import SourceRunner
from drivers.transports import ByteSource

CONFIG = """
[shop]
name = "看门狗测试店"
till = "t1"
timezone = "Asia/Shanghai"

[[source]]
name = "terminal"
protocol = "jsonl"
port = "{device}"
"""

STUCK_SOURCE = """
[[source]]
name = "printer"
protocol = "jsonl"
port = "/dev/settleguard-printer"
"""


class NotifyListener:
    """What systemd's end of $NOTIFY_SOCKET receives, one datagram per entry."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.05)
        self.messages: list[tuple[float, str]] = []

    def pump(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            self.messages.append((time.monotonic(), data.decode()))

    def wait_for(self, line: str, timeout: float = 5.0, after: float = 0.0) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if any(at >= after and line in text.splitlines() for at, text in self.messages):
                return True
            self.pump(0.05)
        return False

    def lines_since(self, after: float) -> list[str]:
        return [line for at, text in self.messages if at >= after for line in text.splitlines()]

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def notify_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[NotifyListener]:
    listener = NotifyListener(tmp_path / "notify.sock")
    monkeypatch.setenv("NOTIFY_SOCKET", str(listener.path))
    monkeypatch.setenv("WATCHDOG_USEC", "400000")   # ping every 0.2 s
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    yield listener
    listener.close()


class HangingSource(ByteSource):
    """A reader stuck in read(): a wedged USB driver, a tty that never returns from the kernel."""

    def __init__(self) -> None:
        super().__init__("hanging")
        self.release = threading.Event()
        self.entered = threading.Event()

    def describe(self) -> str:
        return "a device whose read never returns"

    def _open(self) -> None:
        return None

    def _close(self) -> None:
        return None

    def _read(self, timeout: float) -> bytes:
        self.entered.set()
        self.release.wait()
        return b""

    def interrupt(self) -> None:
        self.release.set()


def runner_factory(hanging: HangingSource) -> Any:
    def make(cfg: SourceConfig, tz: tzinfo, inbox: Any, clock: Any) -> SourceRunner:
        return SourceRunner(cfg, tz, inbox, clock=clock, transport=hanging if cfg.name == "printer" else None)

    return make


def test_ready_comes_after_the_journal_and_sources_are_up_then_the_watchdog_is_fed(
        tmp_path: Path, notify_socket: NotifyListener) -> None:
    term = PtyTerminal()
    daemon = Daemon(parse_config(CONFIG.format(device=term.device)), tmp_path / "state", use_scheduler=False)
    daemon.start()
    try:
        assert notify_socket.wait_for("READY=1")
        ready_at = next(at for at, text in notify_socket.messages if "READY=1" in text)
        assert journal_path(tmp_path / "state").exists()
        assert daemon.sources and daemon.sources[0].supervisor is not None
        ready = next(text for at, text in notify_socket.messages if at == ready_at)
        assert any(line.startswith("STATUS=") and "sources: terminal=" in line for line in ready.splitlines())
        assert notify_socket.wait_for("WATCHDOG=1", timeout=3.0, after=ready_at)
        notify_socket.pump(0.3)
        assert any(line.startswith("STATUS=") for line in notify_socket.lines_since(ready_at + 0.01))
    finally:
        daemon.stop()
        term.close()
    notify_socket.pump(0.1)
    assert "STOPPING=1" in notify_socket.lines_since(0)


def test_no_watchdog_ping_while_a_reader_is_stuck_so_systemd_restarts_the_service(
        tmp_path: Path, notify_socket: NotifyListener) -> None:
    term = PtyTerminal()
    hanging = HangingSource()
    loaded = parse_config(CONFIG.format(device=term.device) + STUCK_SOURCE)
    # Delivery and the pipeline move at least once a second when idle; 1.5 s separates stuck from idle.
    daemon = Daemon(loaded, tmp_path / "state", use_scheduler=False, stuck_after=1.5,
                    make_runner=runner_factory(hanging))
    daemon.start()
    try:
        assert hanging.entered.wait(2.0), "the reader must be inside read()"
        blocked_at = time.monotonic()
        # The terminal line keeps working meanwhile: only the hanging reader is at fault.
        term.write(b'{"type": "transaction", "source": "jsonl", "kind": "sale", "result": "approved", '
                   b'"amount_minor": 100, "currency": "CNY", "voucher_no": "000001", "terminal_id": "T1"}\n')
        notify_socket.pump(2.2)
        late = notify_socket.lines_since(blocked_at + 1.5 + 0.3)   # stuck_after plus one ping interval
        assert late, "STATUS= updates keep coming; only the watchdog ping stops"
        assert "WATCHDOG=1" not in late
        assert any("reader printer stuck" in p for p in daemon.health_problems())
        assert daemon.sources[0].events == 1
        hanging.release.set()
        released_at = time.monotonic()
        assert notify_socket.wait_for("WATCHDOG=1", timeout=3.0, after=released_at), "pings resume once it moves"
    finally:
        hanging.release.set()
        daemon.stop()
        term.close()


def test_a_pipeline_that_stops_taking_items_stops_the_watchdog(tmp_path: Path,
                                                               notify_socket: NotifyListener) -> None:
    term = PtyTerminal()
    daemon = Daemon(parse_config(CONFIG.format(device=term.device)), tmp_path / "state", use_scheduler=False,
                    stuck_after=1.5)
    daemon.start()
    gate = threading.Event()
    try:
        assert notify_socket.wait_for("WATCHDOG=1", timeout=3.0)
        assert daemon.pipeline is not None
        # A listener that blocks wedges the pipeline thread exactly as a hung SQLite write would.
        def wedge(change: object) -> None:
            gate.wait(10)

        daemon.pipeline.listeners.append(wedge)
        daemon.inbox.put(Command("review"))
        time.sleep(0.2)
        stuck_at = time.monotonic()
        notify_socket.pump(2.1)
        assert "WATCHDOG=1" not in notify_socket.lines_since(stuck_at + 1.8)
        assert any("pipeline stuck" in p for p in daemon.health_problems())
    finally:
        gate.set()
        daemon.stop()
        term.close()


def test_reload_is_bracketed_by_reloading_and_ready(tmp_path: Path, notify_socket: NotifyListener) -> None:
    term = PtyTerminal()
    path = tmp_path / "settleguard.toml"
    path.write_text(CONFIG.format(device=term.device), encoding="utf-8")
    from agent.config import load_config

    daemon = Daemon(load_config(path), tmp_path / "state", use_scheduler=False, watch_config=False)
    daemon.start()
    try:
        assert notify_socket.wait_for("READY=1")
        before = time.monotonic()
        path.write_text(CONFIG.format(device=term.device) + '\n[rules.DUP-001]\nwindow = "3m"\n', encoding="utf-8")
        assert daemon.reload()
        notify_socket.pump(0.2)
        lines = notify_socket.lines_since(before)
        assert lines.index("RELOADING=1") < lines.index("READY=1")
        usec = next(int(line.split("=", 1)[1]) for line in lines if line.startswith("MONOTONIC_USEC="))
        assert abs(usec / 1e6 - time.clock_gettime(time.CLOCK_MONOTONIC)) < 5
    finally:
        daemon.stop()
        term.close()


def test_settleguard_run_under_a_notify_socket_reloads_on_sighup_and_stops_on_sigterm(
        tmp_path: Path, notify_socket: NotifyListener) -> None:
    term = PtyTerminal()
    path = tmp_path / "settleguard.toml"
    path.write_text(CONFIG.format(device=term.device), encoding="utf-8")
    log = tmp_path / "stderr.txt"
    with log.open("wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "agent.cli", "run", "--config", str(path), "--state",
                                 str(tmp_path / "state")], stdout=subprocess.DEVNULL, stderr=err,
                                env={**os.environ, "WATCHDOG_USEC": "400000"})
    try:
        assert notify_socket.wait_for("READY=1", timeout=15), log.read_text()
        hup_at = time.monotonic()
        proc.send_signal(signal.SIGHUP)
        assert notify_socket.wait_for("RELOADING=1", after=hup_at)
        assert notify_socket.wait_for("READY=1", after=hup_at)
        assert notify_socket.wait_for("WATCHDOG=1", after=hup_at)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        term.close()
    notify_socket.pump(0.1)
    assert "STOPPING=1" in notify_socket.lines_since(0)
