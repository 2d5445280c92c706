"""Mutational fuzzing of every decoder and the config loader: no exception, no hang, bounded buffers, no PAN out.

Hypothesis (tests/test_fuzz.py) explores structure; this module is the
volume run: at least 1,000,000 generated inputs per decoder in ``make bench``,
spread over the machine's cores. Each input is a mutation of a real seed
(test vectors, simulator frames) or fresh random bytes, fed to a long-lived
decoder as the next chunk of a stream, so state carried between feeds is
fuzzed too; every 64 inputs the decoder is flushed, and every 4,096 it is
replaced. After every feed the buffer caps are checked and every emitted
event is checked against the PAN rule (see :func:`pan_rule_broken`).

A failure (exception, cap exceeded, an unmasked card field or unscrubbed text, a feed slower than
``HANG_SECONDS``) is written to bench/out/fuzz-failures/ with the input.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from bench.common import OUT, TESTDATA, write_result
from drivers.events import Event, ReceiptText, Transaction
from drivers.pan import contains_full_pan, mask_pan, scrub_text
from drivers.protocols import build_decoder

PROTOCOLS = ("zvt", "cn_ecr", "escpos", "jsonl")
HANG_SECONDS = 1.0
TZ = ZoneInfo("Asia/Shanghai")
RECEIVED = datetime(2026, 11, 27, 6, 0, tzinfo=UTC)
# Bytes each framing treats specially: frame starts and ends, escapes, command prefixes, separators.
MAGIC = [b"\x10\x02", b"\x10\x03", b"\x10\x10", b"\x06", b"\x15", b"\x02", b"\x03", b"\x1b@", b"\x1c&", b"\x1c.",
         b"\x1dV", b"\x1d(k", b"\x1b*", b"\x1dv0", b"\n", b"{", b"}", b'"', b"\xdf\x01", b"\xdf\x02", b"\xff",
         b"\x04\x0f", b"\x06\xd3", b"\x06\xd1", b"\x00", b"\xff\xff"]


def seeds(protocol: str) -> list[bytes]:
    """Real inputs to mutate: the test vectors, plus simulator output for the two framings without many."""
    from agent.sim.day import build_day
    from agent.sim.terminal import encode_event
    from drivers.protocols.zvt import frame_serial

    out: list[bytes] = []
    if protocol == "zvt":
        for p in sorted((TESTDATA / "zvt").glob("*.hex")):
            raw = bytes.fromhex(p.read_text())
            out.append(raw)
            out.append(frame_serial(raw) if len(raw) <= 0xFFFF else raw)
    elif protocol == "escpos":
        out += [p.read_bytes() for p in sorted((TESTDATA / "escpos").glob("*.bin"))]
        out += [bytes.fromhex(p.read_text()) for p in sorted((TESTDATA / "escpos").glob("*.hex"))]
    elif protocol == "cn_ecr":
        out += [bytes.fromhex(p.read_text()) for p in sorted((TESTDATA / "cn-ecr").glob("*.hex"))]
    if protocol in ("cn_ecr", "jsonl", "escpos", "zvt"):
        for ev in build_day("mixed", seed=4, count=40)[:60]:
            out.append(encode_event(protocol, ev.event, reprint=ev.reprint))
    return out


class Mutator:
    def __init__(self, corpus: list[bytes], rng: random.Random) -> None:
        self.corpus = corpus
        self.rng = rng

    def __call__(self) -> bytes:
        r = self.rng
        if r.random() < 0.08:
            return r.randbytes(r.randrange(0, 600))
        data = bytearray(r.choice(self.corpus))
        for _ in range(r.choice((1, 1, 2, 3, 8))):
            op = r.randrange(8)
            n = len(data)
            if op == 0 and n:
                i = r.randrange(n)
                data[i] ^= 1 << r.randrange(8)
            elif op == 1 and n:
                data[r.randrange(n)] = r.randrange(256)
            elif op == 2:
                i = r.randrange(n + 1)
                data[i:i] = r.choice(MAGIC) if r.random() < 0.5 else r.randbytes(r.randrange(1, 16))
            elif op == 3 and n:
                i = r.randrange(n)
                del data[i:i + r.randrange(1, 32)]
            elif op == 4 and n:
                i = r.randrange(n)
                j = min(n, i + r.randrange(1, 64))
                data[i:i] = data[i:j] * r.randrange(1, 4)
            elif op == 5:
                other = r.choice(self.corpus)
                cut = r.randrange(len(data) + 1)
                data = data[:cut] + other[r.randrange(len(other) + 1):]
            elif op == 6 and n:
                data = data[:r.randrange(n)]
            elif op == 7 and n >= 4:
                # Length fields: nudge a byte near the front, where headers live.
                i = r.randrange(min(n, 8))
                data[i] = (data[i] + r.choice((-1, 1, 0x10, 0x80))) & 0xFF
        return bytes(data)


def buffer_report(decoder: Any) -> dict[str, int]:
    """Every buffer a decoder holds, with its cap, via the attributes the decoders expose."""
    proto = decoder.protocol
    if proto == "zvt":
        return {"buffered": decoder.buffered, "cap": decoder.max_buffer}
    if proto == "cn_ecr":
        return {"buffered": decoder.buffered, "cap": decoder.max_frame}
    if proto == "escpos":
        from drivers.protocols import escpos

        printer = decoder.printer
        char_cap = escpos.MAX_LINE_CHARS * (escpos.MAX_RECEIPT_LINES + 1) + escpos.MAX_QR_BYTES * \
            escpos.MAX_QR_PER_RECEIPT
        return {"buffered": printer.pending_bytes, "cap": escpos.MAX_PENDING,
                "chars": printer.buffered_chars, "chars_cap": char_cap,
                "qr": len(printer._qr_buf), "qr_cap": escpos.MAX_QR_BYTES}
    if proto == "jsonl":
        return {"buffered": len(decoder._buf), "cap": decoder.max_line}
    raise ValueError(proto)


def over_cap(report: dict[str, int]) -> str | None:
    for key, cap_key in (("buffered", "cap"), ("chars", "chars_cap"), ("qr", "qr_cap")):
        if key in report and report[key] > report[cap_key]:
            return f"{key}={report[key]} above {cap_key}={report[cap_key]}"
    return None


def pan_rule_broken(events: list[Event]) -> str | None:
    """The house rule, checked on what left the decoder: card fields masked, free text scrubbed.

    A fixed point test (masking again changes nothing) rather than
    ``contains_full_pan``: identifier fields (merchant and terminal ids) are
    not card data, and a 15-digit merchant id passes Luhn one time in ten.
    """
    for ev in events:
        if isinstance(ev, Transaction) and ev.card is not None and (mask_pan(ev.card) != ev.card or
                                                                    contains_full_pan(ev.card)):
            return f"card field {ev.card!r} is not masked"
        if isinstance(ev, ReceiptText):
            for text in (*ev.lines, *ev.qr):
                if scrub_text(text) != text:
                    return f"receipt text {text!r} was not scrubbed"
    return None


def _save(protocol: str, kind: str, data: bytes, detail: str) -> str:
    folder = OUT / "fuzz-failures"
    folder.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha1(data).hexdigest()[:12]
    (folder / f"{protocol}-{kind}-{digest}.bin").write_bytes(data)
    (folder / f"{protocol}-{kind}-{digest}.txt").write_text(detail, encoding="utf-8")
    return digest


def fuzz_decoder(protocol: str, inputs: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    mutate = Mutator(seeds(protocol), rng)
    failures: dict[str, int] = {}
    examples: list[str] = []
    slowest = 0.0
    fed = 0
    events = 0

    def fail(kind: str, data: bytes, detail: str) -> None:
        failures[kind] = failures.get(kind, 0) + 1
        if failures[kind] <= 3:
            examples.append(f"{kind}: {_save(protocol, kind, data, detail)}: {detail[:300]}")

    decoder = build_decoder(protocol, tz=TZ)
    start = time.perf_counter()
    for n in range(inputs):
        if n % 4096 == 0 and n:
            decoder = build_decoder(protocol, tz=TZ)
        data = mutate()
        t0 = time.perf_counter()
        try:
            out = decoder.feed(data, RECEIVED)
            if n % 64 == 63:
                out += decoder.flush(RECEIVED)
        except Exception as exc:  # the point: record anything a decoder lets escape
            fail(type(exc).__name__, data, repr(exc))
            decoder = build_decoder(protocol, tz=TZ)
            continue
        took = time.perf_counter() - t0
        slowest = max(slowest, took)
        if took > HANG_SECONDS:
            fail("slow", data, f"one feed took {took:.2f} s")
        fed += 1
        events += len(out)
        problem = over_cap(buffer_report(decoder))
        if problem:
            fail("cap", data, problem)
        broken = pan_rule_broken(out)
        if broken:
            fail("full_pan", data, broken)
    return {"protocol": protocol, "inputs": inputs, "fed": fed, "events": events, "failures": failures,
            "examples": examples, "slowest_feed_s": slowest, "seconds": time.perf_counter() - start}


def config_inputs(rng: random.Random) -> Iterator[str]:
    example = (Path(__file__).resolve().parents[1] / "config" / "settleguard.example.toml").read_text()
    lines = example.splitlines()
    while True:
        r = rng.random()
        if r < 0.1:
            yield rng.randbytes(rng.randrange(200)).decode("utf-8", "replace")
        elif r < 0.5:
            out = list(lines)
            for _ in range(rng.randrange(1, 4)):
                i = rng.randrange(len(out))
                op = rng.randrange(4)
                if op == 0:
                    del out[i]
                elif op == 1:
                    out.insert(i, rng.choice(lines))
                elif op == 2 and "=" in out[i]:
                    key = out[i].split("=", 1)[0]
                    out[i] = key + "= " + rng.choice(['""', "-1", "0", "1e309", "true", "[]", "{}", '"25:61"',
                                                      '"env:NOPE"', '"file:/nonexistent"', '"9999-99-99"',
                                                      '"1x"', '"∞"', "nan", '"0m"', '"-5m"'])
                else:
                    j = rng.randrange(len(out[i]) + 1)
                    out[i] = out[i][:j] + rng.choice(["[", "]", '"', "=", "\\", "\x00", "#", ".", "\n"]) + out[i][j:]
            yield "\n".join(out)
        else:
            data = bytearray(example.encode())
            for _ in range(rng.randrange(1, 6)):
                data[rng.randrange(len(data))] = rng.randrange(256)
            yield data.decode("utf-8", "replace")


# The dry run's "now": fixed, so a failure found once is found again from its seed.
PREFLIGHT_NOW = datetime(2026, 11, 27, 22, 45, tzinfo=ZoneInfo("Asia/Shanghai"))


def fuzz_config(inputs: int, seed: int) -> dict[str, Any]:
    """parse_config on damaged configs; each one it accepts is then built whole (agent.service.preflight:
    channels, decoders and templates, the schedule, the rules' dry run through a real pipeline).

    Two failures: anything but ConfigError escaping either step (a traceback a shop owner would see),
    and ``late:<field>`` — a config the parser accepted that only failed when built: check-config
    refuses it too, but without the parser's line number, so each kind is a validator to add.
    """
    from agent.config import ConfigError, parse_config
    from agent.service.preflight import preflight

    rng = random.Random(seed)
    # The example's WeCom channel reads its key from the environment (this runs in a worker process).
    os.environ.setdefault("SETTLEGUARD_WECOM_KEY", "fuzz-key-0000")
    failures: dict[str, int] = {}
    examples: list[str] = []
    accepted = rejected = built = 0
    slowest = 0.0
    start = time.perf_counter()
    env_before = dict(os.environ)
    gen = config_inputs(rng)
    for _ in range(inputs):
        text = next(gen)
        t0 = time.perf_counter()
        try:
            loaded = parse_config(text, "<fuzz>")
            accepted += 1
            try:
                preflight(loaded, PREFLIGHT_NOW)
                built += 1
            except ConfigError as exc:
                kind = f"late:{exc.field}"
                failures[kind] = failures.get(kind, 0) + 1
                if failures[kind] <= 3:
                    examples.append(f"{kind}: {_save('config', 'late', text.encode(), str(exc))}: {exc}"[:400])
        except ConfigError:
            rejected += 1
        except Exception as exc:  # anything but ConfigError is a traceback a shop owner would see
            kind = type(exc).__name__
            failures[kind] = failures.get(kind, 0) + 1
            if failures[kind] <= 3:
                examples.append(f"{kind}: {_save('config', kind, text.encode(), repr(exc))}: {exc!r}"[:400])
        slowest = max(slowest, time.perf_counter() - t0)
    assert dict(os.environ) == env_before
    return {"target": "agent.config.parse_config + preflight", "inputs": inputs, "accepted": accepted,
            "rejected": rejected, "built": built,
            "failures": failures, "examples": examples, "slowest_s": slowest,
            "seconds": time.perf_counter() - start}


def _job(args: tuple[str, int, int]) -> dict[str, Any]:
    target, inputs, seed = args
    if target == "config":
        return fuzz_config(inputs, seed)
    return fuzz_decoder(target, inputs, seed)


def run(quick: bool = False, per_decoder: int | None = None, config_inputs_n: int | None = None) -> dict[str, Any]:
    per_decoder = per_decoder or (20_000 if quick else 1_000_000)
    config_n = config_inputs_n or (2_000 if quick else 50_000)
    workers = max(1, os.cpu_count() or 1)
    parts = 8
    jobs: list[tuple[str, int, int]] = []
    for i, proto in enumerate(PROTOCOLS):
        jobs += [(proto, per_decoder // parts, 1000 * i + k) for k in range(parts)]
    jobs += [("config", config_n // 2, 99), ("config", config_n - config_n // 2, 98)]
    start = time.perf_counter()
    merged: dict[str, dict[str, Any]] = {}
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for res in pool.map(_job, jobs):
            key = res.get("protocol", "config")
            into = merged.setdefault(key, {"inputs": 0, "failures": {}, "examples": [], "seconds": 0.0,
                                           "slowest_s": 0.0})
            into["inputs"] += res["inputs"]
            into["seconds"] += res["seconds"]
            into["slowest_s"] = max(into["slowest_s"], res.get("slowest_feed_s", res.get("slowest_s", 0.0)))
            for k, v in res["failures"].items():
                into["failures"][k] = into["failures"].get(k, 0) + v
            into["examples"] += res["examples"]
            for k in ("events", "accepted", "rejected", "built"):
                if k in res:
                    into[k] = into.get(k, 0) + res[k]
    return {"targets": merged, "wall_s": time.perf_counter() - start, "workers": workers,
            "hang_threshold_s": HANG_SECONDS}


def main() -> None:
    quick = "--quick" in sys.argv
    result = run(quick=quick)
    write_result("fuzz", result)
    for name, r in result["targets"].items():
        print(f"{name:8} {r['inputs']:>9} inputs, failures {r['failures'] or 'none'}, "
              f"slowest {r['slowest_s'] * 1000:.1f} ms, {r['inputs'] / r['seconds']:.0f} inputs/s per core")
        for ex in r["examples"][:3]:
            print("    ", ex)
    print(json.dumps({"wall_s": result["wall_s"]}))


if __name__ == "__main__":
    main()
