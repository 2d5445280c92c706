"""Replay throughput against the plain-SQLite floor, whether it stays flat, and replay's peak memory.

The capture is simulated shop days on the cn_ecr wire (300 sales a day plus reprints and the settlement,
one batch per day), decoded with agent.replay.decode_captures and run through agent.replay.replay on a
journal in a temporary directory (replay's bulk load since issue 20's fourth pass: synchronous=OFF, a commit
per ~20,000 rows; the daemon keeps synchronous=FULL). Each run is its own process, so its
peak RSS (ru_maxrss) is replay's alone.

The floor (issue 20): a plain loop of ``json.loads`` + one INSERT per row, WAL + synchronous=FULL,
committing every 1,000 rows, over the same events as JSON lines. Floor and replay alternate (floor,
replay, floor) at each size in the same run; the ratio uses the median floor.

``--peer-tree DIR`` also replays the same capture with another checkout's code (``git archive`` of main into
DIR, say) between the two floors, so a change is measured against its base in one run.
"""

from __future__ import annotations

import itertools
import json
import os
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import ROOT, write_result

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
TARGET_FLOOR_RATIO = 5.0
TARGET_PEAK_MIB = 100
FLOOR_COMMIT_EVERY = 1000


def days_for(transactions: int) -> int:
    return max(1, round(transactions / (PER_DAY * 1.05)))


def write_inputs(days: int, directory: Path) -> tuple[Path, Path]:
    """The capture on the wire and the same events as JSON lines (the floor's input), a day at a time."""
    from agent.sim.terminal import encode_day
    from bench.inputs import _one_day

    capture, lines = directory / "capture.cn_ecr", directory / "events.jsonl"
    with capture.open("wb") as wire, lines.open("w", encoding="utf-8") as text:
        for i in range(days):
            day = _one_day(i, PER_DAY)
            wire.write(encode_day("cn_ecr", day))
            text.writelines(json.dumps(e.event.to_dict(), ensure_ascii=False) + "\n" for e in day)
    return capture, lines


def floor(lines: Path, db: Path) -> dict[str, Any]:
    """json.loads + one INSERT per row, WAL + synchronous=FULL, a commit every 1,000 rows."""
    for p in db.parent.glob(db.name + "*"):
        p.unlink()
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE events(id INTEGER PRIMARY KEY, kind TEXT, amount_minor INTEGER, time TEXT, data TEXT)")
    start, cpu = time.perf_counter(), time.process_time()
    rows = 0
    conn.execute("BEGIN")
    with lines.open(encoding="utf-8") as f:
        for line in f:
            obj = json.loads(line)
            conn.execute("INSERT INTO events(kind, amount_minor, time, data) VALUES(?,?,?,?)",
                         (obj.get("kind"), obj.get("amount_minor"), obj.get("time"), line))
            rows += 1
            if rows % FLOOR_COMMIT_EVERY == 0:
                conn.execute("COMMIT")
                conn.execute("BEGIN")
    conn.execute("COMMIT")
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    conn.close()
    return {"rows": rows, "seconds": seconds, "cpu_s": cpu}


def child(capture: Path, days: int, state: Path) -> dict[str, Any]:
    """Decode + replay in this (fresh) process: timings, the per-day flatness and the peak RSS."""
    from agent.config import parse_config
    from agent.messages import BatchClosed
    from agent.replay import decode_captures, replay
    from bench.inputs import SHANGHAI, sim_end

    loaded = parse_config(REPLAY_CONFIG, "<bench>")
    closes: list[float] = []

    def on_notice(item: Any) -> None:
        # One settlement a day; the 23:00 cutoff closes nothing more and would halve the intervals.
        if isinstance(item, BatchClosed) and item.reason == "settlement":
            closes.append(time.perf_counter())

    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start, cpu0 = time.perf_counter(), time.process_time()
    # A stream (issue 20): this is the first pass (the year-less times' timeline); decoding proper happens
    # inside replay, so "replay_s" includes it.
    events, _ = decode_captures([capture], "cn_ecr", SHANGHAI, received=sim_end(days))
    decoded = time.perf_counter()
    result = replay(loaded, events, state=state, listener=on_notice)
    done, cpu = time.perf_counter(), time.process_time() - cpu0
    txns = result.counts["transactions"]
    per_day = [b - a for a, b in itertools.pairwise(closes)]
    tenth = max(1, len(per_day) // 10)
    early, late = sorted(per_day[tenth:2 * tenth] or per_day), sorted(per_day[-tenth:] or per_day)
    day_txns = txns / days
    return {"days": days, "events": result.counts["events"], "transactions": txns,
            "new_transactions": result.counts["new_transactions"], "alerts_opened": result.counts["alerts_opened"],
            "decode_s": decoded - start, "replay_s": done - decoded, "total_s": done - start,
            "cpu_s": cpu, "tx_per_cpu_s": txns / cpu,
            "tx_per_s": txns / (done - start), "replay_only_tx_per_s": txns / (done - decoded),
            "us_per_tx": (done - start) / txns * 1e6,
            "us_per_tx_second_tenth_of_days": early[len(early) // 2] / day_txns * 1e6,
            "us_per_tx_last_tenth_of_days": late[len(late) // 2] / day_txns * 1e6,
            "peak_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
            "rss_before_replay_kib": rss_before}


def _run_child(capture: Path, days: int, state: Path, tree: Path = ROOT) -> dict[str, Any]:
    # ``-m`` from ``tree``: its own agent/ and bench/ come first on sys.path.
    proc = subprocess.run([sys.executable, "-m", "bench.replay_throughput", "--child", str(capture), str(days),
                           str(state)], capture_output=True, text=True, cwd=tree, timeout=7200)
    if proc.returncode != 0:
        raise RuntimeError(f"replay child failed: {proc.stderr[-3000:]}")
    out: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def measure(transactions: int, peer: Path | None = None) -> dict[str, Any]:
    days = days_for(transactions)
    with tempfile.TemporaryDirectory(prefix="settleguard-bench-replay-") as tmp:
        built = time.perf_counter()
        capture, lines = write_inputs(days, Path(tmp))
        built = time.perf_counter() - built
        floors = [floor(lines, Path(tmp) / "floor.sqlite3")]
        row = _run_child(capture, days, Path(tmp) / "state")
        row["journal_bytes"] = sum(p.stat().st_size for p in (Path(tmp) / "state").glob("settleguard.sqlite3*"))
        if peer is not None:
            row["peer"] = _run_child(capture, days, Path(tmp) / "peer-state", peer)
            row["peer"]["tree"] = str(peer)
        floors.append(floor(lines, Path(tmp) / "floor.sqlite3"))
    # The machine is shared: CPU time is the figure compared (as in issue 20), wall time is kept beside it.
    row["floor_tx_per_cpu_s"] = floors[0]["rows"] / statistics.median(f["cpu_s"] for f in floors)
    row["floor_tx_per_s"] = floors[0]["rows"] / statistics.median(f["seconds"] for f in floors)
    row["floor_runs"] = floors
    row["floor_ratio"] = row["floor_tx_per_cpu_s"] / row["tx_per_cpu_s"]
    if peer is not None:
        row["peer"]["floor_ratio"] = row["floor_tx_per_cpu_s"] / row["peer"]["tx_per_cpu_s"]
        row["speedup_vs_peer"] = row["tx_per_cpu_s"] / row["peer"]["tx_per_cpu_s"]
    row["inputs_built_s"] = built
    return row


def run(quick: bool = False, peer: Path | None = None) -> dict[str, Any]:
    if quick:
        sizes = [10_000]
    elif os.environ.get("SETTLEGUARD_BENCH_1M") == "1":
        sizes = [10_000, 100_000, 1_000_000]
    else:
        sizes = [10_000, 100_000]
    rows = [measure(n, peer) for n in sizes]
    base = rows[0]["us_per_tx"]
    for r in rows:
        r["us_per_tx_vs_smallest"] = r["us_per_tx"] / base
    return {"rows": rows, "target_tx_per_s": TARGET_TX_PER_S, "target_floor_ratio": TARGET_FLOOR_RATIO,
            "target_peak_mib": TARGET_PEAK_MIB,
            "note": "1M transactions only with SETTLEGUARD_BENCH_1M=1 (see BENCHMARKS.md for its duration)"}


def main() -> None:
    if {"-h", "--help"} & set(sys.argv[1:]):   # asked how to run it: not a 2-minute run
        print((__doc__ or "").strip() + "\n\nusage: python -m bench.replay_throughput [--quick] [--peer-tree DIR]"
              "\n(SETTLEGUARD_BENCH_1M=1 adds 1,000,000 transactions)")
        return
    if len(sys.argv) >= 5 and sys.argv[1] == "--child":
        print(json.dumps(child(Path(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4]))))
        return
    peer = Path(sys.argv[sys.argv.index("--peer-tree") + 1]).resolve() if "--peer-tree" in sys.argv else None
    result = run(quick="--quick" in sys.argv, peer=peer)
    write_result("replay" if peer is None else "replay_vs_peer", result)
    print("transactions | replay tx per CPU s (wall) | floor tx per CPU s (wall) | floor/ours | peak RSS MiB"
          " | flatness")
    for r in result["rows"]:
        print(f"{r['transactions']:>12} | {r['tx_per_cpu_s']:>8.0f} ({r['tx_per_s']:.0f}) | "
              f"{r['floor_tx_per_cpu_s']:>8.0f} ({r['floor_tx_per_s']:.0f}) | {r['floor_ratio']:>5.1f}x | "
              f"{r['peak_rss_kib'] / 1024:>6.0f} | "
              f"x{r['us_per_tx_vs_smallest']:.2f}; per day {r['us_per_tx_second_tenth_of_days']:.0f} us/tx early, "
              f"{r['us_per_tx_last_tenth_of_days']:.0f} late")
        if "peer" in r:
            p = r["peer"]
            print(f"{'peer tree':>12} | {p['tx_per_cpu_s']:>8.0f} ({p['tx_per_s']:.0f}) | "
                  f"{'':>8} {'':<8} | {p['floor_ratio']:>5.1f}x | {p['peak_rss_kib'] / 1024:>6.0f} | "
                  f"ours / peer x{r['speedup_vs_peer']:.2f}; alerts {r['alerts_opened']} vs {p['alerts_opened']}")


if __name__ == "__main__":
    main()
