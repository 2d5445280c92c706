"""sd_notify as systemd sees it: a real AF_UNIX datagram socket, a daemon on a pty, a reader that hangs.

The watchdog tests run the daemon on a ManualClock: a thread is "stuck" when the test has moved
the clock past ``stuck_after`` and the thread has not noted progress since. They take each
watchdog round themselves (``Daemon.notify_systemd``) and wait for conditions, never for a
stretch of time: how busy the machine is changes how long they take, not whether they pass.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import tzinfo
from pathlib import Path
from typing import Any

import pytest

from agent.config import SourceConfig, load_config, parse_config
from agent.messages import Command
from agent.service.daemon import Daemon
from agent.sim.terminal import PtyTerminal
from agent.sources import SourceRunner
from agent.store.schema import journal_path
from drivers.clock import Clock, ManualClock
from drivers.transports import ByteSource
from tests.helpers import NotifyListener, jsonl_line_config, wait_until

STUCK_SOURCE = """
[[source]]
name = "printer"
protocol = "jsonl"
port = "/dev/settleguard-printer"
"""

SALE = (b'{"type": "transaction", "source": "jsonl", "kind": "sale", "result": "approved", "amount_minor": 100, '
        b'"currency": "CNY", "voucher_no": "000001", "terminal_id": "T1"}\n')


def config_text(device: str, extra: str = "") -> str:
    return jsonl_line_config("看门狗测试店", device, extra)


def wait_for_status(listener: NotifyListener, since: int) -> None:
    """A round ends with STATUS=; datagrams arrive in order, so a WATCHDOG=1 of that round is in by then."""
    wait_until(lambda: any(line.startswith("STATUS=") for line in listener.lines(since)), "a STATUS= line",
               detail=lambda: listener.lines(since))


@pytest.fixture
def notify_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[NotifyListener]:
    """The daemon's own watchdog loop pings every 0.2 s."""
    listener = NotifyListener(tmp_path / "notify.sock")
    monkeypatch.setenv("NOTIFY_SOCKET", str(listener.path))
    monkeypatch.setenv("WATCHDOG_USEC", "400000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    yield listener
    listener.close()


@pytest.fixture
def stepped_notify(notify_socket: NotifyListener, monkeypatch: pytest.MonkeyPatch) -> NotifyListener:
    """The watchdog loop idles (a ping an hour): the test takes each watchdog round itself."""
    monkeypatch.setenv("WATCHDOG_USEC", str(2 * 3600 * 1_000_000))
    return notify_socket


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
    def make(cfg: SourceConfig, tz: tzinfo, inbox: Any, clock: Clock) -> SourceRunner:
        return SourceRunner(cfg, tz, inbox, clock=clock, transport=hanging if cfg.name == "printer" else None)

    return make


def test_ready_comes_after_the_journal_and_sources_are_up_then_the_watchdog_is_fed(
        tmp_path: Path, notify_socket: NotifyListener) -> None:
    term = PtyTerminal()
    daemon = Daemon(parse_config(config_text(term.device)), tmp_path / "state", use_scheduler=False)
    daemon.start()
    try:
        notify_socket.wait_for("READY=1")
        ready_at = next(i for i, text in enumerate(notify_socket.messages) if "READY=1" in text.splitlines())
        assert journal_path(tmp_path / "state").exists()
        assert daemon.sources and daemon.sources[0].supervisor is not None
        ready = notify_socket.messages[ready_at].splitlines()
        assert any(line.startswith("STATUS=") and "sources: terminal=" in line for line in ready)
        notify_socket.wait_for("WATCHDOG=1", since=ready_at + 1)
        pinged_at = next(i for i, text in enumerate(notify_socket.messages) if i > ready_at and text == "WATCHDOG=1")
        wait_for_status(notify_socket, pinged_at + 1)
    finally:
        daemon.stop()
        term.close()
    notify_socket.wait_for("STOPPING=1")


def test_no_watchdog_ping_while_a_reader_is_stuck_so_systemd_restarts_the_service(
        tmp_path: Path, stepped_notify: NotifyListener) -> None:
    term = PtyTerminal()
    hanging = HangingSource()
    clock = ManualClock()
    daemon = Daemon(parse_config(config_text(term.device, STUCK_SOURCE)), tmp_path / "state", clock=clock,
                    use_scheduler=False, stuck_after=30.0, make_runner=runner_factory(hanging))
    daemon.start()
    try:
        assert hanging.entered.wait(10), "the reader must be inside read()"
        # The terminal line keeps working meanwhile: only the hanging reader is at fault.
        term.write(SALE)
        wait_until(lambda: daemon.sources[0].events == 1, "the terminal's sale decoded")
        assert daemon.notify_systemd() == (), "nothing can be late while the clock stands still"
        clock.advance(31)
        # Every thread that is merely idle notes progress on the clock within a second; the hung one cannot.
        wait_until(lambda: daemon.health_problems() == ["reader printer stuck for 31s"],
                   "only the hung reader judged stuck", detail=daemon.health_problems)
        since = stepped_notify.mark()
        assert daemon.notify_systemd() == ("reader printer stuck for 31s",)
        wait_for_status(stepped_notify, since)
        assert "WATCHDOG=1" not in stepped_notify.lines(since), "STATUS= goes on; only the watchdog ping stops"
        hanging.release.set()
        since = stepped_notify.mark()
        wait_until(lambda: not daemon.notify_systemd(), "a healthy watchdog round once the reader moves",
                   detail=daemon.health_problems)
        stepped_notify.wait_for("WATCHDOG=1", since=since)
    finally:
        hanging.release.set()
        daemon.stop()
        term.close()


def test_a_pipeline_that_stops_taking_items_stops_the_watchdog(tmp_path: Path,
                                                               stepped_notify: NotifyListener) -> None:
    term = PtyTerminal()
    clock = ManualClock()
    daemon = Daemon(parse_config(config_text(term.device)), tmp_path / "state", clock=clock, use_scheduler=False,
                    stuck_after=30.0)
    daemon.start()
    gate = threading.Event()
    wedged = threading.Event()
    try:
        since = stepped_notify.mark()
        assert daemon.notify_systemd() == (), "nothing can be late while the clock stands still"
        stepped_notify.wait_for("WATCHDOG=1", since=since)
        assert daemon.pipeline is not None

        # A listener that blocks wedges the pipeline thread exactly as a hung SQLite write would.
        def wedge(change: object) -> None:
            wedged.set()
            gate.wait(30)

        daemon.pipeline.listeners.append(wedge)
        daemon.inbox.put(Command("review"))
        assert wedged.wait(10), "the review must reach the listener"
        clock.advance(31)
        since = stepped_notify.mark()
        assert "pipeline stuck for 31s" in daemon.notify_systemd()
        wait_for_status(stepped_notify, since)
        assert "WATCHDOG=1" not in stepped_notify.lines(since)
        gate.set()
        since = stepped_notify.mark()
        wait_until(lambda: not daemon.notify_systemd(), "a healthy round once the pipeline moves again",
                   detail=daemon.health_problems)
        stepped_notify.wait_for("WATCHDOG=1", since=since)
    finally:
        gate.set()
        daemon.stop()
        term.close()


def test_reload_is_bracketed_by_reloading_and_ready(tmp_path: Path, stepped_notify: NotifyListener) -> None:
    term = PtyTerminal()
    path = tmp_path / "settleguard.toml"
    path.write_text(config_text(term.device), encoding="utf-8")
    clock = ManualClock(monotonic=4321.5)
    daemon = Daemon(load_config(path), tmp_path / "state", clock=clock, use_scheduler=False, watch_config=False)
    daemon.start()
    try:
        stepped_notify.wait_for("READY=1")
        since = stepped_notify.mark()
        path.write_text(config_text(term.device, '\n[rules.DUP-001]\nwindow = "3m"\n'), encoding="utf-8")
        clock.advance(2)
        assert daemon.reload()
        stepped_notify.wait_for("READY=1", since=since)
        lines = stepped_notify.lines(since)
        assert lines.index("RELOADING=1") < lines.index("READY=1")
        # systemd wants CLOCK_MONOTONIC in microseconds: the daemon's own monotonic clock.
        assert "MONOTONIC_USEC=4323500000" in lines
    finally:
        daemon.stop()
        term.close()


def test_settleguard_run_under_a_notify_socket_reloads_on_sighup_and_stops_on_sigterm(
        tmp_path: Path, notify_socket: NotifyListener) -> None:
    term = PtyTerminal()
    path = tmp_path / "settleguard.toml"
    path.write_text(config_text(term.device), encoding="utf-8")
    log = tmp_path / "stderr.txt"
    with log.open("wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "agent.cli", "run", "--config", str(path), "--state",
                                 str(tmp_path / "state")], stdout=subprocess.DEVNULL, stderr=err,
                                env={**os.environ, "WATCHDOG_USEC": "400000"})
    try:
        notify_socket.wait_for("READY=1", timeout=15, detail=log.read_text)
        hup = notify_socket.mark()
        proc.send_signal(signal.SIGHUP)
        notify_socket.wait_for("RELOADING=1", since=hup)
        notify_socket.wait_for("READY=1", since=hup)
        notify_socket.wait_for("WATCHDOG=1", since=hup)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        term.close()
    notify_socket.wait_for("STOPPING=1")
