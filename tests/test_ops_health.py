"""No thread dies quietly, and "healthy" means "still seeing" (issue 13: thread deaths, observation 3).

The daemon runs on a ManualClock with a pty terminal; each test injects a real failure into a
real part (a pipeline command that raises, a scheduler job that cannot be planned, a journal that
refuses writes, a control request the journal cannot store) and takes the watchdog rounds itself
with ``Daemon.notify_systemd()``, which returns the problems that held WATCHDOG=1 back.
"""

from __future__ import annotations

import socket
import sqlite3
import threading
from pathlib import Path

import pytest

from agent.messages import Command
from agent.schedule import PlannedJob
from agent.service.daemon import Daemon
from agent.service.sdnotify import SdNotify
from agent.service.threads import MAX_RESTARTS
from agent.sim.rig import new_secret
from agent.sim.terminal import PtyTerminal
from drivers.clock import ManualClock
from tests.helpers import NotifyListener, daemon_on_pty, jsonl_line_config, sale_line, wait_until


@pytest.fixture
def stepped_notify(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """systemd's socket; the daemon's own loop idles (a ping an hour), the test takes each round."""
    listener = NotifyListener(tmp_path / "notify.sock")
    monkeypatch.setenv("NOTIFY_SOCKET", str(listener.path))
    monkeypatch.setenv("WATCHDOG_USEC", str(2 * 3600 * 1_000_000))
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    yield listener
    listener.close()


def kill_pipeline(daemon: Daemon) -> None:
    """A bug in the pipeline thread itself raises there (KeyError: 'loaded').

    Injected in its after-commit housekeeping, once: an exception while handling one item (a bad command,
    a poison event) is that item's and can no longer kill the thread (agent/pipeline.py, ``_item``).
    """
    before = daemon.guards["pipeline"]
    pipeline = daemon.pipeline
    assert pipeline is not None
    original = pipeline._prune_if_due

    def broken() -> None:
        pipeline._prune_if_due = original  # type: ignore[method-assign]
        raise KeyError("loaded")

    pipeline._prune_if_due = broken  # type: ignore[method-assign]
    daemon.inbox.put(Command("baseline"))
    wait_until(lambda: before.dead, "the pipeline thread killed by the injected bug")


def test_a_pipeline_killed_by_an_exception_is_restarted_and_journals_again(
        tmp_path: Path, stepped_notify: NotifyListener) -> None:
    term = PtyTerminal()
    daemon = daemon_on_pty(tmp_path, term)
    try:
        kill_pipeline(daemon)
        since = stepped_notify.mark()
        # The health step restarts it (safe: its transaction rolled back, the rules reload from the journal).
        assert daemon.notify_systemd() == ()
        stepped_notify.wait_for("WATCHDOG=1", since=since)
        term.write(sale_line("000001"))
        assert daemon.pipeline is not None
        pipeline = daemon.pipeline
        wait_until(lambda: pipeline.counts["new_transactions"] == 1, "the sale journalled by the restarted pipeline")
        deaths = daemon.status()["threads"]["deaths"]
        assert [(d["thread"], d["restarted"]) for d in deaths] == [("pipeline", True)]
        assert deaths[0]["error"] == "KeyError: 'loaded'", "the cause is kept for doctor"
    finally:
        daemon.stop()
        term.close()


def test_a_thread_that_keeps_dying_is_reported_with_its_cause_and_the_watchdog_stops(
        tmp_path: Path, stepped_notify: NotifyListener) -> None:
    term = PtyTerminal()
    daemon = daemon_on_pty(tmp_path, term)
    try:
        for _ in range(MAX_RESTARTS):
            kill_pipeline(daemon)
            assert daemon.notify_systemd() == ()
        kill_pipeline(daemon)
        since = stepped_notify.mark()
        problems = daemon.notify_systemd()
        assert problems == ("thread pipeline died: KeyError: 'loaded'",)
        wait_until(lambda: any(line.startswith("STATUS=") for line in stepped_notify.lines(since)), "STATUS=")
        assert "WATCHDOG=1" not in stepped_notify.lines(since), "systemd must restart the service"
        assert daemon.status()["healthy"] is False
        assert daemon.status()["threads"]["given_up"] == ["pipeline"]
    finally:
        daemon.stop()
        term.close()


def test_a_scheduler_whose_every_step_fails_is_reported(tmp_path: Path, stepped_notify: NotifyListener) -> None:
    term = PtyTerminal()
    daemon = daemon_on_pty(tmp_path, term, use_scheduler=True)
    try:
        assert daemon.scheduler is not None
        scheduler = daemon.scheduler
        # A job whose trigger cannot be asked for its next firing: every step raises from here on.
        scheduler.jobs.append(PlannedJob("cutoff", None, 0))
        assert isinstance(daemon.clock, ManualClock)
        daemon.clock.advance(31)
        wait_until(lambda: scheduler.last_error is not None, "the scheduler step failing")
        problems = daemon.notify_systemd()
        assert len(problems) == 1 and problems[0].startswith("scheduler failing for 31s: AttributeError"), problems
    finally:
        daemon.stop()
        term.close()


def test_a_delivery_thread_whose_every_step_fails_is_reported(tmp_path: Path, stepped_notify: NotifyListener) -> None:
    """The delivery loop survives a failing step (it retries), but "retrying for ever" is not healthy."""
    term = PtyTerminal()
    # A channel, so that each step reads the outbox; nothing listens on that port and nothing is sent.
    channel = ('[[channel]]\nname = "hook"\ntype = "webhook"\nurl = "http://127.0.0.1:9/hook"\n'
               f'secret = "{new_secret()}"\n')
    daemon = daemon_on_pty(tmp_path, term, channel)
    try:
        delivery = daemon.delivery
        assert delivery is not None and isinstance(daemon.clock, ManualClock)
        # The outbox as an unreadable file: every step raises from here on. Raised by the outbox's first
        # read rather than by closing its connection under the delivery thread, which can crash the
        # interpreter (sqlite3 is not safe against a close racing a running statement).
        def unreadable(*args: object, **kwargs: object) -> None:
            raise sqlite3.ProgrammingError("Cannot operate on a closed database.")

        delivery.outbox.pending = unreadable  # type: ignore[method-assign]
        delivery.wake.set()
        wait_until(lambda: delivery.last_error is not None, "the delivery step failing")
        assert daemon.notify_systemd() == (), "one failed step is a retry, not a problem yet"
        daemon.clock.advance(31)
        moved_on = daemon.clock.monotonic()
        # The other threads show progress on their next idle round; the failing delivery never does.
        threads = [daemon.pipeline, delivery, *(r.supervisor for r in daemon.sources)]
        wait_until(lambda: all(t.last_progress >= moved_on for t in threads), "every thread's next round")
        problems = daemon.notify_systemd()
        assert len(problems) == 1 and problems[0].startswith("delivery failing for 31s: ProgrammingError"), problems
    finally:
        daemon.stop()
        term.close()


def test_sd_notify_never_blocks_on_a_socket_nobody_reads(tmp_path: Path) -> None:
    """Today's stop() hung on STOPPING=1 once the unread socket's queue was full."""
    path = tmp_path / "unread.sock"
    unread = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    unread.bind(str(path))
    notify = SdNotify(str(path))
    done = threading.Event()

    def flood() -> None:
        for _ in range(5000):
            notify.status("x" * 200)
        notify.stopping()
        done.set()

    sender = threading.Thread(target=flood, daemon=True)
    sender.start()
    try:
        wait_until(done.is_set, "5000 datagrams sent or dropped without blocking")
        assert notify.dropped > 0, "the socket's queue filled up: the test reached the blocking case"
    finally:
        unread.close()
        notify.close()


def test_stop_returns_when_nothing_reads_notify_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "unread.sock"
    unread = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    unread.bind(str(path))
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    monkeypatch.setenv("WATCHDOG_USEC", str(2 * 3600 * 1_000_000))
    term = PtyTerminal()
    daemon = daemon_on_pty(tmp_path, term)
    stopped = threading.Event()
    try:
        for _ in range(3000):   # what months of STATUS= rounds do to a socket systemd stopped reading
            daemon.notify.status("x" * 200)
        stopper = threading.Thread(target=lambda: (daemon.stop(), stopped.set()), daemon=True)
        stopper.start()
        wait_until(stopped.is_set, "stop() returning", timeout=30)
    finally:
        unread.close()
        term.close()


def test_doctor_names_the_dead_thread_and_whether_the_file_on_disk_is_what_runs(
        tmp_path: Path, stepped_notify: NotifyListener) -> None:
    from datetime import datetime

    from agent.config import load_config
    from agent.service.doctor import run_checks
    from tests.helpers import SHANGHAI

    term = PtyTerminal()
    path = tmp_path / "settleguard.toml"
    path.write_text(jsonl_line_config("医生店", term.device), encoding="utf-8")
    clock = ManualClock(datetime(2026, 11, 27, 14, 0, tzinfo=SHANGHAI))
    daemon = Daemon(load_config(path), tmp_path / "state", clock=clock, use_scheduler=False, watch_config=False)
    daemon.start()
    try:
        by_name = {c.name: c for c in run_checks(path, tmp_path / "state", clock=clock)}
        assert by_name["threads"].status == "ok" and by_name["running config"].status == "ok"
        for _ in range(MAX_RESTARTS + 1):
            kill_pipeline(daemon)
            daemon.notify_systemd()
        path.write_text(jsonl_line_config("医生店", term.device, '\n[settlement]\nreview_lead = "999999d"\n'),
                        encoding="utf-8")
        assert daemon.reload() is False
        by_name = {c.name: c for c in run_checks(path, tmp_path / "state", clock=clock)}
        assert by_name["threads"].status == "fail"
        assert "pipeline: KeyError: 'loaded'" in by_name["threads"].detail
        assert by_name["daemon"].status == "fail" and "thread pipeline died" in by_name["daemon"].detail
        assert by_name["running config"].status == "warn"
        assert by_name["last reload"].status == "fail" and "review_lead" in by_name["last reload"].detail
    finally:
        daemon.stop()
        term.close()
