"""Peers on the same inputs: py3-ecrterm for ZVT, escpos-tools' esc2text for ESC/POS.

Each peer is fetched with the ordinary registry client into bench/.peers/
(git-ignored) and, when it can be had, installed into its own virtual
environment there, so it never touches settleguard's dependencies. When a
peer cannot be obtained from a registry this machine reaches, that is
recorded with the client's own words, and the comparison falls back to the
figure quoted in issue 9. No peer code is copied into the repository.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from typing import Any

from bench.common import LINE_RATE_115200, ROOT, TESTDATA, repeat, write_result
from bench.inputs import SHANGHAI, escpos_stream, zvt_apdu_stream, zvt_status_apdu
from drivers.protocols import build_decoder

PEERS = ROOT / "bench" / ".peers"
ISSUE_ECRTERM_APDUS_PER_S = 15_000
ISSUE_ESC2TEXT_MB_PER_S = 4.0

# Runs inside the peer's own venv: parse the status APDU repeatedly, print APDUs/s.
ECRTERM_TIMING = """
import sys, time
from ecrterm.packets.base_packets import Packet
apdu = bytes.fromhex(sys.argv[1]); n = int(sys.argv[2])
Packet.parse(apdu)
t = time.perf_counter()
for _ in range(n):
    Packet.parse(apdu)
print(n / (time.perf_counter() - t))
"""


def _client(args: list[str], timeout: float = 180) -> tuple[bool, str]:
    try:
        proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, str(exc)
    tail = (proc.stdout + proc.stderr).strip().splitlines()[-3:]
    return proc.returncode == 0, " | ".join(tail)


def ecrterm_peer() -> dict[str, Any]:
    download = PEERS / "download"
    download.mkdir(parents=True, exist_ok=True)
    tried = []
    for name in ("py3-ecrterm", "ecrterm"):
        ok, said = _client([sys.executable, "-m", "pip", "download", "--no-deps", "--dest", str(download), name])
        tried.append({"name": name, "ok": ok, "pip": said})
        if ok:
            break
    else:
        return {"peer": "py3-ecrterm", "ran": False, "tried": tried,
                "reason": "neither 'py3-ecrterm' nor 'ecrterm' can be downloaded from the package index this "
                          "machine reaches"}
    venv = PEERS / "ecrterm-venv"
    if not (venv / "bin" / "python").exists():
        ok, said = _client([sys.executable, "-m", "venv", str(venv)])
        if not ok:
            return {"peer": "py3-ecrterm", "ran": False, "tried": tried, "reason": f"venv failed: {said}"}
    wheel = sorted(download.iterdir())[-1]
    ok, said = _client([str(venv / "bin" / "python"), "-m", "pip", "install", str(wheel)], timeout=600)
    if not ok:
        return {"peer": "py3-ecrterm", "ran": False, "tried": tried, "reason": f"install failed: {said}"}
    rates = []
    for _ in range(3):
        ok, said = _client([str(venv / "bin" / "python"), "-c", ECRTERM_TIMING, zvt_status_apdu().hex(), "20000"])
        if not ok:
            return {"peer": "py3-ecrterm", "ran": False, "tried": tried, "reason": f"timing script failed: {said}"}
        rates.append(float(said.split(" | ")[-1]))
    return {"peer": "py3-ecrterm", "ran": True, "tried": tried, "package": wheel.name,
            "apdus_per_s_median": sorted(rates)[1], "apdus_per_s_runs": rates}


def esc2text_peer() -> dict[str, Any]:
    """esc2text is PHP from Packagist; look for it where this machine can fetch packages."""
    checks: list[dict[str, Any]] = []
    ok, said = _client([sys.executable, "-m", "pip", "download", "--no-deps", "--dest", str(PEERS / "download"),
                        "escpos-tools"])
    checks.append({"registry": "PyPI", "name": "escpos-tools", "found": ok, "client": said})
    if shutil.which("npm"):
        ok, said = _client(["npm", "view", "escpos-tools", "name", "version"], timeout=60)
        checks.append({"registry": "npm", "name": "escpos-tools", "found": ok, "client": said})
    if shutil.which("apt-cache"):
        ok, said = _client(["apt-cache", "show", "escpos-tools"], timeout=60)
        checks.append({"registry": "Debian", "name": "escpos-tools", "found": ok, "client": said})
    found = [c for c in checks if c["found"]]
    return {"peer": "escpos-tools esc2text", "ran": False, "checks": checks,
            "reason": ("found in " + ", ".join(str(c["registry"]) for c in found) + " but not wired up: check by hand")
            if found else "esc2text is PHP published on Packagist, which this machine cannot reach; no registry "
                          "it reaches (PyPI, npm, Debian) carries it"}


def zvt_ours(runs: int) -> dict[str, Any]:
    data = zvt_apdu_stream(20_000)
    received = datetime(2026, 12, 31, tzinfo=UTC)

    def once() -> float:
        decoder = build_decoder("zvt", tz=SHANGHAI, options={"transport": "tcp"})
        t = time.perf_counter()
        for i in range(0, len(data), 4096):
            decoder.feed(data[i:i + 4096], received)
        decoder.flush(received)
        return time.perf_counter() - t

    timing = repeat(once, runs)
    secs = timing["median_s"]
    return {"apdus": 20_000, "bytes": len(data), "apdus_per_s": 20_000 / secs, "mb_per_s": len(data) / secs / 1e6,
            "x_line_rate": len(data) / secs / LINE_RATE_115200, "timing": timing}


def escpos_ours(runs: int) -> dict[str, Any]:
    data = escpos_stream(100)
    received = datetime(2026, 12, 31, tzinfo=UTC)

    def once() -> float:
        decoder = build_decoder("escpos", tz=SHANGHAI)
        t = time.perf_counter()
        for i in range(0, len(data), 4096):
            decoder.feed(data[i:i + 4096], received)
        decoder.flush(received)
        return time.perf_counter() - t

    timing = repeat(once, runs)
    secs = timing["median_s"]
    return {"bytes": len(data), "mb_per_s": len(data) / secs / 1e6, "x_line_rate": len(data) / secs / LINE_RATE_115200,
            "timing": timing}


def escpos_correctness() -> dict[str, Any]:
    """All 15 ESC/POS test streams plus a GBK receipt with FS &: no exception, text where the source says."""
    from agent.sim.day import build_day
    from agent.sim.wire_escpos import encode as encode_slip
    from drivers.events import ReceiptText, Transaction

    received = datetime(2026, 11, 27, 12, tzinfo=UTC)
    folder = TESTDATA / "escpos"
    streams = {p.name: p.read_bytes() for p in sorted(folder.glob("*.bin"))}
    streams.update({p.name: bytes.fromhex(p.read_text()) for p in sorted(folder.glob("*.hex"))})
    rows = []
    for name, data in streams.items():
        decoder = build_decoder("escpos", tz=SHANGHAI)
        try:
            events = decoder.feed(data, received) + decoder.flush(received)
            error = None
        except Exception as exc:  # recorded, not raised: the table says which stream broke
            events, error = [], repr(exc)
        receipts = [e for e in events if isinstance(e, ReceiptText)]
        row: dict[str, Any] = {"stream": name, "bytes": len(data), "error": error, "receipts": len(receipts),
                               "bytes_skipped": decoder.stats.bytes_skipped, "bad_frames": decoder.stats.bad_frames}
        expected = folder / (name.rsplit(".", 1)[0] + ".expected.txt")
        if expected.exists():
            want = [x for x in expected.read_text(encoding="utf-8").splitlines() if x.strip()]
            got = [x for r in receipts for x in r.lines if x.strip()]
            row["matches_expected_text"] = got == want
        rows.append(row)
    # A UnionPay slip as a Chinese till prints it: ESC @, FS & (Chinese mode), GBK text, cut.
    sale = next(e.event for e in build_day("demo", seed=2) if isinstance(e.event, Transaction))
    slip = encode_slip(sale)
    decoder = build_decoder("escpos", tz=SHANGHAI)
    events = decoder.feed(slip, received) + decoder.flush(received)
    txns = [e for e in events if isinstance(e, Transaction)]
    gbk = {"stream": "simulated UnionPay slip (GBK, FS &)", "bytes": len(slip), "has_fs_and": b"\x1c&" in slip,
           "transactions": len(txns),
           "amount_ok": bool(txns) and txns[0].amount_minor == sale.amount_minor,
           "voucher_ok": bool(txns) and txns[0].voucher_no == sale.voucher_no}
    return {"streams": rows, "gbk_fs_and": gbk, "streams_total": len(rows),
            "streams_with_error": sum(1 for r in rows if r["error"])}


def run(quick: bool = False) -> dict[str, Any]:
    runs = 3 if quick else 5
    ecr = ecrterm_peer()
    esc = esc2text_peer()
    zvt = zvt_ours(runs)
    escpos = escpos_ours(runs)
    zvt["vs_peer"] = zvt["apdus_per_s"] / ecr["apdus_per_s_median"] if ecr.get("ran") else None
    zvt["vs_issue_figure"] = zvt["apdus_per_s"] / ISSUE_ECRTERM_APDUS_PER_S
    escpos["vs_issue_figure"] = escpos["mb_per_s"] / ISSUE_ESC2TEXT_MB_PER_S
    return {"ecrterm": ecr, "esc2text": esc, "zvt_ours": zvt, "escpos_ours": escpos,
            "escpos_correctness": escpos_correctness(),
            "issue_figures": {"ecrterm_apdus_per_s": ISSUE_ECRTERM_APDUS_PER_S,
                              "esc2text_mb_per_s": ISSUE_ESC2TEXT_MB_PER_S}}


def main() -> None:
    result = run(quick="--quick" in sys.argv)
    write_result("peers", result)
    print("py3-ecrterm:", "ran" if result["ecrterm"]["ran"] else f"not run: {result['ecrterm']['reason']}")
    print("esc2text:", result["esc2text"]["reason"])
    z, e = result["zvt_ours"], result["escpos_ours"]
    print(f"ours zvt: {z['apdus_per_s']:.0f} APDUs/s ({z['vs_issue_figure']:.2f}x the issue's ecrterm figure)")
    print(f"ours escpos: {e['mb_per_s']:.1f} MB/s ({e['vs_issue_figure']:.2f}x the issue's esc2text figure)")
    c = result["escpos_correctness"]
    print(f"escpos streams: {c['streams_total']} decoded, {c['streams_with_error']} with an error; "
          f"GBK FS & slip: {c['gbk_fs_and']}")


if __name__ == "__main__":
    main()
