"""200 tills publishing to one local nats-server with JetStream (issue 19).

Each simulated till is what a real one runs for this channel: its own SQLite journal file with rows in the
outbox, its own ``NatsChannel`` (its own connection and event-loop thread) and its own delivery loop
(``agent.delivery.loop.Delivery``, one thread) draining the outbox strictly in order. All tills start
together. Measured per message: the time ``channel.send`` takes (CloudEvent built, published, PubAck
back; a till's first send, which also connects and looks for the stream, reported apart); then the
stream is read back: its message count must equal what the tills sent, with no duplicate id and every
till's messages in its own order.

The floor, in the same run: one bare nats-py connection publishing the same bodies to JetStream
sequentially (no outbox, no thread hop, no contention). The ratio says what the till side adds.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from agent.alerts.lifecycle import NoticeKind
from agent.config import DeliveryConfig
from agent.delivery.channels.base import HttpSender, Notice, Outcome
from agent.delivery.channels.nats import NatsChannel, StreamLimits
from agent.delivery.loop import Delivery
from agent.store.journal import Journal
from agent.store.outbox import Outbox
from bench.common import percentile, write_result
from drivers.clock import SYSTEM_CLOCK
from tests.nats_support import NatsServer

STREAM = "SETTLEGUARD"


class TimedChannel(NatsChannel):
    """The real channel, timing each send as the delivery loop experiences it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.samples: list[float] = []
        self.failures: list[str] = []

    def send(self, notice: Notice, *, message_id: str, now: datetime, sender: HttpSender) -> Outcome:
        start = time.perf_counter()
        outcome = super().send(notice, message_id=message_id, now=now, sender=sender)
        if outcome.status == "ok":
            self.samples.append(time.perf_counter() - start)
        else:
            self.failures.append(outcome.reason)
        return outcome


def heartbeat_data(shop: str, till: str, i: int, now: datetime) -> dict[str, Any]:
    """A heartbeat-sized body (the contract's keys; values made up): what a fleet sends most often."""
    return {"shop_id": shop, "till_id": till, "shop": f"店 {shop}", "till": till, "version": "bench",
            "started": now.isoformat(), "at": now.isoformat(), "interval_s": 300, "healthy": True,
            "problems": [], "sources": [{"name": "terminal", "protocol": "zvt", "state": "ok",
                                         "last_byte": now.isoformat(), "last_event": now.isoformat()}],
            "open_alerts": i % 3, "next_cutoff": None, "outbox": {"pending": 0, "dead": 0, "oldest_pending": None},
            "journal": {"ok": True, "schema": 5, "size_bytes": 1 << 20}}


class Till:
    def __init__(self, root: Path, n: int, url: str, per_till: int) -> None:
        self.shop, self.till = f"shop-{n // 2:03d}", f"till-{n % 2 + 1}"
        path = root / f"{self.shop}-{self.till}.sqlite3"
        now = SYSTEM_CLOCK.now()
        journal = Journal(path)
        with journal.transaction():
            for i in range(per_till):
                journal.enqueue(message_id=f"heartbeat.{self.shop}.{self.till}.{i:05d}", channel="hq",
                                kind=NoticeKind.HEARTBEAT.value, alert_id=None, revision=None,
                                payload={"notice": "heartbeat", "data": heartbeat_data(self.shop, self.till, i, now)},
                                now=now)
        journal.close()
        self.channel = TimedChannel("hq", servers=[url], stream=StreamLimits(name=STREAM, create=True), timeout=10.0)
        self.delivery = Delivery(Outbox(path), [self.channel], None,  # type: ignore[arg-type]  # no HTTP here
                                 clock=SYSTEM_CLOCK, config=DeliveryConfig(), shop=self.shop,
                                 source=f"settleguard://{self.shop}/{self.till}", rng=random.Random(n))
        self.ids = [f"heartbeat.{self.shop}.{self.till}.{i:05d}" for i in range(per_till)]

    def run(self, start: threading.Barrier, deadline: float) -> None:
        start.wait()
        while self.delivery.outbox.next_due() is not None and time.monotonic() < deadline:
            wait = self.delivery.step()
            if wait > 0:
                time.sleep(min(wait, 0.05))   # a retry's backoff (none expected): the bench, not a test


def read_back(url: str, expected: int) -> list[tuple[str, str]]:
    """(subject, Nats-Msg-Id) of every message in the stream, in stream order."""
    import nats
    from nats.js.api import AckPolicy, ConsumerConfig

    async def read() -> list[tuple[str, str]]:
        nc = await nats.connect(url)
        try:
            js = nc.jetstream()
            # No acks: a consumer that waits for them stops at max_ack_pending (1000) messages.
            sub = await js.pull_subscribe("settleguard.>", stream=STREAM,
                                          config=ConsumerConfig(ack_policy=AckPolicy.NONE))
            out: list[tuple[str, str]] = []
            while len(out) < expected:
                try:
                    batch = await sub.fetch(500, timeout=5)
                except nats.errors.TimeoutError:
                    break
                out += [(m.subject, (m.headers or {}).get("Nats-Msg-Id", "")) for m in batch]
            return out
        finally:
            await nc.close()

    return asyncio.run(read())


def stream_count(url: str) -> int:
    import nats

    async def count() -> int:
        nc = await nats.connect(url)
        try:
            return int((await nc.jetstream().stream_info(STREAM)).state.messages)
        finally:
            await nc.close()

    return asyncio.run(count())


def floor(url: str, bodies: list[bytes]) -> list[float]:
    """Bare nats-py: one connection, sequential JetStream publishes of the same bodies, to another stream."""
    import nats
    from nats.js.api import StreamConfig

    async def run() -> list[float]:
        nc = await nats.connect(url)
        try:
            js = nc.jetstream()
            await js.add_stream(StreamConfig(name="FLOOR", subjects=["floor.>"]))
            out = []
            for i, body in enumerate(bodies):
                start = time.perf_counter()
                await js.publish("floor.x", body, headers={"Nats-Msg-Id": f"f{i}"})
                out.append(time.perf_counter() - start)
            return out
        finally:
            await nc.close()

    return asyncio.run(run())


def run(*, tills: int, per_till: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="sg-nats-fleet-") as tmp:
        root = Path(tmp)
        server = NatsServer(root / "nats").start()
        try:
            fleet = [Till(root, n, server.url, per_till) for n in range(tills)]
            barrier = threading.Barrier(tills + 1)
            deadline = time.monotonic() + 600
            threads = [threading.Thread(target=t.run, args=(barrier, deadline), daemon=True) for t in fleet]
            for th in threads:
                th.start()
            barrier.wait()
            began = time.perf_counter()
            for th in threads:
                th.join()
            wall = time.perf_counter() - began
            sent = sum(len(t.channel.samples) for t in fleet)
            retries = sum(len(t.channel.failures) for t in fleet)
            for t in fleet:
                t.channel.close()
                t.delivery.outbox.close()
            in_stream = stream_count(server.url)
            stored = read_back(server.url, in_stream)
            ids = [i for _, i in stored]
            by_till: dict[str, list[str]] = {}
            for subject, msg_id in stored:
                by_till.setdefault(subject, []).append(msg_id)
            in_order = all(by_till.get(f"settleguard.{t.shop}.{t.till}.heartbeat") == t.ids for t in fleet)
            # A till's first send also connects and looks for the stream: reported apart from the rest.
            first = [t.channel.samples[0] for t in fleet if t.channel.samples]
            samples = [s for t in fleet for s in t.channel.samples[1:]]
            # The floor: the same number of bodies of the same size, after the fleet (nothing else running).
            body = json.dumps(heartbeat_data("shop-000", "till-1", 0, SYSTEM_CLOCK.now())).encode()
            bare = floor(server.url, [body] * min(2000, tills * per_till))
        finally:
            server.stop()
    result = {
        "workload": f"{tills} tills x {per_till} heartbeats each, all at once, one local nats-server -js",
        "tills": tills, "per_till": per_till, "sent": sent, "retries": retries,
        "stream_messages": in_stream, "distinct_ids": len(set(ids)), "order_kept_per_till": in_order,
        "wall_s": round(wall, 3), "throughput_msg_s": round(sent / wall, 1),
        "first_send_p50_ms": round(percentile(first, 50) * 1000, 3),
        "first_send_p99_ms": round(percentile(first, 99) * 1000, 3),
        "publish_p50_ms": round(percentile(samples, 50) * 1000, 3),
        "publish_p99_ms": round(percentile(samples, 99) * 1000, 3),
        "floor_p50_ms": round(percentile(bare, 50) * 1000, 3),
        "floor_p99_ms": round(percentile(bare, 99) * 1000, 3),
    }
    result["ok"] = (sent == tills * per_till == in_stream == len(set(ids)) == len(ids)) and in_order
    return result


def main() -> None:
    quick = "--quick" in sys.argv
    # The fleet, then one till alone with as many messages (what a real till sees: its own CPU, no
    # 199 neighbours on the same two cores), each against its own fresh server.
    fleet = run(tills=200, per_till=5 if quick else 25)
    alone = run(tills=1, per_till=200 if quick else 1000)
    path = write_result("nats_fleet", {"fleet": fleet, "one_till": alone})
    for label, result in (("fleet", fleet), ("one till", alone)):
        print(f"-- {label}")
        for key, value in result.items():
            print(f"{key}: {value}")
    print(f"raw: {path}")
    if not (fleet["ok"] and alone["ok"]):
        sys.exit("nats_fleet: the stream does not hold exactly what the tills sent, in order")


if __name__ == "__main__":
    main()
