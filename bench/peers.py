"""Peers side by side, same bytes, same run (issue 20): ecrterm for ZVT, escpos-tools' esc2text for ESC/POS.

The peers are run from ``../shared/peers`` (their README says how); nothing of them is copied into this
repository. When the folder, a peer in it, or ``php`` is missing, the result says so and gives our figures
alone.

ZVT: every bare APDU vector of ``tests/data/zvt`` (the shared vectors, copied with provenance) is parsed
``N`` times by ecrterm's ``Packet.parse`` (in its own interpreter, ``PYTHONPATH`` = the peer) and decoded
``N`` times by our decoder (the APDU repeated ``N`` times as a TCP stream: framing, interpretation and the
event boundary), CPU time, interleaved run by run; the serial frame vectors likewise through ecrterm's
``parse_represented_data`` and our serial framing. Also checked: ecrterm reads a frame our ``frame_serial``
builds with a CRC byte of 0x10 (it used to lose sync on the stuffed form).

ESC/POS: each shared stream of ``tests/data/escpos`` (repeated to ~0.5 MB) and the 2,000-slip Chinese 签购单 workload
(``bench/escpos_templates.py``) turned into text by esc2text and into receipts *and* events (every template
tried) by ours, each as a whole process (CPU time of the child, user + system), interleaved; a 0-byte file
gives each side's fixed start-up cost, subtracted for the "net" ratio.

    python -m bench.peers [--quick] [--no-write]
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import ROOT, TESTDATA, write_result
from bench.escpos_templates import OURS as ESCPOS_OURS
from bench.escpos_templates import _cpu
from bench.escpos_templates import stream as slip_stream
from bench.inputs import SHANGHAI
from bench.marked import replace_section
from drivers.protocols import build_decoder

# ../shared/peers next to the checkout (main), or two levels up (a worktree under wt/); overridable.
PEER_DIRS = [Path(p) for p in [os.environ.get("SETTLEGUARD_PEERS", ""), str(ROOT.parent / "shared" / "peers"),
                               str(ROOT.parent.parent / "shared" / "peers")] if p]

# Runs in ecrterm's interpreter: per vector, parse it n times; prints {name: parses per CPU second or an error}.
# A bare APDU goes to Packet.parse; a serial frame through SerialTransport.read_message (unstuffing, CRC check,
# ACK) on an in-memory connection, then Packet.parse: ecrterm's own receive path (ecr.dismantle_serial_packet
# treats every DLE as doubled, so it is not used).
ECRTERM_SERIAL = """
from ecrterm.packets.base_packets import Packet
from ecrterm.transmission.transport_serial import SerialTransport

class Line:
    timeout = None
    def __init__(self, data):
        self.data, self.pos = data, 0
    def read(self, n):
        out = self.data[self.pos:self.pos + n]
        self.pos += len(out)
        return out
    def write(self, data):
        pass

def read_frame(data):
    transport = SerialTransport.__new__(SerialTransport)
    transport.connection = Line(data)
    ok, apdu = transport.read_message()
    return ok, bytes(apdu), transport.connection.pos
"""

ECRTERM_TIMING = ECRTERM_SERIAL + """
import json, sys, time
vectors = json.loads(sys.stdin.read()); n = int(sys.argv[1]); out = {}
def frame(data):
    ok, apdu, _ = read_frame(data)
    if not ok:
        raise ValueError("CRC mismatch")
    return Packet.parse(apdu)
for name, (kind, hexdata) in vectors.items():
    data = bytes.fromhex(hexdata)
    parse = Packet.parse if kind == "apdu" else frame
    try:
        parse(data)
    except Exception as exc:
        out[name] = "error: " + type(exc).__name__ + ": " + str(exc)[:80]
        continue
    t = time.process_time()
    for _ in range(n):
        parse(data)
    out[name] = n / (time.process_time() - t)
print(json.dumps(out))
"""

# ecrterm's serial reader on one frame followed by an ACK: CRC ok, and did it stop exactly at the frame's end?
ECRTERM_CRC_CHECK = ECRTERM_SERIAL + """
import sys
frame = bytes.fromhex(sys.argv[1])
try:
    ok, apdu, used = read_frame(frame + b"\\x06")
    print("reads it: CRC ok, in sync" if ok and used == len(frame) else
          f"CRC {'ok' if ok else 'mismatch'}, stopped at byte {used} of {len(frame)} (out of sync)")
except Exception as exc:
    print("fails: " + type(exc).__name__ + ": " + str(exc)[:80])
"""


def find_peers() -> dict[str, Any]:
    folder = next((d for d in PEER_DIRS if d.is_dir()), None)
    ecrterm = folder / "ecrterm" if folder else None
    esc2text = folder / "escpos-tools" / "esc2text.php" if folder else None
    php = shutil.which("php")
    return {
        "folder": str(folder) if folder else None,
        "ecrterm": str(ecrterm) if ecrterm and (ecrterm / "ecrterm").is_dir() else None,
        "esc2text": str(esc2text) if esc2text and esc2text.exists() and php else None,
        "php": php,
        "absent": ([] if folder else [f"../shared/peers (looked in {', '.join(map(str, PEER_DIRS))})"])
        + ([] if not folder or (ecrterm and (ecrterm / "ecrterm").is_dir()) else ["ecrterm/ in ../shared/peers"])
        + ([] if not folder or (esc2text and esc2text.exists()) else ["escpos-tools/esc2text.php"])
        + ([] if php else ["php (apt-get install -y php-cli php-mbstring php-intl)"]),
    }


# ---------------------------------------------------------------------------------------------- ZVT

def zvt_vectors() -> dict[str, tuple[str, str]]:
    """name -> ("apdu" | "frame", hex) for every ZVT vector: bare APDUs and serial frames."""
    out = {}
    for path in sorted((TESTDATA / "zvt").glob("*.hex")):
        data = bytes.fromhex(path.read_text())
        out[path.stem] = ("frame" if data[:2] == b"\x10\x02" else "apdu", data.hex())
    return out


def _ours_zvt(kind: str, data: bytes, n: int) -> tuple[float, float]:
    """Our APDUs (frames) per CPU second: the vector repeated n times, fed in 4 KiB reads."""
    stream = data * n
    received = datetime(2026, 12, 31, tzinfo=UTC)
    decoder = build_decoder("zvt", tz=SHANGHAI, options={"transport": "tcp" if kind == "apdu" else "serial"})
    t = time.process_time()
    for i in range(0, len(stream), 4096):
        decoder.feed(stream[i:i + 4096], received)
    decoder.flush(received)
    # Per copy of the vector, as ecrterm's figure is per parse of it (a few vectors are deliberately odd,
    # e.g. a length field that promises more than follows: whatever ours makes of them is timed the same).
    return n / (time.process_time() - t), decoder.stats.frames / n


def zvt_side_by_side(peers: dict[str, Any], runs: int, n: int) -> dict[str, Any]:
    vectors = zvt_vectors()
    env = {**os.environ, "PYTHONPATH": str(peers["ecrterm"] or "")}
    ours: dict[str, list[float]] = {k: [] for k in vectors}
    per_copy: dict[str, float] = {}
    theirs: dict[str, list[float]] = {k: [] for k in vectors}
    errors: dict[str, str] = {}
    for _ in range(runs):                               # interleaved: ecrterm (all vectors), ours (all vectors)
        if peers["ecrterm"]:
            proc = subprocess.run([sys.executable, "-c", ECRTERM_TIMING, str(n)], input=json.dumps(vectors),
                                  capture_output=True, text=True, env=env, timeout=600)
            if proc.returncode != 0:
                raise RuntimeError(f"ecrterm timing failed: {proc.stderr[-400:]}")
            for name, rate in json.loads(proc.stdout).items():
                if isinstance(rate, str):
                    errors[name] = rate
                else:
                    theirs[name].append(rate)
        for name, (kind, hexdata) in vectors.items():
            rate, per_copy[name] = _ours_zvt(kind, bytes.fromhex(hexdata), n)
            ours[name].append(rate)
    rows = []
    for name, (kind, hexdata) in vectors.items():
        row: dict[str, Any] = {"vector": name, "kind": kind, "bytes": len(hexdata) // 2,
                               "ours_per_s": statistics.median(ours[name]), "ours_apdus_per_copy": per_copy[name]}
        if per_copy[name] != 1:
            # A stream of several APDUs (ecrterm parses the first only) or one ours refuses as malformed:
            # timed, but not a like-for-like ratio.
            row["not_compared"] = f"ours framed {per_copy[name]:g} APDUs per copy"
        elif theirs[name]:
            row["ecrterm_per_s"] = statistics.median(theirs[name])
            row["ratio"] = row["ours_per_s"] / row["ecrterm_per_s"]
        elif name in errors:
            row["ecrterm_error"] = errors[name]
        rows.append(row)
    result: dict[str, Any] = {"repeats": n, "runs": runs, "vectors": rows}
    for kind in ("apdu", "frame"):
        ratios = sorted(r["ratio"] for r in rows if r["kind"] == kind and "ratio" in r)
        if ratios:
            result[f"{kind}_ratio"] = {"count": len(ratios), "min": ratios[0], "median": statistics.median(ratios),
                                       "max": ratios[-1]}
    result["ecrterm_could_not_parse"] = len(errors)
    result["not_compared"] = sum(1 for r in rows if "not_compared" in r)
    if peers["ecrterm"]:
        result["ecrterm_reads_our_crc_0x10_frame"] = _ecrterm_reads_crc_0x10(env)
    return result


def _ecrterm_reads_crc_0x10(env: dict[str, str]) -> dict[str, str]:
    """ecrterm's reader on a frame whose CRC has a byte 0x10: as frame_serial sends it, and stuffed (before)."""
    from drivers.protocols.zvt import crc_kermit, encode_status, frame_serial

    when = datetime(2026, 11, 27, 10, 0, tzinfo=SHANGHAI)
    for trace in range(1, 100_000):
        apdu = encode_status(amount_minor=990, time=when, trace_no=trace, receipt_no=trace % 10000,
                             terminal_id="28004869")
        crc = crc_kermit(apdu + b"\x03")
        if 0x10 in (crc & 0xFF, crc >> 8):
            break
    ours = frame_serial(apdu)
    stuffed = ours[:-2] + ours[-2:].replace(b"\x10", b"\x10\x10")
    out = {}
    for name, frame in (("frame_serial (CRC unstuffed)", ours), ("CRC stuffed (frame_serial before)", stuffed)):
        proc = subprocess.run([sys.executable, "-c", ECRTERM_CRC_CHECK, frame.hex()], capture_output=True,
                              text=True, env=env, timeout=60)
        out[name] = proc.stdout.strip() or proc.stderr.strip()[-200:]
    return out


# ------------------------------------------------------------------------------------------- ESC/POS

REPEAT_TO = 500_000  # bytes: each shared stream repeated to about this, so decoding outweighs start-up


def escpos_inputs() -> dict[str, bytes]:
    """The shared streams, each repeated to ~0.5 MB (one is 41 bytes: alone it would time start-up only),
    and the Chinese slip workload."""
    streams = {p.name: p.read_bytes() for p in sorted((TESTDATA / "escpos").glob("*.bin"))}
    streams.update({p.name: bytes.fromhex(p.read_text()) for p in sorted((TESTDATA / "escpos").glob("*.hex"))})
    out = {f"{name} x {max(1, REPEAT_TO // len(data)):,}": data * max(1, REPEAT_TO // len(data))
           for name, data in streams.items()}
    out["2,000 Chinese 签购单 (GB18030)"] = slip_stream(2000)
    return out


def escpos_side_by_side(peers: dict[str, Any], runs: int) -> dict[str, Any]:
    inputs = {"(empty file: start-up)": b"", **escpos_inputs()}
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    ours: dict[str, list[float]] = {k: [] for k in inputs}
    theirs: dict[str, list[float]] = {k: [] for k in inputs}
    with tempfile.TemporaryDirectory(prefix="sg-peers-") as tmp:
        paths = {}
        for i, (name, data) in enumerate(inputs.items()):
            paths[name] = Path(tmp) / f"{i}.bin"
            paths[name].write_bytes(data)
        for _ in range(runs):
            for name, path in paths.items():            # interleaved per input: esc2text, ours
                if peers["esc2text"]:
                    theirs[name].append(_cpu([peers["php"], peers["esc2text"], str(path)])[0])
                ours[name].append(_cpu([sys.executable, "-c", ESCPOS_OURS, str(path)], env)[0])
    base_ours = statistics.median(ours["(empty file: start-up)"])
    base_theirs = statistics.median(theirs["(empty file: start-up)"]) if theirs["(empty file: start-up)"] else None
    rows = []
    for name, data in inputs.items():
        row: dict[str, Any] = {"input": name, "bytes": len(data), "ours_cpu_s": statistics.median(ours[name])}
        if theirs[name]:
            row["esc2text_cpu_s"] = statistics.median(theirs[name])
            row["ratio_process"] = row["esc2text_cpu_s"] / row["ours_cpu_s"]
            if data and base_theirs is not None:
                net_ours, net_theirs = row["ours_cpu_s"] - base_ours, row["esc2text_cpu_s"] - base_theirs
                # Below ~20 ms a difference of medians is noise: no ratio (mostly images, which ours skips).
                if min(net_ours, net_theirs) >= 0.02:
                    row["ratio_net"] = net_theirs / net_ours
        rows.append(row)
    return {"runs": runs, "inputs": rows, "ours_startup_cpu_s": base_ours, "esc2text_startup_cpu_s": base_theirs}


# --------------------------------------------------------------------------------------------- report

def table(result: dict[str, Any]) -> str:
    peers, zvt, esc = result["peers"], result["zvt"], result["escpos"]
    lines = [f"`python -m bench.peers{' --quick' if result['quick'] else ''}` — written by the benchmark itself "
             f"({result['when']}). Peers from `{peers['folder']}` (never copied here); CPU time, medians of "
             f"interleaved runs, same bytes, same run."]
    if peers["absent"]:
        lines += ["", "**Absent here, so not compared: " + "; ".join(peers["absent"]) + ".**"]
    lines += ["", f"ZVT: ours (framing + interpretation + event boundary) vs ecrterm (`Packet.parse`; frames "
              f"through `SerialTransport.read_message` then `Packet.parse`), each vector x {zvt['repeats']}, "
              f"{zvt['runs']} runs:", "",
              "| vectors | count | ours / ecrterm: min | median | max |", "|---|---:|---:|---:|---:|"]
    for kind, label in (("apdu", "bare APDUs (`tests/data/zvt`)"), ("frame", "serial frames (DLE/CRC)")):
        r = zvt.get(f"{kind}_ratio")
        if r:
            lines.append(f"| {label} | {r['count']} | {r['min']:.1f}x | **{r['median']:.1f}x** | {r['max']:.1f}x |")
        else:
            lines.append(f"| {label} | 0 | - | ecrterm not run | - |")
    lines += ["", f"Not in the ratios: {zvt['ecrterm_could_not_parse']} vectors ecrterm refuses (malformed on "
              f"purpose, or layouts it does not know) and {zvt['not_compared']} that are not one APDU to ours "
              "(multi-APDU streams ecrterm parses only the first of, or vectors ours rejects); per-vector figures "
              "in `bench/out/peers.json`."]
    if "ecrterm_reads_our_crc_0x10_frame" in zvt:
        lines += ["", "ecrterm's serial reader (`SerialTransport.read_message`) on a frame whose CRC has a byte "
                  "0x10, then an ACK: " + "; ".join(f"{k}: **{v}**" for k, v in
                                                   zvt["ecrterm_reads_our_crc_0x10_frame"].items()) + "."]
    lines += ["", f"ESC/POS: esc2text (text only) vs ours (receipts + events, every template tried), whole "
              f"process each, {esc['runs']} runs. \"net\" subtracts each side's start-up (a 0-byte file: ours "
              f"{esc['ours_startup_cpu_s']:.3f} s, esc2text "
              + (f"{esc['esc2text_startup_cpu_s']:.3f} s" if esc['esc2text_startup_cpu_s'] is not None
                 else "not run") + ").", "",
              "| input | bytes | esc2text | ours | esc2text / ours (process) | (net) |",
              "|---|---:|---:|---:|---:|---:|"]
    for row in esc["inputs"]:
        if not row["bytes"]:
            continue
        peer = f"{row['esc2text_cpu_s']:.3f} s" if "esc2text_cpu_s" in row else "not run"
        ratio = f"{row['ratio_process']:.2f}x" if "ratio_process" in row else "-"
        net = f"{row['ratio_net']:.2f}x" if "ratio_net" in row else "(< 20 ms)"
        if row["input"].startswith("2,000"):
            ratio, net = f"**{ratio}**", f"**{net}**"
        lines.append(f"| {row['input']} | {row['bytes']:,} | {peer} | {row['ours_cpu_s']:.3f} s | {ratio} | {net} |")
    return "\n".join(lines)


def run(quick: bool) -> dict[str, Any]:
    peers = find_peers()
    runs = 3 if quick else 5
    return {"quick": quick, "when": datetime.now(UTC).isoformat(timespec="minutes"), "peers": peers,
            "zvt": zvt_side_by_side(peers, runs, 500 if quick else 2000),
            "escpos": escpos_side_by_side(peers, runs)}


def main() -> None:
    quick = "--quick" in sys.argv
    result = run(quick)
    write_result("peers", result)
    text = table(result)
    print(text)
    if "--no-write" not in sys.argv:
        replace_section(ROOT / "BENCHMARKS.md", "peers", text, heading="2b. Peers side by side (issue 20)")


if __name__ == "__main__":
    main()
