"""Start-up: what a person (or systemd) waits for before settleguard answers (issue 20).

Whole-process wall time, median of interleaved runs, for ``settleguard --help``, ``settleguard decode`` of
a small ZVT capture (a 174-byte hex dump) and of a small ESC/POS receipt (613 bytes, templates loaded), and
the daemon's READY on a restart (its journal exists, as on a till after the first day): ``settleguard run``
spawned with $NOTIFY_SOCKET on a datagram socket we bound (what systemd does for Type=notify), from spawn to
the ``READY=1`` datagram. ``python -X importtime`` of the
``decode`` command says where its import time goes (the largest cumulative imports are recorded).

Bytecode is compiled first (``compileall``, as pip does when it installs the package), so the figures are
what an installed till pays, not the first run after an edit. ``--tree DIR`` measures another checkout
with the same interpreter (e.g. main, for a before/after in one run):

    python -m bench.startup [--runs 7] [--tree ../main]
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import ROOT, TESTDATA, cpu_seconds, write_result
from bench.marked import replace_section

TARGETS_S = {"help": 0.10, "decode_zvt": 0.15, "decode_escpos": 0.15, "ready": 0.40}
# What the console script does (.venv/bin/settleguard), runnable against any tree on PYTHONPATH.
MAIN = "import sys; from agent.cli import main; sys.exit(main())"
ZVT_FILE = TESTDATA / "zvt" / "ecrterm_040f_status_girocard_40eur.hex"
ESCPOS_FILE = TESTDATA / "escpos" / "preview-tools-receipt.bin"


def _env(tree: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPATH"] = str(tree)
    env["TZ"] = "Asia/Shanghai"
    return env


def _compile(tree: Path) -> None:
    subprocess.run([sys.executable, "-m", "compileall", "-q", "agent", "drivers"], cwd=tree, env=_env(tree),
                   stdout=subprocess.DEVNULL, check=True)


def _wall(tree: Path, args: list[str]) -> tuple[float, float]:
    """Wall time and the child's CPU time (user + system: what load from other processes does not inflate)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", MAIN, *args], cwd=tree, env=_env(tree),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    secs = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"settleguard {' '.join(args)} exited {proc.returncode} in {tree}")
    return secs, usage.ru_utime + usage.ru_stime


def _ready(tree: Path, config: Path, state: Path) -> tuple[float, float]:
    """Spawn -> READY=1 of ``settleguard run``, as systemd sees it."""
    with tempfile.TemporaryDirectory(prefix="sg-notify-") as tmp:
        path = Path(tmp) / "notify.sock"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(str(path))
        env = {**_env(tree), "NOTIFY_SOCKET": str(path)}
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-c", MAIN, "run", "--config", str(config), "--state", str(state)],
                                cwd=tree, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            deadline = t0 + 30
            while True:
                sock.settimeout(max(0.01, deadline - time.perf_counter()))
                try:
                    data = sock.recv(65536)
                except TimeoutError:
                    raise RuntimeError("no READY=1 within 30 s") from None
                if "READY=1" in data.decode(errors="replace").splitlines():
                    return time.perf_counter() - t0, cpu_seconds(proc.pid)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            sock.close()


def importtime(tree: Path, args: list[str], top: int = 10) -> list[dict[str, Any]]:
    """The ``top`` imports with the largest cumulative time (µs) under ``python -X importtime``."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", MAIN, *args], cwd=tree, env=_env(tree),
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    rows = []
    for line in proc.stderr.splitlines():   # "import time:  self_us |  cumulative_us | module"
        parts = line.removeprefix("import time:").split("|")
        if len(parts) != 3 or not parts[0].strip().isdigit():
            continue
        rows.append({"module": parts[2].strip(), "self_us": int(parts[0]), "cumulative_us": int(parts[1])})
    rows.sort(key=lambda r: -r["cumulative_us"])
    return rows[:top]


def measure(trees: list[Path], runs: int) -> list[dict[str, Any]]:
    """Every command on every tree, interleaved run by run (tree A, tree B, tree A, ...)."""
    from agent.sim.terminal import PtyTerminal

    for tree in trees:
        _compile(tree)
    commands = {"help": ["--help"],
                "decode_zvt": ["decode", "--protocol", "zvt", str(ZVT_FILE)],
                "decode_escpos": ["decode", "--protocol", "escpos", str(ESCPOS_FILE)]}
    samples: list[dict[str, list[float]]] = [{k: [] for k in [*commands, "ready"]} for _ in trees]
    cpu: list[dict[str, list[float]]] = [{k: [] for k in [*commands, "ready"]} for _ in trees]
    term = PtyTerminal()
    try:
        with tempfile.TemporaryDirectory(prefix="sg-start-") as tmp:
            config = Path(tmp) / "settleguard.toml"
            # One JSON-lines terminal on a pty, no channels: the daemon's own start-up, nothing remote.
            config.write_text(f'[shop]\nname = "启动测试店"\ntill = "t1"\ntimezone = "Asia/Shanghai"\n\n'
                              f'[[source]]\nname = "terminal"\nprotocol = "jsonl"\nport = "{term.device}"\n',
                              encoding="utf-8")
            for t, tree in enumerate(trees):            # warm the page cache
                for args in commands.values():
                    _wall(tree, args)
                _ready(tree, config, Path(tmp) / f"warm{t}")
            for _ in range(runs):
                for t, tree in enumerate(trees):
                    for name, args in commands.items():
                        wall, used = _wall(tree, args)
                        samples[t][name].append(wall)
                        cpu[t][name].append(used)
                    # The same state directory every time: a till restarts on its journal (the first start,
                    # which creates it, is the warm-up run above).
                    wall, used = _ready(tree, config, Path(tmp) / f"warm{t}")
                    samples[t]["ready"].append(wall)
                    cpu[t]["ready"].append(used)
    finally:
        term.close()
    out = []
    for tree, got, used in zip(trees, samples, cpu, strict=True):
        medians = {k: statistics.median(v) for k, v in got.items()}
        out.append({"tree": str(tree), "runs": runs, "samples_s": got, "median_s": medians, "cpu_samples_s": used,
                    "cpu_median_s": {k: statistics.median(v) for k, v in used.items()},
                    "meets_target": {k: medians[k] <= TARGETS_S[k] for k in TARGETS_S},
                    "importtime_decode_zvt": importtime(tree, commands["decode_zvt"])})
    return out


def table(ours: dict[str, Any], before: dict[str, Any] | None) -> str:
    labels = {"help": "`settleguard --help`", "decode_zvt": f"`settleguard decode --protocol zvt` ({ZVT_FILE.name}, "
              f"{ZVT_FILE.stat().st_size} B)", "decode_escpos": f"`settleguard decode --protocol escpos` "
              f"({ESCPOS_FILE.name}, {ESCPOS_FILE.stat().st_size} B, templates loaded)",
              "ready": "`settleguard run` (a restart: journal exists): spawn -> sd_notify READY=1"}
    head = ("| command | target | this tree: wall (CPU) | meets: wall / CPU |"
            + (" before (`--tree`): wall (CPU) | before / now (wall) |" if before else ""))
    rule = "|---|---:|---:|---|" + ("---:|---:|" if before else "")
    rows = [head, rule]
    for key, label in labels.items():
        now = ours["median_s"][key]
        cpu = ours["cpu_median_s"][key]
        row = (f"| {label} | <= {TARGETS_S[key]:.2f} s | {now:.3f} s ({cpu:.3f} s) | "
               f"{'yes' if now <= TARGETS_S[key] else '**no**'} / {'yes' if cpu <= TARGETS_S[key] else '**no**'} |")
        if before:
            then = before["median_s"][key]
            row += f" {then:.3f} s ({before['cpu_median_s'][key]:.3f} s) | {then / now:.1f}x |"
        rows.append(row)
    top = ", ".join(f"{r['module']} {r['cumulative_us'] / 1000:.0f} ms" for r in ours["importtime_decode_zvt"][:5])
    return "\n".join([
        f"`python -m bench.startup --runs {ours['runs']}" + (f" --tree {before['tree']}`" if before else "`")
        + f" — whole-process wall time, median of {ours['runs']} interleaved runs, bytecode compiled first "
        "(as an install does), TZ=Asia/Shanghai; in brackets the process's CPU time (user + system), which "
        "other processes' load does not inflate. Load average (1 min) before / after the run: "
        f"{ours['loadavg'][0]:.1f} / {ours['loadavg'][1]:.1f} on {os.cpu_count()} CPUs"
        + (" — **a busy machine: the wall times are inflated**" if max(ours["loadavg"]) > (os.cpu_count() or 1)
           else "") + ". Written by the benchmark itself.", "", *rows, "",
        f"Largest imports of `decode --protocol zvt` (`python -X importtime`, cumulative): {top}.",
    ])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--quick", action="store_true", help="3 runs")
    ap.add_argument("--tree", type=Path, help="also measure this checkout (before/after in one run)")
    ap.add_argument("--no-write", action="store_true", help="do not rewrite BENCHMARKS.md's start-up section")
    args = ap.parse_args()
    runs = 3 if args.quick else args.runs
    load_before = os.getloadavg()[0]
    measured = measure([ROOT, *([args.tree.resolve()] if args.tree else [])], runs)
    ours, before = measured[0], (measured[1] if args.tree else None)
    ours["loadavg"] = (load_before, os.getloadavg()[0])
    result = {"ours": ours, "before": before, "targets_s": TARGETS_S}
    write_result("startup", result)
    text = table(ours, before)
    print(text)
    if not args.no_write:
        replace_section(ROOT / "BENCHMARKS.md", "startup", text)


if __name__ == "__main__":
    main()
