"""Delivery to a machine webhook through every fault a real network offers, on a real server on 127.0.0.1.

Whatever happens (429 with Retry-After, 5xx, a reset mid-response, a receiver
slower than our timeout, a receiver that is down for a while, a daemon killed
between "sent" and "marked sent"), every alert revision arrives, in order,
and a receiver deduplicating on ``webhook-id`` sees each exactly once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest

from agent.cli import main as cli_main
from agent.delivery.channels.webhook import WebhookChannel, verify
from agent.messages import Command
from agent.store.outbox import Outbox
from drivers.clock import SYSTEM_CLOCK
from drivers.events import event_to_json
from tests.helpers import SHANGHAI, Harness, sale, wait_until
from tests.test_delivery_servers import (
    Action,
    Reply,
    Reset,
    ScriptedServer,
    close_all,
    drain,
    make_delivery,
    states,
)


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    close_all()


SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def at(hh: int, mm: int, ss: int = 0) -> datetime:
    return datetime(2026, 11, 27, hh, mm, ss, tzinfo=SHANGHAI)


def hook(server: ScriptedServer, name: str = "hook", timeout: float = 2.0) -> WebhookChannel:
    return WebhookChannel(name, url=server.url, secrets=[SECRET], timeout=timeout)


def three_findings_and_a_void(h: Harness) -> None:
    h.feed(sale("000122", 12800, at(14, 3)), sale("000123", 12800, at(14, 4)))
    h.feed(sale("000200", 5000, at(15, 0), card="436742******1234"),
           sale("000201", 5000, at(15, 1), card="436742******1234"))
    h.feed(sale("000300", 990, at(15, 30), card="621700******0005"),
           sale("000301", 990, at(15, 31), card="621700******0005"))
    h.feed(sale("000124", 12800, at(15, 40), kind="void", original="000123"))


def revisions_in_order(d_outbox: Outbox, channel: str = "hook") -> list[str]:
    rows = d_outbox.conn.execute("SELECT message_id FROM outbox WHERE channel=? ORDER BY id", (channel,))
    return [r[0] for r in rows.fetchall()]


def assert_signed(server: ScriptedServer) -> None:
    for hit in server.hits:
        assert hit.at is not None
        verify(hit.headers, hit.body, [SECRET], hit.at, tolerance=5)


def test_every_revision_arrives_in_order_through_429_5xx_reset_and_timeout(tmp_path: Path) -> None:
    script: dict[int, Action] = {1: Reply(429, headers=(("Retry-After", "7"),)), 2: Reply(503), 3: Reset(),
              4: Reply(204, delay=0.6), 5: Reply(500)}
    h = Harness(tmp_path, channels=("hook",))
    server = ScriptedServer(lambda n: script.get(n, Reply(204)), clock=h.clock).start()
    try:
        d = make_delivery(tmp_path, h, [hook(server, timeout=0.3)], timeout=0.3)
        three_findings_and_a_void(h)
        drain(h, d)
        expected = revisions_in_order(d.outbox)
        assert len(expected) == 4 and expected[-1].endswith(".2")   # three openings, then the void
        assert [hit.webhook_id for hit in server.unique()] == expected
        # The receiver got the timed-out request too; only dedup on webhook-id keeps it to once.
        assert len(server.hits) > len(expected)
        assert server.hits[3].webhook_id == server.hits[4].webhook_id
        assert server.hits[1].at is not None and server.hits[0].at is not None
        assert server.hits[1].at - server.hits[0].at >= timedelta(seconds=7)   # Retry-After is a floor
        assert states(d) == ["sent"] * 4
        assert_signed(server)
    finally:
        server.stop()


def test_retry_after_as_an_http_date_is_honoured_as_a_minimum(tmp_path: Path) -> None:
    h = Harness(tmp_path, channels=("hook",))

    def script(n: int) -> Reply:
        if n == 1:
            later = format_datetime(h.clock.now().astimezone(UTC) + timedelta(minutes=2), usegmt=True)
            return Reply(503, headers=(("Retry-After", later),))
        return Reply(204)

    server = ScriptedServer(script, clock=h.clock).start()
    try:
        d = make_delivery(tmp_path, h, [hook(server)])
        h.feed(sale("000122", 12800, at(14, 3)), sale("000123", 12800, at(14, 4)))
        drain(h, d)
        assert len(server.hits) == 2
        assert server.hits[0].at is not None and server.hits[1].at is not None
        assert server.hits[1].at - server.hits[0].at >= timedelta(seconds=119)
    finally:
        server.stop()


def test_a_receiver_down_for_a_while_gets_everything_in_order_even_across_a_restart(tmp_path: Path) -> None:
    h = Harness(tmp_path, channels=("hook",))
    probe = ScriptedServer().start()
    port = probe.port
    probe.stop()                                             # nothing listens: connection refused
    d = make_delivery(tmp_path, h, [hook(probe)])
    three_findings_and_a_void(h)
    drain(h, d, until=h.clock.now() + timedelta(minutes=10))
    attempts = [r[0] for r in d.outbox.conn.execute("SELECT attempts FROM outbox ORDER BY id")]
    assert attempts[0] > 3 and all(a == 0 for a in attempts[1:])   # the head holds the rest back
    assert states(d) == ["pending"] * 4
    d.outbox.close()                                         # the daemon restarts: pending rows survive it
    back = ScriptedServer(clock=h.clock, port=port).start()
    try:
        d2 = make_delivery(tmp_path, h, [hook(back)])
        assert d2.outbox.recover() == 0
        drain(h, d2)
        assert [hit.webhook_id for hit in back.unique()] == revisions_in_order(d2.outbox)
        assert len(back.hits) == 4
    finally:
        back.stop()


def test_past_its_deadline_a_message_falls_back_to_the_next_channel_instead_of_being_dropped(
        tmp_path: Path) -> None:
    h = Harness(tmp_path, channels=("hook",))               # the backup gets only what the hook gives up
    broken = ScriptedServer(lambda n: Reply(503), clock=h.clock).start()
    backup = ScriptedServer(clock=h.clock).start()
    try:
        d = make_delivery(tmp_path, h, [hook(broken), hook(backup, "backup")])
        h.feed(sale("000122", 12800, at(22, 40)), sale("000123", 12800, at(22, 41)))
        drain(h, d, until=at(22, 59))
        assert len(broken.hits) > 3 and backup.hits == []    # before the 23:00 cutoff: keep retrying
        drain(h, d, until=at(23, 10))
        assert [hit.webhook_id for hit in backup.hits] == [broken.hits[0].webhook_id]
        assert backup.hits[0].at is not None and backup.hits[0].at - at(23, 0) < timedelta(seconds=1)
        assert states(d, "hook") == ["rerouted"] and states(d, "backup") == ["sent"]
        assert d.outbox.outbox_stats(h.clock.now())["dead"] == 0
    finally:
        broken.stop()
        backup.stop()


def test_with_no_channel_left_a_late_message_keeps_retrying_rather_than_being_dropped(tmp_path: Path) -> None:
    h = Harness(tmp_path, channels=("hook",))
    broken = ScriptedServer(lambda n: Reply(503) if h.clock.now() < at(23, 5) else Reply(204),
                            clock=h.clock).start()
    try:
        d = make_delivery(tmp_path, h, [hook(broken)])
        h.feed(sale("000122", 12800, at(22, 50)), sale("000123", 12800, at(22, 51)))
        drain(h, d)
        assert states(d) == ["sent"] and len(broken.hits) > 5
        assert broken.hits[-1].at is not None and broken.hits[-1].at >= at(23, 5)
    finally:
        broken.stop()


def test_a_refused_message_shows_as_a_dead_letter_in_settleguard_alerts(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    h = Harness(tmp_path, channels=("hook",))
    server = ScriptedServer(lambda n: Reply(410, b"gone"), clock=h.clock).start()
    try:
        d = make_delivery(tmp_path, h, [hook(server)])
        h.feed(sale("000122", 12800, at(14, 3)), sale("000123", 12800, at(14, 4)))
        drain(h, d)
        assert len(server.hits) == 1 and states(d) == ["dead"]     # a 4xx is not retried ...
        assert "410" in d.outbox.dead_letters()[0]["last_error"]
        d.outbox.close()
        h.journal.close()
        assert cli_main(["alerts", "--state", str(tmp_path)]) == 0  # ... and not silently lost either
        assert "1 message(s) could not be delivered" in capsys.readouterr().out
    finally:
        server.stop()


def test_an_acknowledgement_after_the_opening_goes_out_as_the_next_revision(tmp_path: Path) -> None:
    h = Harness(tmp_path, channels=("hook",))
    server = ScriptedServer(clock=h.clock).start()
    try:
        d = make_delivery(tmp_path, h, [hook(server)])
        h.feed(sale("000122", 12800, at(14, 3)), sale("000123", 12800, at(14, 4)))
        alert = h.opened()[0].alert
        h.pipeline.process([Command("ack", {"id": alert.id, "answer": "legit", "by": "店长", "note": "genuine"})])
        drain(h, d)
        bodies = [hit.json() for hit in server.hits]
        assert [b["type"] for b in bodies] == ["settleguard.alert.opened", "settleguard.alert.dismissed"]
        assert [(b["data"]["id"], b["data"]["revision"]) for b in bodies] == [(alert.id, 1), (alert.id, 2)]
        assert [hit.webhook_id for hit in server.hits] == [f"{alert.id}.1", f"{alert.id}.2"]
    finally:
        server.stop()


# -- the real daemon, killed between "sent" and "marked sent" ----------------------------------------

RUN_CONFIG = """
[shop]
name = "重启测试店"
till = "t1"
timezone = "Asia/Shanghai"

[[source]]
name = "terminal"
protocol = "jsonl"
file = "{capture}"

[[channel]]
name = "hook"
type = "webhook"
url = "{url}"
secret = "{secret}"

[delivery]
timeout = "20s"
"""


def start_daemon(config: Path, state: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    # The log goes to a file next to the state: it is what to read when this test fails.
    with open(state.parent / "daemon.log", "ab") as log:
        return subprocess.Popen([sys.executable, "-m", "agent.cli", "run", "--config", str(config), "--state",
                                 str(state), "--log-level", "WARNING"], stdout=subprocess.DEVNULL, stderr=log,
                                env=env)


def test_a_daemon_killed_before_marking_sent_sends_again_after_restart_with_the_same_webhook_id(
        tmp_path: Path) -> None:
    now = datetime.now(SHANGHAI).replace(microsecond=0) - timedelta(minutes=5)
    capture = tmp_path / "capture.jsonl"
    capture.write_text("".join(event_to_json(ev) + "\n" for ev in (
        sale("000122", 12800, now), sale("000123", 12800, now + timedelta(minutes=1)),
        sale("000200", 5000, now + timedelta(minutes=2), card="436742******1234"),
        sale("000201", 5000, now + timedelta(minutes=3), card="436742******1234"))), encoding="utf-8")
    release = threading.Event()
    server = ScriptedServer(lambda n: Reply(204, hold=release) if n == 1 else Reply(204),
                            clock=SYSTEM_CLOCK).start()
    config = tmp_path / "settleguard.toml"
    config.write_text(RUN_CONFIG.format(capture=capture, url=server.url, secret=SECRET), encoding="utf-8")
    state = tmp_path / "state"
    first = start_daemon(config, state)
    second: subprocess.Popen[bytes] | None = None
    try:
        server.wait_for(1, "the daemon's first request", timeout=20)
        first.send_signal(signal.SIGKILL)                    # the receiver holds the request: not marked sent
        first.wait(10)
        release.set()
        conn_rows = Outbox(state / "settleguard.sqlite3")
        assert [r[0] for r in conn_rows.conn.execute("SELECT state FROM outbox ORDER BY id")] == [
            "sending", "pending"]
        conn_rows.close()
        second = start_daemon(config, state)
        server.wait_for(3, "the interrupted request sent again after the restart", timeout=20)
        def outbox_states() -> list[str]:
            outbox = Outbox(state / "settleguard.sqlite3")
            states = [r[0] for r in outbox.conn.execute("SELECT state FROM outbox ORDER BY id")]
            outbox.close()
            return states

        wait_until(lambda: outbox_states() == ["sent", "sent"], "both alerts marked sent",
                   detail=lambda: outbox_states())
        second.send_signal(signal.SIGTERM)
        assert second.wait(15) == 0
    finally:
        release.set()
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(5)
        server.stop()
    ids = [hit.webhook_id for hit in server.hits]
    assert len(ids) == 3 and ids[0] == ids[1] != ids[2]      # the interrupted one twice, same id
    assert [hit.webhook_id for hit in server.unique()] == [ids[0], ids[2]]
    assert [hit.json()["data"]["transactions"][-1]["voucher_no"] for hit in server.unique()] == [
        "000123", "000201"]
    for hit in server.hits:
        verify(hit.headers, hit.body, [SECRET], datetime.now(UTC), tolerance=120)
    assert json.loads(server.hits[0].body) == json.loads(server.hits[1].body)
