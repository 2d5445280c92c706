"""The back office's webhook receiver goes away for a stretch, then comes back: nothing lost, order kept."""

from __future__ import annotations

import random
import time
from contextlib import closing
from pathlib import Path

from agent.sim.rig import CHANNEL, ShopRig
from drivers.clock import SYSTEM_CLOCK
from tests.faults.support import FULL, Till, journal, vouchers_in_journal
from tests.helpers import wait_until

PAIRS_BEFORE, PAIRS_DURING, PAIRS_AFTER = (20, 100, 20) if FULL else (3, 8, 3)
DOWN_SECONDS = 20.0 if FULL else 1.5


class _ShortBackoff(random.Random):
    """The reduced form keeps the retry schedule's shape but caps each wait at 50 ms, to stay fast."""

    def uniform(self, a: float, b: float) -> float:
        return min(super().uniform(a, b), 0.05)


def _undelivered(state: Path) -> int:
    with closing(journal(state)) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM outbox WHERE channel=? AND state != 'sent'",
                                (CHANNEL,)).fetchone()[0])


def _charge_pairs(till: Till, pairs: int) -> None:
    for _ in range(2 * pairs):
        till.send()
        time.sleep(0.003)


def test_alerts_raised_while_the_receiver_is_down_arrive_in_order_once_it_is_back(tmp_path: Path) -> None:
    rig = ShopRig(name="故障测试店", till="faults-1", state=tmp_path)
    daemon = rig.daemon()
    till = Till(rig.terminal.write, dup_every=2)  # every second sale repeats the first: one alert per pair
    received = []
    try:
        daemon.start()
        if not FULL:
            daemon.delivery.rng = _ShortBackoff(3)
        wait_until(lambda: daemon.sources[0].state == "open", "the terminal line open")
        _charge_pairs(till, PAIRS_BEFORE)
        assert rig.sink.wait_for(lambda got: len(got) >= PAIRS_BEFORE, timeout=10)
        rig.sink.stop()  # connection refused from here on
        received += rig.received
        down_at = SYSTEM_CLOCK.monotonic()
        _charge_pairs(till, PAIRS_DURING)
        # The reader and the pipeline go on while delivery cannot: every charge is journalled meanwhile.
        wait_until(lambda: len(vouchers_in_journal(tmp_path)) == len(till.written), "every charge journalled")
        time.sleep(max(0.0, DOWN_SECONDS - (SYSTEM_CLOCK.monotonic() - down_at)))
        rig.reopen_sink()
        _charge_pairs(till, PAIRS_AFTER)
        wait_until(lambda: len(vouchers_in_journal(tmp_path)) == len(till.written), "every later charge journalled")
        # Full-jitter backoff after a long outage can wait a few tens of seconds before the next try.
        wait_until(lambda: _undelivered(tmp_path) == 0, "every alert delivered after the receiver came back",
                   timeout=120 if FULL else 20, detail=lambda: f"{_undelivered(tmp_path)} undelivered")
        received += rig.received
        failures = daemon.delivery.failures[CHANNEL]
    finally:
        daemon.stop()
        rig.close()
    with closing(journal(tmp_path)) as conn:
        rows = conn.execute("SELECT message_id, state FROM outbox WHERE channel=? ORDER BY id", (CHANNEL,)).fetchall()
    assert [r["state"] for r in rows] == ["sent"] * len(rows)
    assert [r.webhook_id for r in received] == [r["message_id"] for r in rows], \
        "delivery order differs from commit order"
    assert len(rows) >= PAIRS_BEFORE + PAIRS_DURING + PAIRS_AFTER, "a duplicate pair raised no alert"
    assert failures > 0, "the outage was not noticed: the test did not test anything"
