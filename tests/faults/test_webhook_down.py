"""The back office's webhook receiver goes away for a stretch, then comes back: nothing lost, order kept."""

from __future__ import annotations

import random
import time
from contextlib import closing
from pathlib import Path

from agent.config import parse_config
from agent.service.daemon import Daemon
from agent.sim.sink import WebhookSink
from agent.sim.terminal import PtyTerminal
from tests.faults.support import CONFIG, FULL, Till, journal, vouchers_in_journal, wait_until

PAIRS_BEFORE, PAIRS_DURING, PAIRS_AFTER = (20, 100, 20) if FULL else (3, 8, 3)
DOWN_SECONDS = 20.0 if FULL else 1.5


class _ShortBackoff(random.Random):
    """The reduced form keeps the retry schedule's shape but caps each wait at 50 ms, to stay fast."""

    def uniform(self, a: float, b: float) -> float:
        return min(super().uniform(a, b), 0.05)


def _undelivered(state: Path) -> int:
    with closing(journal(state)) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM outbox WHERE channel='hook' AND state != 'sent'").fetchone()[0])


def _charge_pairs(till: Till, pairs: int) -> None:
    for _ in range(2 * pairs):
        till.send()
        time.sleep(0.003)


def test_alerts_raised_while_the_receiver_is_down_arrive_in_order_once_it_is_back(tmp_path: Path) -> None:
    secret = "whsec_" + "ZG93bmRvd25kb3duZG93bmRvd24="
    sink = WebhookSink(secret=secret).start()
    port = sink.port
    term = PtyTerminal()
    loaded = parse_config(CONFIG.format(device=term.device, url=sink.url, secret=secret), "<faults>")
    daemon = Daemon(loaded, tmp_path, use_scheduler=False)
    till = Till(term.write, dup_every=2)  # every second sale repeats the first: one alert per pair
    received = []
    try:
        daemon.start()
        if not FULL:
            daemon.delivery.rng = _ShortBackoff(3)
        time.sleep(0.3)
        _charge_pairs(till, PAIRS_BEFORE)
        assert sink.wait_for(lambda got: len(got) >= PAIRS_BEFORE, timeout=10)
        sink.stop()  # connection refused from here on
        received += sink.received
        down_at = time.monotonic()
        _charge_pairs(till, PAIRS_DURING)
        # The reader and the pipeline go on while delivery cannot: every charge is journalled meanwhile.
        assert wait_until(lambda: len(vouchers_in_journal(tmp_path)) == len(till.written), timeout=10)
        time.sleep(max(0.0, DOWN_SECONDS - (time.monotonic() - down_at)))
        sink = WebhookSink(secret=secret, port=port).start()
        _charge_pairs(till, PAIRS_AFTER)
        assert wait_until(lambda: len(vouchers_in_journal(tmp_path)) == len(till.written), timeout=10)
        # Full-jitter backoff after a long outage can wait a few tens of seconds before the next try.
        assert wait_until(lambda: _undelivered(tmp_path) == 0, timeout=120 if FULL else 20), \
            f"{_undelivered(tmp_path)} alerts still undelivered after the receiver came back"
        received += sink.received
        failures = daemon.delivery.failures["hook"]
    finally:
        daemon.stop()
        term.close()
        sink.stop()
    with closing(journal(tmp_path)) as conn:
        rows = conn.execute("SELECT message_id, state FROM outbox WHERE channel='hook' ORDER BY id").fetchall()
    assert [r["state"] for r in rows] == ["sent"] * len(rows)
    assert [r.webhook_id for r in received] == [r["message_id"] for r in rows], \
        "delivery order differs from commit order"
    assert len(rows) >= PAIRS_BEFORE + PAIRS_DURING + PAIRS_AFTER, "a duplicate pair raised no alert"
    assert failures > 0, "the outage was not noticed: the test did not test anything"
