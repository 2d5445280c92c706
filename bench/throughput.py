"""Decoder throughput per protocol: MB/s, frames (receipts) per second, and the ratio to 115,200 baud."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

from bench.common import LINE_RATE_115200, repeat, write_result
from bench.inputs import RECEIVED, SHANGHAI, escpos_stream, sim_stream, zvt_apdu_stream, zvt_serial_stream
from drivers.protocols import build_decoder

# 4 KiB is what the serial reader hands over at most; 64 bytes is closer to what a 115,200-baud line
# delivers per read(), so both are measured.
CHUNKS = (4096, 64)


def _case(protocol: str, data: bytes, options: dict[str, Any], chunk: int) -> Callable[[], tuple[float, int, int]]:
    def once() -> tuple[float, int, int]:
        decoder = build_decoder(protocol, tz=SHANGHAI, options=options)
        start = time.perf_counter()
        events = 0
        for i in range(0, len(data), chunk):
            events += len(decoder.feed(data[i:i + chunk], RECEIVED))
        events += len(decoder.flush(RECEIVED))
        elapsed = time.perf_counter() - start
        if decoder.stats.bad_frames or decoder.stats.bytes_skipped:
            raise AssertionError(f"{protocol}: clean input reported as damaged: {decoder.stats}")
        return elapsed, events, decoder.stats.frames
    return once


def inputs(quick: bool) -> list[tuple[str, str, bytes, dict[str, Any], str]]:
    scale = 5 if quick else 1
    return [
        ("zvt (bare APDUs, TCP framing)", "zvt", zvt_apdu_stream(20_000 // scale), {"transport": "tcp"},
         "ecrterm_040f_status_girocard_40eur.hex repeated"),
        ("zvt (DLE/CRC serial frames)", "zvt", zvt_serial_stream(20_000 // scale), {"transport": "serial"},
         "the same APDU through drivers.protocols.zvt.frame_serial, repeated"),
        ("cn_ecr", "cn_ecr", sim_stream("cn_ecr", 30 // scale), {},
         f"{30 // scale} simulated days (build_day clean, 300 sales/day) via agent.sim.wire_cn_ecr.encode"),
        ("escpos", "escpos", escpos_stream(100), {}, "receipt-with-logo.bin repeated 100 times (957,900 bytes)"),
        ("jsonl", "jsonl", sim_stream("jsonl", 30 // scale), {}, f"{30 // scale} simulated days as JSON lines"),
    ]


def run(quick: bool = False) -> dict[str, Any]:
    runs = 3 if quick else 5
    rows = []
    for label, protocol, data, options, what in inputs(quick):
        for chunk in CHUNKS:
            once = _case(protocol, data, options, chunk)
            _, events, frames = once()  # warm-up, and the counts (identical on every run)
            timing = repeat(lambda once=once: once()[0], runs)  # type: ignore[misc]
            secs = timing["median_s"]
            rows.append({"input": label, "protocol": protocol, "what": what, "chunk": chunk, "bytes": len(data),
                         "events": events, "frames": frames, "median_s": secs,
                         "mb_per_s": len(data) / secs / 1e6, "frames_per_s": frames / secs,
                         "events_per_s": events / secs, "x_line_rate": len(data) / secs / LINE_RATE_115200,
                         "timing": timing})
    return {"rows": rows, "line_rate_bytes_per_s": LINE_RATE_115200}


def main() -> None:
    result = run(quick="--quick" in sys.argv)
    write_result("throughput", result)
    for r in result["rows"]:
        print(f"{r['input']:32} chunk {r['chunk']:5}  {r['mb_per_s']:7.2f} MB/s  {r['frames_per_s']:9.0f} frames/s"
              f"  {r['x_line_rate']:7.0f}x line rate")


if __name__ == "__main__":
    main()
