"""Memory, idle CPU and start-up time of the daemon.

* start-up: ``settleguard run`` as a subprocess with $NOTIFY_SOCKET pointing
  at an AF_UNIX datagram socket we bound; time from spawn to ``READY=1``.
* idle CPU: the same daemon (a pty source, a webhook channel) left alone for
  30 s; CPU seconds from /proc/PID/stat.
* RSS under load: the daemon in a child process, fed transactions straight
  into its inbox (decoding is measured elsewhere), RSS sampled as the
  journal grows.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.common import ROOT, cpu_seconds, rss_kib, write_result

SETTLEGUARD = ROOT / ".venv" / "bin" / "settleguard"


class NotifyListener:
    """What systemd does for Type=notify: a datagram socket the service writes READY=1 to."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "notify.sock"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.path))

    def wait_for(self, line: str, timeout: float) -> float | None:
        """Monotonic time at which a datagram containing ``line`` arrived, or None."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                return None
            if line in data.decode(errors="replace").splitlines():
                return time.monotonic()

    def close(self) -> None:
        self.sock.close()


def spawn_daemon(config: Path, state: Path, notify: NotifyListener) -> subprocess.Popen[bytes]:
    env = {**os.environ, "NOTIFY_SOCKET": str(notify.path)}
    return subprocess.Popen([str(SETTLEGUARD), "run", "--config", str(config), "--state", str(state)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def stop_daemon(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def startup_and_idle(runs: int, idle_seconds: float) -> dict[str, Any]:
    from agent.sim.rig import new_secret
    from agent.sim.sink import WebhookSink
    from agent.sim.terminal import PtyTerminal
    from bench.scenario import write_config

    secret = new_secret()
    sink = WebhookSink(secret=secret).start()
    term = PtyTerminal()
    ready_s: list[float] = []
    idle: dict[str, Any] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="settleguard-bench-start-") as tmp:
            config = write_config(Path(tmp) / "settleguard.toml", device=term.device, url=sink.url, secret=secret)
            for i in range(runs):
                notify = NotifyListener(Path(tmp))
                t0 = time.monotonic()
                proc = spawn_daemon(config, Path(tmp) / f"state{i}", notify)
                at = notify.wait_for("READY=1", timeout=30)
                try:
                    if at is None:
                        said = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                        raise RuntimeError(f"no READY=1 within 30 s: {said}")
                    ready_s.append(at - t0)
                    if i == runs - 1:
                        time.sleep(2.0)  # let start-up work (reader open, first idle tick) settle
                        rss_start = rss_kib(proc.pid)
                        cpu0, w0 = cpu_seconds(proc.pid), time.monotonic()
                        time.sleep(idle_seconds)
                        cpu1, w1 = cpu_seconds(proc.pid), time.monotonic()
                        idle = {"idle_window_s": w1 - w0, "cpu_s": cpu1 - cpu0,
                                "cpu_percent_of_one_core": 100 * (cpu1 - cpu0) / (w1 - w0),
                                "rss_after_startup_kib": rss_start, "rss_after_idle_kib": rss_kib(proc.pid),
                                "threads": len(os.listdir(f"/proc/{proc.pid}/task"))}
                finally:
                    stop_daemon(proc)
                    notify.close()
                    notify.path.unlink(missing_ok=True)
    finally:
        term.close()
        sink.stop()
    ordered = sorted(ready_s)
    return {"ready_runs_s": ready_s, "ready_median_s": ordered[len(ordered) // 2], "ready_target_s": 1.0,
            "idle": idle, "idle_target_percent": 1.0}


def smaps_kib(pid: int | str = "self") -> dict[str, int]:
    """Resident KiB by kind of mapping (/proc/PID/smaps): the C heap of the main thread (``[heap]``), anonymous
    mappings (pymalloc's arenas, other threads' malloc arenas, big allocations), the journal's WAL index
    (``-shm``) and other journal files, shared libraries, the rest. Tells Python's growth from SQLite's
    and the allocator's."""
    out: dict[str, int] = {"heap": 0, "anon": 0, "wal_index": 0, "journal_files": 0, "libs": 0, "other": 0}
    kind = "other"
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        head = line.split(maxsplit=5)
        if len(head) >= 5 and "-" in head[0] and ":" not in head[0]:
            name = head[5] if len(head) == 6 else ""
            kind = ("heap" if name == "[heap]" else "anon" if not name else
                    "wal_index" if name.endswith("-shm") else
                    "journal_files" if "settleguard.sqlite3" in name else
                    "libs" if ".so" in name else "other")
        elif line.startswith("Rss:"):
            out[kind] += int(line.split()[1])
    return out


def mallinfo_kib() -> dict[str, int]:
    """glibc's own account (mallinfo2): bytes malloc holds from the OS (``arena`` + ``mmapped``), in use, and free
    inside its arenas (what ``malloc_trim`` can hand back only where whole pages are free)."""
    import ctypes

    class MallInfo2(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                    "fsmblks", "uordblks", "fordblks", "keepcost")]
    try:
        fn = ctypes.CDLL(None).mallinfo2
    except AttributeError:
        return {}
    fn.restype = MallInfo2
    m = fn()
    return {"arena": m.arena // 1024, "mmapped": m.hblkhd // 1024, "in_use": m.uordblks // 1024,
            "free": m.fordblks // 1024}


def _held(state: Any, journal: Path, newest: datetime) -> int:
    """Views inside the rules' horizon. The journal-backed state counts them with a query on the pipeline's
    own connection, which this thread must not use while the pipeline does (a sqlite3 connection shared by
    two threads at once can crash the interpreter; a paced 1M run that did so ended in a segfault): counted on a
    connection of our own. An in-memory state (a tree from before the journal-backed one) is only read."""
    if getattr(state, "resident", None) is None:
        return len(state)
    import sqlite3

    from agent.store.schema import utc_text

    conn = sqlite3.connect(f"file:{journal}?mode=ro", uri=True, timeout=30)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM transactions WHERE time_utc>=?",
                                (utc_text(newest - state.horizon),)).fetchone()[0])
    finally:
        conn.close()


def _resident(state: Any) -> int:
    """Views the rule state holds in memory (``resident``; a tree from before it, run with --tree: all it holds)."""
    resident = getattr(state, "resident", None)
    return int(resident()) if resident is not None else len(state)


def _load_child(total: int, samples: int, url: str, secret: str, trace: bool = False,
                paced: bool = False) -> dict[str, Any]:
    """Runs in its own process so its RSS is the daemon's alone (the webhook sink the alerts go to runs in
    the parent: it keeps what it receives, which is not the daemon's memory).

    Sales stamped 2 s apart (a busy till's pace in the transactions' own time: 100,000 span 2.3 days,
    1,000,000 span 23). With ``trace``, a tracemalloc snapshot after start-up and at the end: the biggest
    differences by source line say what the growth is (tracemalloc costs memory and time itself, so RSS
    figures come from untraced runs).

    Two ways of feeding them:

    * flood (the default): batches of 20 pushed into the inbox between samples without waiting, on the
      real clock. Up to a tenth of the run waits in the inbox at once (100,000 sales at 1M), and all but
      the last 25 hours of stamps are older than the rules' horizon when they arrive: a backlog's memory.
    * ``paced``, what a till does: one sale per read, and never more than ``PACED_BACKLOG`` reads waiting
      (a reader cannot outrun its serial line: ~40 frames a second at 115,200 baud); the daemon's clock
      follows the stamps (a ManualClock set to each sale's time) and the daemon's own schedule runs on
      it (cutoffs and batch closes, baseline refreshes, reminders, reviews), posted as the real scheduler
      thread posts them. So the transactions arrive in the rules' horizon as on a real till, only
      faster: ~23 days of a busy till's stamps for 1M.
    """
    import gc
    import tracemalloc

    from agent.config import parse_config
    from agent.messages import EventBatch
    from agent.schedule import Scheduler
    from agent.service.daemon import Daemon
    from agent.service.sender import LazyHttpxSender
    from bench.scenario import config_text, sale
    from drivers.clock import SYSTEM_CLOCK, Clock, ManualClock

    rng = random.Random(5)
    cards = [f"622576******{i:04d}" for i in range(5000)]   # the bench's own, before any snapshot
    text = config_text(device="/dev/null", url=url, secret=secret)
    text = text.replace(text[text.index("[[source]]"):text.index("[rules.DUP-001]")], "")
    out: dict[str, Any] = {"total_events": total, "samples": [], "traced": trace, "paced": paced}
    t = datetime.now(UTC) - timedelta(seconds=2 * total)
    manual = ManualClock(t) if paced else None
    clock: Clock = manual or SYSTEM_CLOCK
    with tempfile.TemporaryDirectory(prefix="settleguard-bench-rss-") as tmp:
        loaded = parse_config(text, "<bench>")
        daemon = Daemon(loaded, Path(tmp), clock=clock, use_scheduler=False)
        # Paced: the daemon's schedule on the clock that follows the stamps, stepped here after each sale
        # (the scheduler thread looks once a second of real time, hours of these stamps).
        schedule = Scheduler(loaded, daemon.inbox, clock) if paced else None
        daemon.start()
        journal = Path(tmp) / "settleguard.sqlite3"
        assert daemon.pipeline is not None
        pipeline = daemon.pipeline
        time.sleep(1.0)  # the first idle tick and reader start-up, as a daemon sits before the first sale
        out["rss_after_start_kib"] = rss_kib()
        out["python_heap_blocks_after_start"] = sys.getallocatedblocks()
        out["smaps_after_start_kib"] = smaps_kib()
        out["mallinfo_after_start_kib"] = mallinfo_kib()
        # The HTTP sender (httpx and the CA bundle in an SSL context) is built at the first delivery, not
        # before READY (agent/service/sender.py): ~12 MiB once, at the first alert. Built here, so the
        # growth is measured from a daemon that has sent once ("warm") as well as from READY.
        if isinstance(daemon.sender, LazyHttpxSender):
            daemon.sender.ensure()
        time.sleep(0.5)
        out["rss_after_warm_kib"] = rss_kib()
        if trace:
            tracemalloc.start(1)
            gc.collect()
            before = tracemalloc.take_snapshot()
        per_batch = 1 if paced else 20
        step = max(per_batch, total // samples)
        start = time.monotonic()
        sent = 0
        scheduled = 0
        while sent < total:
            events = []
            for _ in range(per_batch):
                sent += 1
                t += timedelta(seconds=2)
                events.append(sale(sent, card=rng.choice(cards), amount_minor=rng.randrange(100, 500_000),
                                   when=t, batch_no=f"{sent // 3000:06d}"))
            if manual is not None and schedule is not None:
                manual.set(t)
                scheduled += len(schedule.run_due())
                while daemon.inbox.qsize() >= PACED_BACKLOG:
                    time.sleep(0.0005)
            daemon.inbox.put(EventBatch("terminal", tuple(events), t))
            if sent % step == 0 or sent >= total:
                while pipeline.counts["events"] < sent:
                    time.sleep(0.01)
                db = sum(p.stat().st_size for p in Path(tmp).glob("settleguard.sqlite3*"))
                state = pipeline.engine.state
                out["samples"].append({"events": sent, "rss_kib": rss_kib(), "journal_bytes": db,
                                       "seconds": time.monotonic() - start,
                                       # Python's own heap, to tell a Python leak from SQLite or allocator growth.
                                       "python_heap_blocks": sys.getallocatedblocks(),
                                       "rule_state_views": _held(state, journal, t),
                                       # Views in this process's memory (the journal-backed state: its cache).
                                       "views_in_memory": _resident(state),
                                       "smaps_kib": smaps_kib(), "mallinfo_kib": mallinfo_kib()})
        out["events_per_s_through_daemon"] = sent / (time.monotonic() - start)
        out["scheduled_commands"] = scheduled
        out["alerts_opened"] = pipeline.counts["alerts_opened"]
        out["rss_at_end_kib"] = rss_kib()
        out["smaps_at_end_kib"] = smaps_kib()
        out["rule_state_views"] = _held(pipeline.engine.state, journal, t)
        out["views_in_memory"] = _resident(pipeline.engine.state)
        # A few seconds without input: the pipeline's idle tick hands the freed C heap back (agent/memory.py).
        time.sleep(3.0)
        out["rss_after_idle_kib"] = rss_kib()
        out["smaps_after_idle_kib"] = smaps_kib()
        out["mallinfo_after_idle_kib"] = mallinfo_kib()
        if trace:
            gc.collect()
            after = tracemalloc.take_snapshot()
            diff = after.compare_to(before, "lineno")
            out["tracemalloc_top"] = [{"where": str(d.traceback[0]), "size_kib": d.size_diff // 1024,
                                       "blocks": d.count_diff} for d in diff[:12]]
            out["tracemalloc_total_kib"] = sum(d.size_diff for d in diff) // 1024
            out["traced_bytes_per_view"] = sum(d.size_diff for d in diff) // max(1, out["rule_state_views"])
            tracemalloc.stop()
        daemon.stop()
    return out


# Paced feeding: reads waiting in the daemon's inbox at most (a serial reader is bounded by its line).
PACED_BACKLOG = 32

# The load child of this file run on another checkout's agent/ (``--peer-tree``): the same bench code for both.
_ON_TREE = "import runpy, sys; sys.path.insert(0, '.'); sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], " \
           "run_name='__main__')"


def rss_under_load(total: int, *, trace: bool = False, paced: bool = False,
                   tree: Path | None = None) -> dict[str, Any]:
    from agent.sim.rig import new_secret
    from agent.sim.sink import WebhookSink

    secret = new_secret()
    # Paced, the daemon signs with its clock, which follows the stamps (days from this process's clock): the
    # sink takes any timestamp, so deliveries succeed as on a till instead of being refused for skew.
    sink = WebhookSink(secret=secret, tolerance=10**9 if paced else 300).start()
    child = ["--child", str(total), *(["--trace"] if trace else []), *(["--paced"] if paced else [])]
    args = ([sys.executable, "-m", "bench.resources", *child] if tree is None
            else [sys.executable, "-c", _ON_TREE, str(Path(__file__).resolve()), *child])
    try:
        proc = subprocess.run(args, capture_output=True, text=True, cwd=tree or ROOT, timeout=7200,
                              env={**os.environ, "BENCH_SINK_URL": sink.url, "BENCH_SINK_SECRET": secret})
    finally:
        sink.stop()
    if proc.returncode != 0:
        raise RuntimeError(f"load child failed: {proc.stderr[-2000:]}")
    import json

    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    result["growth_kib"] = result["rss_at_end_kib"] - result["rss_after_start_kib"]
    result["growth_after_idle_kib"] = result["rss_after_idle_kib"] - result["rss_after_start_kib"]
    warm = result.get("rss_after_warm_kib", result["rss_after_start_kib"])   # a peer tree's bench may lack it
    result["growth_from_warm_kib"] = result["rss_at_end_kib"] - warm
    return result


def run(quick: bool = False) -> dict[str, Any]:
    """Start-up and idle; a paced burst (a till's reads, the clock following the stamps: the issue's "100,000
    within minutes"), the same traced; the unpaced flood (a backlog in the inbox) beside it; with
    SETTLEGUARD_BENCH_1M=1, 1M paced ("a sustained busy pace", ~15 min here)."""
    size = 20_000 if quick else 100_000
    out = startup_and_idle(runs=3, idle_seconds=5.0) if quick else startup_and_idle(runs=5, idle_seconds=30.0)
    out["burst"] = rss_under_load(size, paced=True)
    out["burst_traced"] = rss_under_load(size, paced=True, trace=True)
    out["flood"] = rss_under_load(size)
    if not quick and os.environ.get("SETTLEGUARD_BENCH_1M") == "1":
        out["million"] = rss_under_load(1_000_000, paced=True)
    return out


def print_load(name: str, load: dict[str, Any]) -> None:
    print(f"{name}: RSS {load['rss_after_start_kib'] / 1024:.1f} MiB after start, "
          f"{load.get('rss_after_warm_kib', 0) / 1024:.1f} warm (sender built), "
          f"{load['growth_from_warm_kib'] / 1024:+.1f} from warm to the end; "
          f"{load['rss_at_end_kib'] / 1024:.1f} at the end ({load['growth_kib'] / 1024:+.1f}), "
          f"{load['rss_after_idle_kib'] / 1024:.1f} 3 s idle later "
          f"({load['growth_after_idle_kib'] / 1024:+.1f});"
          f" {load['events_per_s_through_daemon']:.0f} tx/s; {load['rule_state_views']} views held, "
          f"{load['views_in_memory']} in memory; alerts {load['alerts_opened']}; "
          f"scheduled commands {load.get('scheduled_commands', 0)}", flush=True)
    print(f"  start: py blocks {load['python_heap_blocks_after_start']} smaps {load['smaps_after_start_kib']} "
          f"malloc {load['mallinfo_after_start_kib']}")
    for smp in load["samples"]:
        print(f"  {smp['events']:>8}: RSS {smp['rss_kib']} KiB journal {smp['journal_bytes'] // 1024} KiB "
              f"py blocks {smp['python_heap_blocks']} views {smp['rule_state_views']}/"
              f"{smp['views_in_memory']} smaps {smp['smaps_kib']} malloc {smp['mallinfo_kib']}", flush=True)
    print(f"  end smaps {load['smaps_at_end_kib']}; idle smaps {load['smaps_after_idle_kib']} "
          f"malloc {load['mallinfo_after_idle_kib']}", flush=True)
    if load.get("tracemalloc_top"):
        print(f"  tracemalloc, start-up to the end ({load['tracemalloc_total_kib'] / 1024:+.1f} MiB of Python "
              f"allocations, {load['traced_bytes_per_view']} bytes per view held):")
        for d in load["tracemalloc_top"]:
            print(f"    {d['size_kib']:>+8} KiB {d['blocks']:>+8} blocks  {d['where']}")


def compare(peer: Path, *, million: bool, paced: bool) -> None:
    """The load child on another checkout's code (``git archive`` of main) and on ours, back to back, the same
    bench code: a 100k burst, and with ``million`` also 1M (~5 min each here)."""
    out: dict[str, Any] = {"peer_tree": str(peer), "paced": paced}
    for total in (100_000, 1_000_000) if million else (100_000,):
        for name, tree in (("peer", peer), ("ours", None)):
            load = out[f"{name}_{total}"] = rss_under_load(total, tree=tree, paced=paced)
            print_load(f"{name} {total}", load)
    write_result("resources_vs_peer", out)


def main() -> None:
    if len(sys.argv) >= 3 and sys.argv[1] == "--child":
        import json

        print(json.dumps(_load_child(int(sys.argv[2]), samples=10, url=os.environ["BENCH_SINK_URL"],
                                     secret=os.environ["BENCH_SINK_SECRET"], trace="--trace" in sys.argv,
                                     paced="--paced" in sys.argv)))
        return
    if "--peer-tree" in sys.argv:
        compare(Path(sys.argv[sys.argv.index("--peer-tree") + 1]).resolve(), million="--million" in sys.argv,
                paced="--paced" in sys.argv)
        return
    if "--load" in sys.argv:   # one load child: --load N [--paced] [--trace]
        total = int(sys.argv[sys.argv.index("--load") + 1])
        print_load(f"{total}", rss_under_load(total, trace="--trace" in sys.argv, paced="--paced" in sys.argv))
        return
    result = run(quick="--quick" in sys.argv)
    write_result("resources", result)
    idle = result["idle"]
    print(f"READY after {result['ready_median_s'] * 1000:.0f} ms (median); idle CPU "
          f"{idle['cpu_percent_of_one_core']:.2f}% of one core; RSS after start-up {idle['rss_after_startup_kib']} KiB")
    for name, what in (("burst", "paced"), ("flood", "unpaced, a backlog in the inbox"),
                       ("million", "paced"), ("burst_traced", "paced, under tracemalloc")):
        if name in result:
            print_load(f"{name}: {result[name]['total_events']} sales stamped 2 s apart, {what}", result[name])


if __name__ == "__main__":
    main()
