"""End-to-end alert latency: last byte of the duplicate charge on a pty -> the alert's POST at a local server.

The real daemon runs in-process (agent.service.daemon.Daemon, journal with
synchronous=FULL, the delivery thread, httpx) with a cn_ecr source on a pty.
For each of N pairs we write a sale, then the same card and amount on a new
voucher (DUP-001), stamp the moment the second frame's last byte has been
written, and stamp its POST arriving at agent.sim.sink.WebhookSink.

To say where the time goes, the inbox queue and an alert listener record two
more instants per pair: the decoded batch entering the pipeline's queue, and
the commit of the journal transaction holding the alert and its outbox row.
"""

from __future__ import annotations

import queue
import random
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from agent.alerts.lifecycle import NoticeKind
from agent.config import parse_config
from agent.messages import AlertChange, EventBatch
from agent.service.daemon import Daemon
from agent.sim.rig import new_secret
from agent.sim.sink import Received, WebhookSink
from agent.sim.terminal import PtyTerminal
from bench.common import percentile, write_result
from bench.inputs import SHANGHAI
from bench.scenario import config_text, frame, full_pan, sale
from drivers.events import Transaction


class _StampedQueue(queue.Queue):  # type: ignore[type-arg]
    """The daemon's inbox, noting when each decoded transaction is handed to the pipeline."""

    def __init__(self, maxsize: int, stamps: dict[str, float]) -> None:
        super().__init__(maxsize=maxsize)
        self.stamps = stamps

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        if isinstance(item, EventBatch):
            now = time.monotonic()
            for ev in item.events:
                if isinstance(ev, Transaction) and ev.voucher_no:
                    self.stamps.setdefault(ev.voucher_no, now)
        super().put(item, block, timeout)


def measure(pairs: int, *, gap: float = 0.02, seed: int = 9) -> dict[str, Any]:
    rng = random.Random(seed)
    secret = new_secret()
    arrived: dict[str, float] = {}
    committed: dict[str, float] = {}
    enqueued: dict[str, float] = {}
    lock = threading.Lock()

    def on_receive(rec: Received) -> None:
        data = rec.body.get("data", {})
        if data.get("rule") == "DUP-001" and data.get("revision") == 1:
            with lock:
                arrived.setdefault(data["transactions"][-1]["voucher_no"], rec.arrived)

    def on_change(change: Any) -> None:
        if isinstance(change, AlertChange) and change.notice == NoticeKind.OPENED and change.alert.rule == "DUP-001":
            committed.setdefault(change.alert.transactions[-1].voucher_no or "", time.monotonic())

    sink = WebhookSink(secret=secret, on_receive=on_receive).start()
    term = PtyTerminal()
    holder = tempfile.TemporaryDirectory(prefix="settleguard-bench-latency-")
    daemon = Daemon(parse_config(config_text(device=term.device, url=sink.url, secret=secret), "<bench>"),
                    Path(holder.name), listeners=[on_change], use_scheduler=False)
    daemon.inbox = _StampedQueue(10000, enqueued)
    written: dict[str, float] = {}
    try:
        daemon.start()
        assert daemon.pipeline is not None
        sync = daemon.pipeline.journal.conn.execute("PRAGMA synchronous").fetchone()[0]
        time.sleep(0.5)  # the reader opens the pty
        voucher = 1
        misses = 0
        for i in range(pairs):
            card = full_pan(rng)
            amount = rng.randrange(20, 400) * 100
            now = datetime.now(SHANGHAI).replace(microsecond=0)
            term.write(frame(sale(voucher, card=card, amount_minor=amount, when=now)))
            time.sleep(gap / 2)
            dup = f"{voucher + 1:06d}"
            term.write(frame(sale(voucher + 1, card=card, amount_minor=amount, when=now)))
            written[dup] = time.monotonic()
            voucher += 2
            if not sink.wait_for(lambda _got, dup=dup: dup in arrived, timeout=5.0):  # type: ignore[misc]
                misses += 1
            time.sleep(gap / 2)
            if i == 0:
                time.sleep(0.2)
    finally:
        daemon.stop()
        term.close()
        sink.stop()
        holder.cleanup()
    keys = [k for k in written if k in arrived]
    total = [(arrived[k] - written[k]) * 1000 for k in keys]
    read = [(enqueued[k] - written[k]) * 1000 for k in keys if k in enqueued]
    pipe = [(committed[k] - enqueued[k]) * 1000 for k in keys if k in committed and k in enqueued]
    deliver = [(arrived[k] - committed[k]) * 1000 for k in keys if k in committed]

    def summary(values: list[float]) -> dict[str, float]:
        if not values:
            return {}
        return {"p50_ms": percentile(values, 50), "p99_ms": percentile(values, 99), "max_ms": max(values),
                "min_ms": min(values)}

    return {"pairs": pairs, "alerts_measured": len(total), "missed": misses, "synchronous_pragma": sync,
            "end_to_end": summary(total), "write_to_queue": summary(read), "queue_to_commit": summary(pipe),
            "commit_to_post": summary(deliver), "targets": {"p50_ms": 5, "p99_ms": 20},
            "samples_ms": total}


def run(quick: bool = False, repeats: int | None = None) -> dict[str, Any]:
    runs = repeats or (1 if quick else 3)
    pairs = 50 if quick else 200
    results = [measure(pairs, seed=9 + i) for i in range(runs)]
    p50s = sorted(r["end_to_end"]["p50_ms"] for r in results)
    p99s = sorted(r["end_to_end"]["p99_ms"] for r in results)
    for r in results:
        r.pop("samples_ms")
    return {"runs": results, "median_p50_ms": p50s[len(p50s) // 2], "median_p99_ms": p99s[len(p99s) // 2]}


def main() -> None:
    result = run(quick="--quick" in sys.argv)
    write_result("latency", result)
    print(f"end-to-end alert latency: p50 {result['median_p50_ms']:.2f} ms, p99 {result['median_p99_ms']:.2f} ms "
          f"(median of {len(result['runs'])} runs)")
    for r in result["runs"]:
        print({k: r[k] for k in ("alerts_measured", "missed", "write_to_queue", "queue_to_commit",
                                 "commit_to_post")})


if __name__ == "__main__":
    main()
