"""``make bench``: every benchmark, each in its own process, then the long fault tests; raw results in bench/out/.

``python -m bench`` runs the full forms (about 13 minutes on the 2-core reference machine, plus about
27 for the million-line pipeline fuzzer); ``python -m bench --quick`` the reduced ones (about 1).
``python -m bench throughput latency`` runs only the named ones.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from bench.common import OUT, ROOT, machine

# name -> seconds allowed for its full form: about 20 minutes without the pipeline fuzzer, 60 with it.
BENCHMARKS: dict[str, int] = {
    "throughput": 180,
    "peers": 300,
    "escpos_templates": 180,
    "startup": 300,
    "latency": 180,
    "replay_throughput": 420,
    "resources": 1500,  # start-up; a 100k paced burst, the same under tracemalloc (~5 min), the unpaced flood
    "nats_fleet": 300,   # 200 tills x 25 messages against one local nats-server (issue 19)
    "migration": 420,    # a year of a busy till written by schema 5's replay, then the upgrade to 6 (9j)
    "fuzz": 480,
    # 1,000,000 lines through decoder -> boundary -> queue -> pipeline thread -> journal (bench/pipeline_fuzz.py):
    "pipeline_fuzz": 2400,  # 26.5 min measured on the shared 2-core machine
}
FAULTS_TIMEOUT = 420


def _run(args: list[str], timeout: int, env: dict[str, str] | None = None) -> tuple[int, float, str]:
    start = time.monotonic()
    try:
        proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)
        code, text = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as exc:
        partial = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        code, text = -1, f"timed out after {timeout} s\n{partial}"
    return code, time.monotonic() - start, text


def main(argv: list[str]) -> int:
    quick = "--quick" in argv
    chosen = [a for a in argv if not a.startswith("-")] or [*BENCHMARKS, "faults"]
    OUT.mkdir(parents=True, exist_ok=True)
    summary: dict[str, object] = {"machine": machine(), "quick": quick, "results": {}}
    failed = []
    for name in chosen:
        if name == "faults":
            env = {**os.environ, "SETTLEGUARD_FAULTS_FULL": "0" if quick else "1"}
            args = [sys.executable, "-m", "pytest", "tests/faults", "-q", "-rxXs", "-p", "no:cacheprovider"]
            code, secs, text = _run(args, FAULTS_TIMEOUT, env)
            (OUT / "faults.txt").write_text(text, encoding="utf-8")
        else:
            args = [sys.executable, "-m", f"bench.{name}", *(["--quick"] if quick else [])]
            timeout = BENCHMARKS[name]
            if name in ("replay_throughput", "resources") and os.environ.get("SETTLEGUARD_BENCH_1M") == "1":
                timeout = 3600  # 1M transactions at a few thousand a second: opt-in, outside make bench's budget
            code, secs, text = _run(args, timeout)
        print(f"== {name} ({secs:.0f} s, exit {code})\n{text.strip()[-3000:]}\n", flush=True)
        summary["results"][name] = {"exit": code, "seconds": secs}  # type: ignore[index]
        if code != 0:
            failed.append(name)
    (OUT / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(f"raw results in {OUT.relative_to(Path.cwd()) if OUT.is_relative_to(Path.cwd()) else OUT}")
    if failed:
        print("failed:", ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
