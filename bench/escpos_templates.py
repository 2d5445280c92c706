"""ESC/POS event decoding (templates included) against escpos-tools' esc2text, same bytes, same run (issue 18).

The input is text-heavy: 2,000 Chinese slips in GB18030 under FS & (~1.03 MB), terminal 签购单 (the
simulator's layout, varied amounts, kinds, entry modes, merchant and cardholder copies, a reprint now and then):
what a card till's printer mostly prints (issue 20). ``--mixed`` makes every other one a till 小票 (a sales
receipt with items), issue 18's workload. Ours
turns the bytes into receipts *and* events (every template tried); esc2text turns them into text only.

Both are timed as whole processes (CPU time, user + system, from ``os.wait4``: interpreter start-up
included on both sides), interleaved run by run, medians reported; ours is also timed in-process
(decoding only). esc2text is run from ``../shared/peers/escpos-tools`` when it and ``php`` are present;
otherwise that is said and only our figures are given.

    python -m bench.escpos_templates [--runs 7] [--slips 2000] [--mixed] [--quick] [--no-write]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from bench.common import ROOT, write_result
from bench.marked import replace_section

SHANGHAI = ZoneInfo("Asia/Shanghai")
RECEIVED = datetime(2026, 11, 28, 12, 0, tzinfo=SHANGHAI)
ESC2TEXT = ROOT.parent.parent / "shared" / "peers" / "escpos-tools" / "esc2text.php"
ESC2TEXT_FALLBACK = Path("/work/shared/peers/escpos-tools/esc2text.php")

# Runs in a fresh interpreter: what a user pays to decode the file with our decoder, start-up included.
OURS = """
import sys
from datetime import datetime
from zoneinfo import ZoneInfo
from drivers.protocols.escpos import EscposEventDecoder
tz = ZoneInfo("Asia/Shanghai"); received = datetime(2026, 11, 28, 12, 0, tzinfo=tz)
data = open(sys.argv[1], "rb").read()
d = EscposEventDecoder(tz=tz)
events = []
for i in range(0, len(data), 4096):
    events += d.feed(data[i:i + 4096], received)
events += d.flush(received)
print(sum(1 for e in events if e.type != "receipt"))
"""


def sales_receipt(i: int) -> list[str]:
    qty = 1 + i % 3
    price = 250 + (i * 37) % 4000
    total = qty * price + 1280
    paid = (total // 1000 + 1) * 1000
    return [
        "      好味道便利店 静安店",
        f"销售单号：2026112{i:07d}",
        f"收银员：{1 + i % 9:02d}",
        f"销售时间：2026-11-27 {8 + i % 12:02d}:{i % 60:02d}:{(i * 7) % 60:02d}",
        "--------------------------------",
        "品名          数量   单价    金额",
        f"矿泉水 550ml    {qty}   {price // 100}.{price % 100:02d}   {qty * price // 100}.{qty * price % 100:02d}",
        "全麦面包        1   12.80   12.80",
        "--------------------------------",
        f"合计：{total // 100}.{total % 100:02d}",
        f"实收：{paid // 100}.{paid % 100:02d}",
        f"找零：{(paid - total) // 100}.{(paid - total) % 100:02d}",
        "支付方式：现金",
        "     谢谢惠顾 欢迎再来",
    ]


def stream(slips: int = 2000, *, mixed: bool = False) -> bytes:
    """``slips`` receipts in GB18030 under FS &: all terminal 签购单 (merchant and cardholder copies, a
    reprint now and then: what a card till's printer mostly prints), or with ``mixed`` every other one a till
    小票 instead."""
    from agent.sim.wire_escpos import slip_lines
    from drivers.events import Transaction
    from drivers.protocols.escpos import encode_text_receipt

    base = Transaction(source="escpos", kind="sale", result="approved", amount_minor=128000,
                       time=datetime(2026, 11, 27, 9, 0, tzinfo=SHANGHAI), terminal_id="15221155",
                       merchant_id="104152253311021", batch_no="000001", voucher_no="000001",
                       rrn="925498330001", auth_code="123456", currency="CNY", card="622576******6691",
                       card_type="UnionPay", entry_mode="chip", operator="01")
    kinds = ("sale", "sale", "sale", "void", "refund")
    entries = ("chip", "swipe", "contactless")
    out = []
    for i in range(slips):
        if mixed and i % 2:
            out.append(encode_text_receipt(sales_receipt(i)))
            continue
        t = replace(base, kind=kinds[i % 5], amount_minor=100 + i * 7919 % 500000, voucher_no=f"{i:06d}",
                    rrn=f"92549833{i:04d}", entry_mode=entries[i % 3],
                    time=(base.time or RECEIVED) + timedelta(seconds=17 * i),
                    original_voucher_no=f"{max(i - 2, 0):06d}" if kinds[i % 5] == "void" else None)
        copy = "持卡人存根" if (i // 2) % 2 else "商户存根"
        out.append(encode_text_receipt(slip_lines(t, copy=copy, reprint=i % 50 == 7)))
    return b"".join(out)


def _cpu(args: list[str], env: dict[str, str] | None = None) -> tuple[float, str]:
    """The child's CPU time (user + system) and its stdout."""
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.DEVNULL, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read().decode("utf-8", "replace")
    if proc.returncode != 0:
        raise RuntimeError(f"{args[0]} exited {proc.returncode}")
    return usage.ru_utime + usage.ru_stime, text


def _in_process(data: bytes) -> tuple[float, int, float]:
    from drivers.protocols.escpos import EscposEventDecoder

    decoder = EscposEventDecoder(tz=SHANGHAI)
    t0 = time.process_time()
    events = []
    for i in range(0, len(data), 4096):
        events += decoder.feed(data[i:i + 4096], RECEIVED)
    events += decoder.flush(RECEIVED)
    total = time.process_time() - t0
    # Without templates: the printer decoder alone (what esc2text does: bytes to text).
    printer = EscposEventDecoder(tz=SHANGHAI).printer
    t0 = time.process_time()
    for i in range(0, len(data), 4096):
        printer.feed(data[i:i + 4096], RECEIVED)
    printer.flush(RECEIVED)
    text_only = time.process_time() - t0
    return total, sum(1 for e in events if e.type != "receipt"), text_only


def run(runs: int, slips: int, mixed: bool = False) -> dict[str, Any]:
    data = stream(slips, mixed=mixed)
    esc2text = next((p for p in (ESC2TEXT, ESC2TEXT_FALLBACK) if p.exists()), None)
    php = shutil.which("php")
    peer_reason = None if esc2text and php else (
        "esc2text not run: " + ("php is not installed (apt-get install php-cli php-mbstring php-intl)" if not php
                                else "../shared/peers/escpos-tools/esc2text.php is absent"))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with tempfile.NamedTemporaryFile(suffix=".bin", delete=False) as fh:
        fh.write(data)
        path = fh.name
    try:
        ours_proc, peer_proc, ours_dec, ours_text = [], [], [], []
        events = 0
        for _ in range(runs):                       # interleaved: peer, ours (process), ours (in-process)
            if peer_reason is None:
                assert php and esc2text
                secs, _text = _cpu([php, str(esc2text), path])
                peer_proc.append(secs)
            secs, said = _cpu([sys.executable, "-c", OURS, path], env)
            ours_proc.append(secs)
            events = int(said.strip())
            dec, _, text_only = _in_process(data)
            ours_dec.append(dec)
            ours_text.append(text_only)
    finally:
        os.unlink(path)
    result: dict[str, Any] = {
        "input": {"receipts": slips, "bytes": len(data), "encoding": "gb18030", "mixed": mixed},
        "events": events, "runs": runs,
        "ours_process_cpu_s": ours_proc, "ours_decode_cpu_s": ours_dec, "ours_text_only_cpu_s": ours_text,
        "ours_process_median_s": statistics.median(ours_proc), "ours_decode_median_s": statistics.median(ours_dec),
        "ours_text_only_median_s": statistics.median(ours_text),
        "templates_share": 1 - statistics.median(ours_text) / statistics.median(ours_dec),
    }
    if peer_reason is None:
        peer = statistics.median(peer_proc)
        result.update(esc2text_cpu_s=peer_proc, esc2text_median_s=peer,
                      ratio_process=peer / statistics.median(ours_proc),
                      ratio_decode=peer / statistics.median(ours_dec))
    else:
        result["esc2text"] = peer_reason
    return result


def table(result: dict[str, Any], runs: int, mixed: bool) -> str:
    inp = result["input"]
    rows = ["| | CPU time | esc2text / ours |", "|---|---:|---:|"]
    peer = result.get("esc2text_median_s")
    rows.append(f"| esc2text, whole process | {peer:.3f} s | 1 |" if peer else
                f"| esc2text | {result.get('esc2text', 'not run')} | - |")
    for key, label in (("ours_process_median_s", "ours, whole process (imports and template loading included)"),
                       ("ours_decode_median_s", "ours, decoding only (in-process, `EscposEventDecoder.feed`)"),
                       ("ours_text_only_median_s", "ours, printer text only (no templates)")):
        ratio = f"**{peer / result[key]:.2f}x**" if peer else "-"
        rows.append(f"| {label} | {result[key]:.3f} s | {ratio} |")
    return "\n".join([
        f"`python -m bench.escpos_templates --runs {runs}{' --mixed' if mixed else ''}` — written by the benchmark "
        f"itself. {inp['receipts']:,} receipts, {inp['bytes']:,} bytes, GB18030 under `FS &`: "
        + ("half terminal 签购单, half till 小票" if mixed else
           "terminal 签购单 (merchant and cardholder copies, a reprint now and then), what a card till's printer "
           "mostly prints") + f"; {result['events']:,} events. CPU time, {runs} interleaved runs, medians. "
        f"Templates are {result['templates_share']:.0%} of our decoding time.", "", *rows])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--slips", type=int, default=2000)
    ap.add_argument("--mixed", action="store_true", help="every other receipt a till 小票 (issue 18's workload)")
    ap.add_argument("--quick", action="store_true", help="3 runs")
    ap.add_argument("--no-write", action="store_true", help="do not rewrite BENCHMARKS.md's section")
    args = ap.parse_args()
    runs = 3 if args.quick else args.runs
    result = run(runs, args.slips, args.mixed)
    write_result("escpos_templates", result)
    if not args.no_write and args.slips == 2000:
        replace_section(ROOT / "BENCHMARKS.md", "escpos_templates_mixed" if args.mixed else "escpos_templates",
                        table(result, runs, args.mixed))
    for key in ("input", "events", "ours_process_median_s", "ours_decode_median_s", "ours_text_only_median_s",
                "templates_share", "esc2text_median_s", "ratio_process", "ratio_decode", "esc2text"):
        if key in result:
            print(f"{key}: {result[key]}")


if __name__ == "__main__":
    main()
