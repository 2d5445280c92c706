"""Delivery against a real HTTP server on 127.0.0.1: signed, retried, in order, deduplicable."""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from pathlib import Path

from agent.config import DeliveryConfig
from agent.delivery.channels.http import HttpxSender
from agent.delivery.channels.webhook import WebhookChannel
from agent.delivery.loop import Delivery, retry_delay
from agent.sim.sink import WebhookSink
from agent.store.outbox import Outbox
from tests.helpers import SHANGHAI, Harness, sale

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SIM = 10**9  # simulated time runs on another day than the sink's wall clock: skip the age check


def at(hh: int, mm: int, ss: int = 0) -> datetime:
    return datetime(2026, 11, 27, hh, mm, ss, tzinfo=SHANGHAI)


def make(tmp_path: Path, sink: WebhookSink, start: datetime | None = None) -> tuple[Harness, Delivery]:
    h = Harness(tmp_path, channels=("hook",), start=start)
    channel = WebhookChannel("hook", url=sink.url, secrets=[SECRET], timeout=2.0)
    outbox = Outbox(tmp_path / "settleguard.sqlite3")
    d = Delivery(outbox, [channel], HttpxSender(timeout=2.0), clock=h.clock, config=DeliveryConfig(),
                 shop="测试店", source="settleguard://test/t1", rng=random.Random(1))
    return h, d


def drain(h: Harness, d: Delivery, *, steps: int = 50) -> None:
    """Run delivery steps, jumping simulated time to the next due row (no sleeping)."""
    for _ in range(steps):
        wait = d.step()
        if d.outbox.next_due() is None:
            return
        h.clock.advance(max(wait, 0.001))


def two_duplicates(h: Harness) -> None:
    h.feed(sale("000122", 12800, at(14, 3)), sale("000123", 12800, at(14, 4)))
    h.feed(sale("000200", 5000, at(15, 0), card="436742******1234"),
           sale("000201", 5000, at(15, 1), card="436742******1234"))


def test_alert_arrives_signed_at_a_local_webhook(tmp_path: Path) -> None:
    sink = WebhookSink(tolerance=SIM, secret=SECRET).start()
    try:
        h, d = make(tmp_path, sink)
        two_duplicates(h)
        drain(h, d)
        assert [r.body["data"]["rule"] for r in sink.received] == ["DUP-001", "DUP-001"]
        first = sink.received[0]
        assert first.body["type"] == "settleguard.alert.opened"
        assert first.body["specversion"] == "1.0"
        assert first.webhook_id == f"{first.body['data']['id']}.1"
        assert sink.rejected == 0
    finally:
        sink.stop()


def test_5xx_and_429_are_retried_until_acknowledged_and_order_is_kept(tmp_path: Path) -> None:
    script = {1: (500, {}), 2: (429, {"Retry-After": "7"}), 3: (503, {})}
    sink = WebhookSink(tolerance=SIM, secret=SECRET, fault=lambda n: script.get(n)).start()
    try:
        h, d = make(tmp_path, sink)
        two_duplicates(h)
        drain(h, d)
        assert sink.requests == 5
        ids = [r.webhook_id for r in sink.received]
        opened = [c.alert.id + ".1" for c in h.opened()]
        assert ids == opened  # in order, each exactly once after dedup
        assert d.outbox.outbox_stats(h.clock.now())["pending"] == 0
    finally:
        sink.stop()


def test_webhook_id_is_stable_across_retries(tmp_path: Path) -> None:
    seen: list[str] = []
    sink = WebhookSink(tolerance=SIM, secret=SECRET)

    def fault(n: int) -> tuple[int, dict[str, str]] | None:
        return (502, {}) if n <= 2 else None

    sink.fault = fault
    sink.start()
    try:
        h, d = make(tmp_path, sink)
        h.feed(sale("000122", 12800, at(14, 3)), sale("000123", 12800, at(14, 4)))
        original_post = d.sender.post

        def spy(request):  # type: ignore[no-untyped-def]
            seen.append(request.headers["webhook-id"])
            return original_post(request)

        d.sender.post = spy  # type: ignore[method-assign]
        drain(h, d)
        assert len(seen) == 3 and len(set(seen)) == 1
    finally:
        sink.stop()


def test_a_receiver_that_is_down_gets_everything_once_it_is_back(tmp_path: Path) -> None:
    sink = WebhookSink(tolerance=SIM, secret=SECRET).start()
    port = sink.port
    sink.stop()  # nothing listens: connection refused
    h, d = make(tmp_path, sink)
    two_duplicates(h)
    for _ in range(3):
        h.clock.advance(seconds=max(d.step(), 0.001))
    assert d.outbox.outbox_stats(h.clock.now())["pending"] == 2
    back = WebhookSink(tolerance=SIM, secret=SECRET, port=port).start()
    try:
        drain(h, d)
        assert len(back.received) == 2
    finally:
        back.stop()


def test_a_4xx_goes_to_dead_letters_not_to_the_bin(tmp_path: Path) -> None:
    sink = WebhookSink(tolerance=SIM, secret=SECRET, fault=lambda n: (404, {})).start()
    try:
        h, d = make(tmp_path, sink)
        h.feed(sale("000122", 12800, at(14, 3)), sale("000123", 12800, at(14, 4)))
        drain(h, d)
        dead = d.outbox.dead_letters()
        assert len(dead) == 1 and "404" in dead[0]["last_error"]
    finally:
        sink.stop()


def test_rows_interrupted_while_sending_are_sent_again_after_restart(tmp_path: Path) -> None:
    sink = WebhookSink(tolerance=SIM, secret=SECRET).start()
    try:
        h, d = make(tmp_path, sink)
        h.feed(sale("000122", 12800, at(14, 3)), sale("000123", 12800, at(14, 4)))
        rows = d.outbox.due(h.clock.now())
        d.outbox.claim([r.id for r in rows], h.clock.now())  # "sent" but never "marked sent": then a crash
        d.outbox.close()
        h2, d2 = make(tmp_path, sink, start=at(14, 5))
        assert d2.outbox.recover() == 1
        drain(h2, d2)
        assert len(sink.received) == 1
    finally:
        sink.stop()


def test_backoff_is_full_jitter_capped_with_retry_after_as_floor() -> None:
    rng = random.Random(3)
    delays = [retry_delay(a, rng=rng) for a in range(12)]
    assert all(0 <= x <= 300 for x in delays)
    assert max(retry_delay(2, rng=random.Random(i)) for i in range(50)) <= 8
    assert retry_delay(0, rng=rng, minimum=30) >= 30
    assert timedelta(seconds=retry_delay(30, rng=rng)) <= timedelta(minutes=5)
