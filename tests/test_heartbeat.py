"""Heartbeats, reviews and all-clears to machine channels (issue 19), at a real local webhook.

A daemon on a pty with ``heartbeat = "5m"`` on its webhook: a ``settleguard.heartbeat`` CloudEvent at
start-up and then every 5 minutes of the shop's (simulated) clock; while the endpoint is down only the
newest unsent heartbeat survives; the pre-close review and the all-clear arrive as their own events.
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from agent.alerts.lifecycle import NoticeKind
from agent.config import ConfigError, DeliveryConfig, parse_config
from agent.delivery.channels.http import HttpxSender
from agent.delivery.channels.webhook import WebhookChannel
from agent.delivery.loop import Delivery
from agent.service.daemon import Daemon
from agent.sim.sink import Received, WebhookSink
from agent.sim.terminal import PtyTerminal, encode_event
from agent.store.outbox import Outbox
from drivers.clock import ManualClock
from tests.helpers import SHANGHAI, Harness, committed_alerts, sale, wait_until

START = datetime(2026, 11, 27, 14, 0, tzinfo=SHANGHAI)

CONFIG = """
[shop]
name = "好味道餐饮 静安店"
till = "收银台 1"
id = "haowei-jingan"
till_id = "till-1"
timezone = "Asia/Shanghai"

[settlement]
cutoff = "23:00"
review_times = ["16:00"]

[[source]]
name = "terminal"
protocol = "jsonl"
port = "{device}"

[[channel]]
name = "hq"
type = "webhook"
url = "{url}"
heartbeat = "5m"
"""

HEARTBEAT_KEYS = {"shop_id", "till_id", "shop", "till", "version", "started", "at", "interval_s", "healthy",
                  "problems", "sources", "open_alerts", "next_cutoff", "outbox", "journal"}


def beats(sink: WebhookSink) -> list[dict[str, Any]]:
    return [r.body["data"] for r in list(sink.received) if r.body["type"] == "settleguard.heartbeat"]


class Till:
    def __init__(self, tmp: Path, sink: WebhookSink) -> None:
        self.term = PtyTerminal()
        self.clock = ManualClock(START)
        self.loaded = parse_config(CONFIG.format(device=self.term.device, url=sink.url))
        # stuck_after: the test jumps the clock by minutes at once; no thread is stuck for that.
        self.daemon = Daemon(self.loaded, tmp / "state", clock=self.clock, stuck_after=1e9)

    def __enter__(self) -> Till:
        self.daemon.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.daemon.stop()
        self.term.close()

    def advance(self, delta: timedelta) -> None:
        """Minute by minute, as a running till's clock goes (the scheduler looks once a real second); each
        minute's commands are handled before the clock moves on (a round trip through the FIFO inbox)."""
        assert self.daemon.scheduler is not None
        for _ in range(int(delta.total_seconds() // 60)):
            self.clock.advance(60)
            self.daemon.scheduler.run_due()
            self.daemon.command("tick")


def test_heartbeats_arrive_at_start_and_every_interval(tmp_path: Path) -> None:
    sink = WebhookSink().start()
    try:
        with Till(tmp_path, sink) as till:
            wait_until(lambda: len(beats(sink)) == 1, "the start-up heartbeat")
            at = till.clock.now() - timedelta(minutes=1)
            till.term.write(encode_event("jsonl", sale("000001", 12800, at)))
            wait_until(lambda: till.daemon.pipeline and till.daemon.pipeline.counts["new_transactions"] == 1,
                       "the sale journaled")
            till.advance(timedelta(minutes=5))
            wait_until(lambda: len(beats(sink)) == 2, "the heartbeat 5 minutes later")
            till.advance(timedelta(minutes=4))
            assert len(beats(sink)) == 2, "nothing before the next interval"
            till.advance(timedelta(minutes=1))
            wait_until(lambda: len(beats(sink)) == 3, "the heartbeat 10 minutes after start")
    finally:
        sink.stop()
    first, second, third = beats(sink)
    assert set(first) == HEARTBEAT_KEYS
    assert [b["at"] for b in (first, second, third)] == [
        START.isoformat(), (START + timedelta(minutes=5)).isoformat(), (START + timedelta(minutes=10)).isoformat()]
    assert (first["shop_id"], first["till_id"], first["shop"], first["till"]) == (
        "haowei-jingan", "till-1", "好味道餐饮 静安店", "收银台 1")
    assert first["interval_s"] == 300 and first["started"] == START.isoformat() and first["healthy"] is True
    assert first["next_cutoff"] == START.replace(hour=23).isoformat()
    assert first["journal"]["ok"] is True and first["journal"]["schema"] >= 5 and first["journal"]["size_bytes"] > 0
    (src,) = second["sources"]
    assert (src["name"], src["protocol"], src["state"]) == ("terminal", "jsonl", "ok")
    assert src["last_byte"] is not None and src["last_event"] is not None
    assert set(second["outbox"]) == {"pending", "dead", "oldest_pending"} and second["outbox"]["dead"] == 0
    ids = [r.webhook_id for r in sink.received if r.body["type"] == "settleguard.heartbeat"]
    assert ids == ["heartbeat.haowei-jingan.till-1.20261127T140000", "heartbeat.haowei-jingan.till-1.20261127T140500",
                   "heartbeat.haowei-jingan.till-1.20261127T141000"]
    assert all(r.body["source"] == "settleguard://haowei-jingan/till-1" for r in sink.received)


def test_an_endpoint_down_for_hours_gets_only_the_newest_heartbeat(tmp_path: Path) -> None:
    down = threading.Event()
    down.set()
    sink = WebhookSink(fault=lambda n: (503, {}) if down.is_set() else None).start()
    try:
        with Till(tmp_path, sink) as till:
            delivery = till.daemon.delivery
            wait_until(lambda: sink.requests >= 1, "the start-up heartbeat tried")
            till.advance(timedelta(hours=2))    # 24 heartbeats due while the endpoint refuses
            wait_until(lambda: delivery.superseded_count == 24, "older heartbeats superseded",
                       detail=lambda: delivery.superseded_count)
            down.clear()
            till.clock.advance(60)              # past the newest one's retry backoff (a try or two: seconds)
            wait_until(lambda: beats(sink), "the newest heartbeat once the endpoint is back")
            stats = delivery.outbox.conn.execute(
                "SELECT state, COUNT(*) FROM outbox WHERE kind='heartbeat' GROUP BY state").fetchall()
    finally:
        sink.stop()
    (only,) = beats(sink)
    assert only["at"] == (START + timedelta(hours=2)).isoformat()
    assert dict(stats) == {"sent": 1, "superseded": 24}


def test_superseding_keeps_the_newest_heartbeat_and_leaves_other_rows_alone(tmp_path: Path) -> None:
    sink = WebhookSink().start()
    try:
        h = Harness(tmp_path, parse_config(CONFIG.format(device="/dev/null", url=sink.url)), channels=("hq",))
        h.pipeline.announcer.route(["hq"], [])     # a machine channel, as the daemon routes a webhook
        for _ in range(3):
            assert h.command("heartbeat", channel="hq") == {"ok": True, "sent": 1}
            with h.journal.transaction():
                h.pipeline.announcer.to_machines(NoticeKind.ALL_CLEAR, {"n": _}, h.clock.now(),
                                                 message_id=f"all_clear.{_}")
            h.pipeline.announcer.take()
            h.clock.advance(300)
        d = Delivery(Outbox(tmp_path / "settleguard.sqlite3"), [WebhookChannel("hq", url=sink.url, timeout=2.0)],
                     HttpxSender(timeout=2.0), clock=h.clock, config=DeliveryConfig(), shop="x",
                     source="settleguard://haowei-jingan/till-1")
        for _ in range(6):
            d.step()
    finally:
        sink.stop()
    kinds = [(r.body["type"], r.webhook_id) for r in sink.received]
    assert kinds == [("settleguard.all_clear", "all_clear.0"), ("settleguard.all_clear", "all_clear.1"),
                     ("settleguard.heartbeat", "heartbeat.haowei-jingan.till-1.20261127T091000"),
                     ("settleguard.all_clear", "all_clear.2")]
    assert d.superseded_count == 2


def test_heartbeat_is_refused_on_a_channel_people_read() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config('[[channel]]\nname = "group"\ntype = "wecom"\nkey = "k"\nheartbeat = "5m"\n')
    assert "heartbeat is for machine channels" in str(err.value) and "line 1" in str(err.value)
    with pytest.raises(ConfigError) as err:
        parse_config('[[channel]]\nname = "hq"\ntype = "webhook"\nurl = "http://x/y"\nheartbeat = "1s"\n')
    assert "channel[0] (hq).heartbeat: must be between 10s and 1d" in str(err.value)


# -- reviews and all-clears to machines --------------------------------------------------------------


def reviews(sink: WebhookSink) -> list[Received]:
    return [r for r in list(sink.received) if r.body["type"] in ("settleguard.review", "settleguard.all_clear")]


def test_the_review_and_the_all_clear_reach_the_webhook_as_events(tmp_path: Path) -> None:
    sink = WebhookSink().start()
    try:
        with Till(tmp_path, sink) as till:
            pipeline = till.daemon.pipeline
            assert pipeline is not None
            till.advance(timedelta(hours=2))           # 16:00: the review, nothing open
            wait_until(lambda: len(reviews(sink)) == 1, "the all-clear at 16:00")
            first = till.clock.now() - timedelta(minutes=3)
            for voucher, at in (("000122", first), ("000123", first + timedelta(minutes=1))):
                till.term.write(encode_event("jsonl", sale(voucher, 12800, at)))
            wait_until(lambda: committed_alerts(till.daemon) == 1, "the DUP-001 alert")
            till.daemon.command("review")               # by hand, as `settleguard review` does
            wait_until(lambda: len(reviews(sink)) == 2, "the review with the open finding")
            alert_ids = [r.body["data"]["id"] for r in sink.received if r.body["type"] == "settleguard.alert.opened"]
    finally:
        sink.stop()
    clear, review = reviews(sink)
    assert clear.body["type"] == "settleguard.all_clear"
    assert clear.webhook_id == "all_clear.haowei-jingan.till-1.20261127T160000"
    assert clear.body["data"] == {"shop_id": "haowei-jingan", "till_id": "till-1",
                                  "at": START.replace(hour=16).isoformat(),
                                  "cutoff": START.replace(hour=23).isoformat(),
                                  "batch": {"count": 0, "total_minor": 0, "currency": "CNY"},
                                  "open": [], "unchecked": 0}
    assert review.body["type"] == "settleguard.review"
    data = review.body["data"]
    assert data["open"] == alert_ids and len(alert_ids) == 1
    assert data["batch"] == {"count": 2, "total_minor": 25600, "currency": "CNY"}
    assert (data["shop_id"], data["till_id"], data["unchecked"]) == ("haowei-jingan", "till-1", 0)


def test_a_changed_heartbeat_reschedules_and_reconfigures_on_reload() -> None:
    from agent.service.reload import plan_reload

    before = parse_config(CONFIG.format(device="/dev/null", url="http://127.0.0.1:9/h"))
    after = parse_config(CONFIG.format(device="/dev/null", url="http://127.0.0.1:9/h").replace('"5m"', '"1m"'))
    plan = plan_reload(before, after)
    assert plan.schedule and plan.pipeline and plan.delivery
    assert not plan_reload(before, before).schedule
