"""``settleguard decode``: a capture file to event JSON lines (or receipt text)."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agent.cli.common import EX_DATAERR, EX_FAIL, EX_OK, err, system_zone, usage_error, zone_arg


def add_parser(sub: Any) -> None:
    dc = sub.add_parser("decode", help="decode a capture file to event JSON lines")
    dc.add_argument("--protocol", required=True, help="zvt | cn_ecr | jsonl | escpos | auto")
    dc.add_argument("--tz", help="zone for terminal timestamps (default: the system zone)")
    dc.add_argument("--text", action="store_true", help="print the decoded receipt text instead")
    dc.add_argument("--receipts", action="store_true", help="also print receipt events")
    dc.add_argument("--hex", action="store_true", help="the file is a hex dump (default for *.hex)")
    dc.add_argument("--option", action="append", metavar="KEY=VALUE",
                    help="decoder option, e.g. verify_lrc=false or lrc_init=127 (cn_ecr), transport=serial (zvt)")
    dc.add_argument("file")
    dc.set_defaults(func=cmd_decode)


def cmd_decode(args: argparse.Namespace) -> int:
    from drivers.clock import SYSTEM_CLOCK
    from drivers.events import event_to_json
    from drivers.protocols import UnknownProtocol, build_decoder

    tz = zone_arg(args.tz) or system_zone()
    path = Path(args.file)
    try:
        data = sys.stdin.buffer.read() if args.file == "-" else path.read_bytes()
    except OSError as exc:
        err(f"{args.file}: {exc.strerror}")
        return EX_DATAERR if isinstance(exc, FileNotFoundError) else EX_FAIL
    if args.hex or path.suffix == ".hex":
        # Hex dumps ("10 02 04 0f ...", as logic analysers and the test vectors store them).
        try:
            data = bytes.fromhex(data.decode("ascii", errors="strict"))
        except (UnicodeDecodeError, ValueError) as exc:
            err(f"{args.file}: not a hex dump ({exc}); drop --hex to read raw bytes")
            return EX_DATAERR
    # A capture's year is placed relative to when it was taken; the file's mtime is the best witness.
    received = (datetime.fromtimestamp(path.stat().st_mtime, UTC) if args.file != "-" else SYSTEM_CLOCK.now())
    options: dict[str, Any] = {}
    for item in args.option or []:
        key, sep, raw = item.partition("=")
        if not sep:
            return usage_error(f"--option takes KEY=VALUE (got {item!r})")
        try:
            options[key] = json.loads(raw)
        except ValueError:
            options[key] = raw
    try:
        decoder = build_decoder(args.protocol, tz=tz, options=options, source=args.protocol)
    except UnknownProtocol as exc:
        return usage_error(str(exc))
    except TypeError as exc:
        return usage_error(f"bad decoder option: {exc}")
    events = decoder.feed(data, received) + decoder.flush(received)
    out = sys.stdout
    for ev in events:
        if args.text:
            if ev.type == "receipt":
                for line in ev.lines:  # type: ignore[union-attr]
                    out.write(line + "\n")
                out.write("\n")
            continue
        if ev.type == "receipt" and not args.receipts:
            continue
        out.write(event_to_json(ev) + "\n")
    stats = decoder.stats
    if stats.bytes_skipped or stats.bad_frames:
        err(f"{args.file}: skipped {stats.bytes_skipped} byte(s), {stats.bad_frames} bad frame(s)"
             + (f" — {stats.last_error}" if stats.last_error else ""))
    for refused in decoder.take_rejected():
        # The daemon would keep these in the journal's quarantine; here they are only reported.
        err(f"{args.file}: refused ({refused.stage}): {refused.reason}")
    if not events and data:
        err(f"{args.file}: no events decoded as {args.protocol}")
        return EX_DATAERR
    return EX_OK
