"""Hot reload while the daemon runs: edits in place and by rename, a refused edit, one source restarted."""

from __future__ import annotations

import errno
import logging
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from watchdog.events import FileSystemEvent, FileSystemEventHandler

from agent.alerts.lifecycle import NoticeKind
from agent.config import load_config
from agent.messages import AlertChange
from agent.service.daemon import Daemon
from agent.service.doctor import check_daemon
from agent.service.reload import ConfigWatcher
from agent.sim.terminal import PtyTerminal, encode_event
from drivers.clock import ManualClock
from tests.helpers import sale, wait_until

CONFIG = """
[shop]
name = "热加载测试店"
till = "t1"
timezone = "Asia/Shanghai"

[[source]]
name = "terminal"
protocol = "jsonl"
port = "{terminal}"

[[source]]
name = "printer"
protocol = "jsonl"
port = "{printer}"
baudrate = {printer_baud}

[rules.DUP-001]
window = "{window}"
"""


class Shop:
    """A running daemon on two pty lines, configured from a real file in its own directory."""

    def __init__(self, tmp: Path, **daemon_args: Any) -> None:
        self.terminal, self.printer = PtyTerminal(), PtyTerminal()
        self.dir = tmp / "etc"
        self.dir.mkdir()
        self.path = self.dir / "settleguard.toml"
        self.write(window="2m")
        self.changes: list[object] = []
        self.daemon = Daemon(load_config(self.path), tmp / "state", use_scheduler=False,
                             listeners=[self.changes.append], reload_debounce=0.1, **daemon_args)
        self.daemon.start()
        self.voucher = 100

    def text(self, *, window: str, printer_baud: int = 9600) -> str:
        return CONFIG.format(terminal=self.terminal.device, printer=self.printer.device, window=window,
                             printer_baud=printer_baud)

    def write(self, **kw: Any) -> None:
        self.path.write_text(self.text(**kw), encoding="utf-8")

    def write_by_rename(self, **kw: Any) -> None:
        tmp = self.dir / ".settleguard.toml.swp"
        tmp.write_text(self.text(**kw), encoding="utf-8")
        os.replace(tmp, self.path)

    def charge_twice(self, card: str, amount: int, gap: timedelta) -> None:
        """The same card and amount on two vouchers, ``gap`` apart, both minutes ago."""
        first = self.daemon.clock.now() - timedelta(minutes=20)
        for at in (first, first + gap):
            self.voucher += 1
            self.terminal.write(encode_event("jsonl", sale(f"{self.voucher:06d}", amount, at, card=card)))

    def dup_alerts(self, card: str) -> list[AlertChange]:
        # Listeners also hear reviews (one comes at start-up when the daemon starts after 22:30 in Shanghai).
        return [c for c in self.changes if isinstance(c, AlertChange) and c.notice == NoticeKind.OPENED
                and c.alert.rule == "DUP-001" and c.alert.transactions[-1].card == card]

    def transactions(self) -> int:
        return self.daemon.pipeline.counts["new_transactions"] if self.daemon.pipeline else 0

    def close(self) -> None:
        self.daemon.stop()
        self.terminal.close()
        self.printer.close()


@pytest.fixture
def shop(tmp_path: Path) -> Any:
    s = Shop(tmp_path)
    yield s
    s.close()


def test_widening_the_duplicate_window_in_place_takes_effect_without_a_restart(shop: Shop) -> None:
    shop.charge_twice("622576******0001", 4200, timedelta(minutes=5))
    wait_until(lambda: shop.transactions() == 2, "both charges journalled")
    assert not shop.dup_alerts("622576******0001"), "5 minutes apart is outside a 2-minute window"
    terminal_runner = shop.daemon.sources[0]

    shop.write(window="10m")
    wait_until(lambda: shop.daemon.reloads == 1, "the edit reloaded")
    assert shop.daemon.last_reload_error is None
    shop.charge_twice("622576******0002", 4300, timedelta(minutes=5))
    wait_until(lambda: shop.dup_alerts("622576******0002"), "a DUP-001 alert on the 10-minute window")
    assert shop.daemon.sources[0] is terminal_runner, "a rule change must not drop the serial line"


def test_an_edit_saved_by_rename_is_picked_up(shop: Shop) -> None:
    shop.write_by_rename(window="10m")
    wait_until(lambda: shop.daemon.reloads == 1, "the renamed file reloaded")
    pipeline = shop.daemon.pipeline
    assert pipeline is not None
    wait_until(lambda: pipeline.engine.params["DUP-001"].window == timedelta(minutes=10),
               "the pipeline on the new window")
    shop.charge_twice("622576******0003", 5100, timedelta(minutes=6))
    wait_until(lambda: shop.dup_alerts("622576******0003"), "a DUP-001 alert on the new window")


def test_an_invalid_edit_is_refused_and_the_daemon_keeps_alerting(shop: Shop, tmp_path: Path) -> None:
    shop.path.write_text(shop.text(window="10m").replace('window = "10m"', 'window = "banana"'),
                         encoding="utf-8")
    wait_until(lambda: shop.daemon.last_reload_error is not None, "the invalid edit refused")
    error = shop.daemon.last_reload_error or ""
    assert str(shop.path) in error and "DUP-001" in error
    assert shop.daemon.pipeline is not None
    assert shop.daemon.pipeline.engine.params["DUP-001"].window == timedelta(minutes=2)

    shop.charge_twice("622576******0004", 8800, timedelta(minutes=1))
    wait_until(lambda: shop.dup_alerts("622576******0004"), "still alerting on the old rules")

    # doctor asks the running daemon and shows what to fix.
    checks = {c.name: c for c in check_daemon(tmp_path / "state")}
    assert checks["last reload"].status == "fail" and "banana" in checks["last reload"].detail

    shop.write(window="10m")   # fixed: the error clears
    wait_until(lambda: shop.daemon.last_reload_error is None and shop.daemon.reloads == 1,
               "the fixed file reloaded and the error cleared")


def test_a_new_baud_rate_restarts_only_that_source(shop: Shop) -> None:
    terminal_runner, printer_runner = shop.daemon.sources
    shop.write(window="2m", printer_baud=19200)
    wait_until(lambda: shop.daemon.reloads == 1, "the baud-rate change reloaded")
    names = {r.cfg.name: r for r in shop.daemon.sources}
    assert names["terminal"] is terminal_runner
    assert names["printer"] is not printer_runner and names["printer"].cfg.baudrate == 19200
    assert printer_runner.supervisor is not None and not printer_runner.supervisor.is_alive()
    assert shop.daemon.last_reload_summary == "restarted source(s) printer"
    # The restarted line reads again.
    shop.printer.write(encode_event("jsonl", sale("000900", 100, shop.daemon.clock.now(), card="622576******0009")))
    wait_until(lambda: names["printer"].events == 1, "an event from the restarted printer line")


class ExhaustedInotify:
    def schedule(self, *args: Any, **kwargs: Any) -> None:
        raise OSError(errno.ENOSPC, "inotify watch limit reached")


def test_when_inotify_is_exhausted_the_watcher_falls_back_to_sighup_and_says_so(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "settleguard.toml"
    path.write_text("", encoding="utf-8")
    watcher = ConfigWatcher(path, lambda: None, observer_factory=ExhaustedInotify)
    with caplog.at_level(logging.WARNING, logger="settleguard.reload"):
        assert watcher.start() is False
    assert not watcher.active
    assert "SIGHUP" in caplog.text and "inotify" in caplog.text


class Recorder(FileSystemEventHandler):
    """A second handler on the watcher's own observer: events reach handlers in order, so once this one
    has seen ``marker``, the watcher has seen every event before it."""

    def __init__(self, marker: str) -> None:
        self.marker = marker
        self.sightings = 0

    def on_any_event(self, event: FileSystemEvent) -> None:
        if os.path.basename(os.fsdecode(event.src_path)) == self.marker:
            self.sightings += 1


def test_a_burst_of_saves_is_one_reload_after_the_debounce(tmp_path: Path) -> None:
    path = tmp_path / "settleguard.toml"
    path.write_text("a", encoding="utf-8")
    clock = ManualClock()
    fired: list[float] = []
    watcher = ConfigWatcher(path, lambda: fired.append(clock.monotonic()), debounce=0.5, clock=clock)
    assert watcher.start()
    try:
        recorder = Recorder("unrelated.txt")
        watcher.observer.schedule(recorder, str(tmp_path), recursive=False)
        for i in range(5):
            path.write_text(f"edit {i}", encoding="utf-8")
        (tmp_path / "unrelated.txt").write_text("x", encoding="utf-8")
        wait_until(lambda: recorder.sightings, "the observer to deliver the burst")
        assert watcher.pending and not fired, "nothing fires while the clock stands still"
        clock.advance(0.4)
        assert not watcher.fire_if_due() and not fired, "0.4 s after the last save is inside the debounce"
        clock.advance(0.1)
        wait_until(lambda: fired, "the reload once the debounce ran out")
        clock.advance(60)
        assert not watcher.fire_if_due()
        assert fired == [1000.5], "one reload, 0.5 s after the burst"
        seen = recorder.sightings
        (tmp_path / "unrelated.txt").write_text("y", encoding="utf-8")
        wait_until(lambda: recorder.sightings > seen, "the observer to deliver the unrelated change")
        assert not watcher.pending, "another file in the directory is not a configuration change"
    finally:
        watcher.stop()


def test_each_change_restarts_the_debounce(tmp_path: Path) -> None:
    path = tmp_path / "settleguard.toml"
    clock = ManualClock()
    fired: list[float] = []
    # Not started: no observer and no pacing thread, so every step below is the test's own.
    watcher = ConfigWatcher(path, lambda: fired.append(clock.monotonic()), debounce=0.5, clock=clock)
    watcher.poke()
    clock.advance(0.3)
    watcher.poke()
    clock.advance(0.3)
    assert not watcher.fire_if_due(), "0.3 s after the second change"
    clock.advance(0.2)
    assert watcher.fire_if_due()
    assert not watcher.fire_if_due() and not watcher.pending
    assert fired == [1000.8]
