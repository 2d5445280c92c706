"""What every benchmark shares: the machine description, repeated timing, raw result files."""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"
TESTDATA = ROOT / "tests" / "data"
LINE_RATE_115200 = 11_520  # bytes/s: 115200 baud, 8N1 = 10 bits per byte


def machine() -> dict[str, Any]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpu": model, "python": platform.python_version(),
            "implementation": platform.python_implementation(), "platform": platform.platform(),
            "when": datetime.now(UTC).isoformat(timespec="seconds")}


def repeat(fn: Callable[[], float], runs: int) -> dict[str, Any]:
    """Run ``fn`` (which returns the seconds it measured) ``runs`` times; median plus the spread."""
    samples = [fn() for _ in range(runs)]
    return {"median_s": statistics.median(samples), "min_s": min(samples), "max_s": max(samples),
            "runs": runs, "samples_s": samples}


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile: the value at or below which ``pct`` percent of the samples lie."""
    if not values:
        raise ValueError("no samples")
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * pct // 100))  # ceil without floats going astray
    return ordered[int(rank) - 1]


def write_result(name: str, result: dict[str, Any]) -> Path:
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{name}.json"
    payload = {"benchmark": name, "machine": machine(), "command": " ".join([sys.executable, *sys.argv]),
               **result}
    path.write_text(json.dumps(payload, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    return path


def rss_kib(pid: int | str = "self") -> int:
    """Resident set size from /proc (VmRSS), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int | str = "self") -> float:
    """User + system CPU time of a process, from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


class Stopwatch:
    def __init__(self) -> None:
        self.start = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.start
