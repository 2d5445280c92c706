"""The first start after an update to schema 6: how long the journal's upgrade takes (BENCHMARKS.md 9j).

The daemon upgrades its journal before it sends READY=1, and systemd gives it TimeoutStartSec=90s. This
measures that upgrade on a journal of a busy till's size.

**The schema-5 journal** is written by settleguard as it was before schema 6 (commit ``1363470``, from
``git archive`` into a temporary directory, or ``--s5-tree DIR``): its replay of a busy till's days, the
CONVENIENCE shop of agent/sim/shops.py at 550 sales a day (~200,000 transactions a year): declines and their
retries, voids naming their original's voucher, refunds naming their original's RRN, reprints, a settlement a
day; fed as the till's JSON lines, so every field reaches the journal as the pipeline stores it (``data`` is the
Transaction's JSON whatever the wire). Replay writes it as a bulk load (synchronous=OFF, indexes built at the
end): the same rows and indexes as a daemon's, pages laid out more tidily.

**Each variant** opens a copy in a process of its own with that tree's code (``Journal(path)``, which
upgrades it): wall and CPU time, peak RSS, the file and its WAL before and after, and, for a tree that reports
progress (agent/store/schema.py ``on_upgrade``), each step's time and the longest stretch without a progress
call (what UPGRADE_EXTEND in agent/service/daemon.py must cover). Cold: the copy's pages dropped from the page
cache first (fsync, then posix_fadvise DONTNEED), as after a till's reboot; warm: read once just before.
``--peer-tree DIR`` measures another checkout the same way on the same journal (main before this change: the
whole upgrade in one transaction).

usage: python -m bench.migration [--quick | --million | --transactions N] [--s5-tree DIR] [--peer-tree DIR]
       [--s5-journal FILE] [--keep DIR] [--rounds N]
(--quick 20,000 transactions, default 200,000 (~3 min), --million 1,000,000 (~15 min, 2 GB of disk per copy);
--s5-journal reuses a schema-5 journal written before, --keep DIR keeps the one written here; --rounds: each
variant opened this many times cold and warm, default 3, medians printed)
"""

from __future__ import annotations

import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

from bench.common import ROOT, write_result

S5_COMMIT = "1363470"   # main before schema 6
PER_DAY = 550           # sales a day: ~200,000 transactions a year with declines, voids and refunds
REPLAY_CONFIG = """\
[shop]
name = "迁移基准店"
till = "bench-1"
timezone = "Asia/Shanghai"

[settlement]
cutoff = "23:00"
"""

# Replays the capture with the schema-5 tree's code (run with that tree as the working directory).
S5_CHILD = r"""
import json, sys, time
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo
from agent.config import parse_config
from agent.replay import decode_captures, replay
capture, state, end, config = Path(sys.argv[1]), Path(sys.argv[2]), datetime.fromisoformat(sys.argv[3]), sys.argv[4]
start, cpu = time.perf_counter(), time.process_time()
events, _ = decode_captures([capture], "jsonl", ZoneInfo("Asia/Shanghai"), received=end)
result = replay(parse_config(config, "<bench>"), events, state=state)
print(json.dumps({"replay_s": time.perf_counter() - start, "replay_cpu_s": time.process_time() - cpu,
                  "replayed_events": result.counts["events"]}))
"""

# Opens (and so upgrades) a journal with the code of the tree it runs in; progress where that tree reports it.
OPEN_CHILD = r"""
import json, os, resource, sys, time
from pathlib import Path
from agent.store import schema
from agent.store.journal import Journal
path = Path(sys.argv[1])
steps, gaps, last = {}, [], [0.0]
kwargs = {}
if hasattr(schema, "Upgrade"):
    def on_upgrade(u):
        now = time.perf_counter()
        gaps.append((now - last[0], u.step, u.what))
        last[0] = now
        steps.setdefault(u.step, [u.what, now, now])[2] = now
        return False
    kwargs["on_upgrade"] = on_upgrade
io0 = resource.getrusage(resource.RUSAGE_SELF).ru_inblock
start, cpu = time.perf_counter(), time.process_time()
last[0] = start
journal = Journal(path, **kwargs)
wall, cpu = time.perf_counter() - start, time.process_time() - cpu
if steps:
    gaps.append((time.perf_counter() - last[0], max(steps), "until Journal() returned"))
usage = resource.getrusage(resource.RUSAGE_SELF)
wal = path.with_name(path.name + "-wal")
out = {"wall_s": wall, "cpu_s": cpu, "peak_rss_kib": usage.ru_maxrss, "read_bytes": (usage.ru_inblock - io0) * 512,
       "version": journal.conn.execute("PRAGMA user_version").fetchone()[0],
       "wal_bytes_open": wal.stat().st_size if wal.exists() else 0,
       "filled": journal.conn.execute("SELECT COUNT(*) FROM transactions WHERE original_voucher_no IS NOT NULL"
                                      " OR original_rrn IS NOT NULL").fetchone()[0]}
if steps:
    ends = sorted(steps.items())
    out["steps"] = [{"step": n, "what": what, "first_call_s": a - start} for n, (what, a, b) in ends]
    out["progress_calls"] = len(gaps)
    worst = max(gaps)
    out["longest_gap_s"], out["longest_gap_step"] = worst[0], f"{worst[1]}: {worst[2]}"
journal.close()
print(json.dumps(out))
"""


def busy_days(days: int, lines: Path) -> int:
    """The till's JSON lines for ``days`` days of the CONVENIENCE shop; returns the transaction events."""
    from agent.sim.day import build_day
    from agent.sim.shops import CONVENIENCE
    from bench.inputs import FIRST_DAY, SHANGHAI

    count = 0
    with lines.open("w", encoding="utf-8") as out:
        for i in range(days):
            day = build_day("clean", seed=i + 1, day=FIRST_DAY + timedelta(days=i), tz=SHANGHAI, count=PER_DAY,
                            profile=CONVENIENCE, pool_seed=7)
            batch = f"{i + 1:06d}"   # vouchers restart each day: a batch a day, as bench/inputs.py
            for e in day:
                event = replace(e.event, batch_no=batch)
                count += event.type == "transaction"
                out.write(json.dumps(event.to_dict(), ensure_ascii=False) + "\n")
    return count


def s5_tree(where: Path) -> Path:
    """The code as of S5_COMMIT, from this checkout's history."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", S5_COMMIT], capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(where, filter="data")
    return where


def schema5_journal(transactions: int, tree: Path, work: Path) -> tuple[Path, dict[str, Any]]:
    from bench.inputs import sim_end

    days = max(1, round(transactions / (PER_DAY * 1.03)))   # sales plus declines' retries, voids, refunds
    lines = work / "till.jsonl"
    built = time.perf_counter()
    events = busy_days(days, lines)
    info: dict[str, Any] = {"days": days, "transaction_events": events, "inputs_s": time.perf_counter() - built}
    proc = subprocess.run([sys.executable, "-c", S5_CHILD, str(lines), str(work / "s5"), sim_end(days).isoformat(),
                           REPLAY_CONFIG], cwd=tree, capture_output=True, text=True, timeout=7200)
    if proc.returncode != 0:
        raise RuntimeError(f"schema-5 replay failed: {proc.stderr[-3000:]}")
    info.update(json.loads(proc.stdout.strip().splitlines()[-1]))
    lines.unlink()
    return work / "s5" / "settleguard.sqlite3", info


def describe_journal(path: Path) -> dict[str, Any]:
    import sqlite3

    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        kinds = dict(conn.execute("SELECT kind || '/' || result, COUNT(*) FROM transactions GROUP BY 1"))
        named = conn.execute("SELECT COUNT(*) FROM transactions WHERE json_extract(data, '$.original_voucher_no')"
                             " IS NOT NULL OR json_extract(data, '$.original_rrn') IS NOT NULL").fetchone()[0]
        return {"version": conn.execute("PRAGMA user_version").fetchone()[0],
                "transactions": sum(kinds.values()), "kinds": kinds, "naming_an_original": named,
                "sightings": conn.execute("SELECT COUNT(*) FROM sightings").fetchone()[0],
                "bytes": path.stat().st_size}
    finally:
        conn.close()


def _copy(src: Path, dst: Path, cold: bool) -> None:
    for p in dst.parent.glob(dst.name + "*"):
        p.unlink()
    shutil.copyfile(src, dst)
    with dst.open("rb") as f:
        os.fsync(f.fileno())
        if cold:   # written back, so the pages can go: the next read comes from the disk
            os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        else:
            while f.read(1 << 20):
                pass


def open_in(tree: Path, src: Path, work: Path, cold: bool) -> dict[str, Any]:
    dst = work / "copy" / "settleguard.sqlite3"
    dst.parent.mkdir(exist_ok=True)
    _copy(src, dst, cold)
    before = dst.stat().st_size
    proc = subprocess.run([sys.executable, "-c", OPEN_CHILD, str(dst)], cwd=tree, capture_output=True, text=True,
                          timeout=7200)
    if proc.returncode != 0:
        raise RuntimeError(f"upgrade in {tree} failed: {proc.stderr[-3000:]}")
    row: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    steps = row.get("steps") or []
    for s, after in zip(steps, [*(t["first_call_s"] for t in steps[1:]), row["wall_s"]][:len(steps)], strict=True):
        s["seconds"] = after - s["first_call_s"]
    row.update({"tree": str(tree), "cold": cold, "bytes_before": before, "bytes_after": dst.stat().st_size,
                "wal_after_close": sum(p.stat().st_size for p in dst.parent.glob(dst.name + "-wal"))})
    for p in dst.parent.glob(dst.name + "*"):
        p.unlink()
    return row


def run(transactions: int, s5: Path | None, peer: Path | None, journal: Path | None,
        keep: Path | None, rounds: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="settleguard-bench-migration-") as tmp:
        work = Path(tmp)
        made: dict[str, Any] = {}
        if journal is None:
            tree = s5 or s5_tree(work / "s5-tree")
            journal, made = schema5_journal(transactions, tree, work)
            if keep is not None:
                keep.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(journal, keep / journal.name)
        source = describe_journal(journal)
        if source["version"] != 5:
            raise SystemExit(f"{journal} is at schema {source['version']}, not 5")
        rows = []
        # Ours and the peer alternating, cold then warm, ``rounds`` times: the machine is shared, so the figures
        # compared are medians of runs close in time.
        for _ in range(rounds):
            for cold in (True, False):
                rows.append(open_in(ROOT, journal, work, cold))
                if peer is not None:
                    rows.append(open_in(peer, journal, work, cold))
        medians = {}
        for tree in {r["tree"] for r in rows}:
            for cold in (True, False):
                mine = [r for r in rows if r["tree"] == tree and r["cold"] == cold]
                medians[f"{'ours' if tree == str(ROOT) else 'peer'} {'cold' if cold else 'warm'}"] = {
                    k: statistics.median(r[k] for r in mine) for k in ("wall_s", "cpu_s")}
        return {"schema5": {**source, **made}, "runs": rows, "medians": medians, "rounds": rounds,
                "peer_tree": str(peer) if peer else None}


def _arg(name: str) -> Path | None:
    return Path(sys.argv[sys.argv.index(name) + 1]).resolve() if name in sys.argv else None


def main() -> None:
    if {"-h", "--help"} & set(sys.argv[1:]):
        print((__doc__ or "").strip())
        return
    n = 20_000 if "--quick" in sys.argv else 1_000_000 if "--million" in sys.argv else 200_000
    if "--transactions" in sys.argv:
        n = int(sys.argv[sys.argv.index("--transactions") + 1])
    rounds = int(sys.argv[sys.argv.index("--rounds") + 1]) if "--rounds" in sys.argv else 3
    result = run(n, _arg("--s5-tree"), _arg("--peer-tree"), _arg("--s5-journal"), _arg("--keep"), rounds)
    write_result("migration", result)
    s5 = result["schema5"]
    print(f"schema-5 journal: {s5['transactions']:,} transactions ({s5['naming_an_original']:,} naming an original),"
          f" {s5['sightings']:,} sightings, {s5['bytes'] / 1e6:,.0f} MB"
          + (f"; written by replay in {s5['replay_s']:.0f} s" if "replay_s" in s5 else ""))
    print("tree | cache | wall s | CPU s | peak RSS MiB | MB read | WAL while open MB | file MB after"
          " | longest gap s (step)")
    for r in result["runs"]:
        gap = (f"{r['longest_gap_s']:.2f} ({r['longest_gap_step']})" if "longest_gap_s" in r else "-")
        print(f"{'ours' if r['tree'] == str(ROOT) else r['tree']} | {'cold' if r['cold'] else 'warm'} | "
              f"{r['wall_s']:.2f} | {r['cpu_s']:.2f} | {r['peak_rss_kib'] / 1024:.0f} | "
              f"{r['read_bytes'] / 1e6:.0f} | "
              f"{r['wal_bytes_open'] / 1e6:.1f} | {r['bytes_after'] / 1e6:.0f} | {gap}")
        for s in r.get("steps", []):
            print(f"    step {s['step']}: {s['seconds']:.2f} s  {s['what']}")
    for name, m in sorted(result["medians"].items()):
        print(f"median of {result['rounds']}, {name}: {m['wall_s']:.2f} s wall, {m['cpu_s']:.2f} s CPU")


if __name__ == "__main__":
    main()
