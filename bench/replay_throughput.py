"""Replay throughput: transactions per second through decode + rules + journal, and whether it stays flat.

The capture is simulated shop days on the cn_ecr wire (300 sales a day plus
reprints and the settlement, one batch per day), decoded with
agent.replay.decode_captures and run through agent.replay.replay on a
journal in a temporary directory (synchronous=FULL, as the daemon).
"""

from __future__ import annotations

import itertools
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from agent.config import parse_config
from agent.messages import BatchClosed
from agent.replay import decode_captures, replay
from bench.common import write_result
from bench.inputs import SHANGHAI, sim_days, sim_end, sim_stream

REPLAY_CONFIG = """\
[shop]
name = "基准测试店"
till = "bench-1"
timezone = "Asia/Shanghai"

[settlement]
cutoff = "23:00"
"""
PER_DAY = 300  # sales; a day also carries ~15 reprints and one settlement
TARGET_TX_PER_S = 20_000


def measure(transactions: int) -> dict[str, Any]:
    days = max(1, round(transactions / (PER_DAY * 1.05)))
    loaded = parse_config(REPLAY_CONFIG, "<bench>")
    with tempfile.TemporaryDirectory(prefix="settleguard-bench-replay-") as tmp:
        capture = Path(tmp) / "capture.cn_ecr"
        capture.write_bytes(sim_stream("cn_ecr", days, PER_DAY))
        sim_days.cache_clear()
        sim_stream.cache_clear()
        closes: list[float] = []

        def on_notice(item: Any) -> None:
            # One settlement a day; the 23:00 cutoff closes nothing more and would halve the intervals.
            if isinstance(item, BatchClosed) and item.reason == "settlement":
                closes.append(time.perf_counter())

        start = time.perf_counter()
        events, _ = decode_captures([capture], "cn_ecr", SHANGHAI, received=sim_end(days))
        decoded = time.perf_counter()
        result = replay(loaded, events, state=Path(tmp) / "state", listener=on_notice)
        done = time.perf_counter()
        journal_bytes = sum(p.stat().st_size for p in (Path(tmp) / "state").glob("settleguard.sqlite3*"))
    txns = result.counts["transactions"]
    # Every day is the same size, so the time between two settlements is the per-day cost: flat means
    # the last tenth of the days cost what the first tenth (after the rules' baseline exists) did.
    per_day = [b - a for a, b in itertools.pairwise(closes)]
    tenth = max(1, len(per_day) // 10)
    early, late = sorted(per_day[tenth:2 * tenth] or per_day), sorted(per_day[-tenth:] or per_day)
    day_txns = txns / days
    return {"days": days, "events": len(events), "transactions": txns,
            "new_transactions": result.counts["new_transactions"], "alerts_opened": result.counts["alerts_opened"],
            "decode_s": decoded - start, "replay_s": done - decoded, "total_s": done - start,
            "tx_per_s": txns / (done - start), "replay_only_tx_per_s": txns / (done - decoded),
            "us_per_tx": (done - start) / txns * 1e6, "journal_bytes": journal_bytes,
            "us_per_tx_second_tenth_of_days": early[len(early) // 2] / day_txns * 1e6,
            "us_per_tx_last_tenth_of_days": late[len(late) // 2] / day_txns * 1e6}


def run(quick: bool = False) -> dict[str, Any]:
    if quick:
        sizes = [10_000, 30_000]
    elif os.environ.get("SETTLEGUARD_BENCH_1M") == "1":
        sizes = [100_000, 300_000, 1_000_000]
    else:
        sizes = [30_000, 100_000]
    rows = [measure(n) for n in sizes]
    base = rows[0]["us_per_tx"]
    for r in rows:
        r["us_per_tx_vs_smallest"] = r["us_per_tx"] / base
    return {"rows": rows, "target_tx_per_s": TARGET_TX_PER_S,
            "note": "1M transactions only with SETTLEGUARD_BENCH_1M=1 (about 10 minutes on the reference machine)"}


def main() -> None:
    result = run(quick="--quick" in sys.argv)
    write_result("replay", result)
    for r in result["rows"]:
        print(f"{r['transactions']:>9} tx: {r['tx_per_s']:8.0f} tx/s end to end ({r['replay_only_tx_per_s']:.0f} tx/s "
              f"replay only), {r['us_per_tx']:.0f} us/tx, x{r['us_per_tx_vs_smallest']:.2f} of the smallest run; "
              f"per day: {r['us_per_tx_second_tenth_of_days']:.0f} us/tx early, "
              f"{r['us_per_tx_last_tenth_of_days']:.0f} us/tx late")


if __name__ == "__main__":
    main()
