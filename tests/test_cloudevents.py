"""Notices about no alert (heartbeat, review, all-clear, the till's events) as CloudEvents of their own.

The contract issue 19 builds on: agent/delivery/cloudevents.py names the types and NATS subject kinds,
Announcer.to_machines puts them in the outbox for machine channels only, the delivery loop carries
their ``data`` through to a real webhook on 127.0.0.1.
"""

from __future__ import annotations

import random
from datetime import datetime
from pathlib import Path

import pytest

from agent.alerts.lifecycle import NoticeKind
from agent.config import DeliveryConfig
from agent.delivery.channels.base import Notice
from agent.delivery.channels.http import HttpxSender
from agent.delivery.channels.webhook import WebhookChannel
from agent.delivery.cloudevents import cloudevent, event_type, refuse, subject_kind
from agent.delivery.loop import Delivery
from agent.sim.sink import WebhookSink
from agent.store.outbox import Outbox
from tests.helpers import SHANGHAI, Harness

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SIM = 10**9
NOW = datetime(2026, 11, 27, 14, 0, tzinfo=SHANGHAI)


def notice(kind: NoticeKind, data: dict | None = None, alerts: tuple = ()) -> Notice:
    return Notice(kind=kind, alerts=alerts, shop="测试店", source="settleguard://test/t1", created=NOW, data=data)


def test_types_and_subject_kinds() -> None:
    assert event_type(notice(NoticeKind.HEARTBEAT, {"version": "x"})) == "settleguard.heartbeat"
    assert subject_kind(notice(NoticeKind.HEARTBEAT, {})) == "heartbeat"
    assert subject_kind(notice(NoticeKind.REVIEW, {})) == "review"
    assert subject_kind(notice(NoticeKind.EVENT, {"type": "transaction"})) == "transaction"
    assert subject_kind(notice(NoticeKind.OPENED, alerts=({"id": "a"},))) == "alert"
    assert subject_kind(notice(NoticeKind.ESCALATED, alerts=({"id": "a"},))) == "alert"
    # people-only kinds and an event without a safe type word have no CloudEvent
    assert event_type(notice(NoticeKind.DIGEST, alerts=({"id": "a"}, {"id": "b"}))) is None
    assert event_type(notice(NoticeKind.EVENT, {"type": "Bad.Type"})) is None
    assert refuse(notice(NoticeKind.HEARTBEAT)) is not None          # no data
    with pytest.raises(ValueError, match="for people"):
        cloudevent(notice(NoticeKind.DEVICE, {"x": 1}), "m1")


def test_heartbeat_and_event_reach_a_webhook_as_their_own_cloudevents(tmp_path: Path) -> None:
    sink = WebhookSink(tolerance=SIM, secret=SECRET).start()
    try:
        h = Harness(tmp_path, channels=("hook",))
        ann = h.pipeline.announcer
        ann.route(["hook"], [], event_channels=["hook"])
        with h.journal.transaction():
            ann.to_machines(NoticeKind.HEARTBEAT, {"version": "1.0", "open_alerts": 0}, h.clock.now(),
                            message_id="heartbeat.t1.1")
            ann.to_machines(NoticeKind.EVENT, {"type": "transaction", "key": "k1", "amount_minor": 6800},
                            h.clock.now(), message_id="event.k1")
        ann.take()
        channel = WebhookChannel("hook", url=sink.url, secrets=[SECRET], timeout=2.0)
        d = Delivery(Outbox(tmp_path / "settleguard.sqlite3"), [channel], HttpxSender(timeout=2.0),
                     clock=h.clock, config=DeliveryConfig(), shop="测试店", source="settleguard://test/t1",
                     rng=random.Random(1))
        d.step()
        d.step()
        got = [(r.body["type"], r.webhook_id, r.body["data"]) for r in sink.received]
        # Every machine notice's data names its shop and till (from the source; issue 19).
        ids = {"shop_id": "test", "till_id": "t1"}
        assert got == [("settleguard.heartbeat", "heartbeat.t1.1", {"version": "1.0", "open_alerts": 0, **ids}),
                       ("settleguard.transaction", "event.k1",
                        {"type": "transaction", "key": "k1", "amount_minor": 6800, **ids})]
        assert sink.received[1].body["subject"] == "k1"
        assert sink.rejected == 0
    finally:
        sink.stop()


def test_till_events_go_only_to_channels_that_asked_and_never_to_people(tmp_path: Path) -> None:
    h = Harness(tmp_path, channels=("hook", "robot"))
    ann = h.pipeline.announcer
    ann.route(["hook", "robot"], ["robot"], event_channels=[])
    with h.journal.transaction():
        ann.to_machines(NoticeKind.EVENT, {"type": "order", "key": "o1"}, h.clock.now(), message_id="event.o1")
        ann.to_machines(NoticeKind.REVIEW, {"open": 0}, h.clock.now(), message_id="review.1")
    ann.take()
    outbox = Outbox(tmp_path / "settleguard.sqlite3")
    assert [r.message_id for r in outbox.pending("hook")] == ["review.1"]
    assert outbox.pending("robot") == []
    with pytest.raises(ValueError, match="not a till notice"):
        ann.to_machines(NoticeKind.OPENED, {}, h.clock.now(), message_id="x")
