"""``settleguard template suggest CAPTURE`` and ``settleguard template test TEMPLATE CAPTURE``.

``suggest`` proposes a receipt template from a sample capture (the printer tap's ESC/POS bytes, or text
with one receipt per form feed) and shows, as TOML comments after it, what the template reads from each
receipt, so the output can be checked and saved as it is. ``test`` shows the events a template gives on a
capture, and says which receipts it could not read and why.
"""

from __future__ import annotations

import argparse
import sys
import tomllib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agent.cli.common import EX_DATAERR, EX_OK, err, system_zone, zone_arg


def add_parser(sub: Any) -> None:
    tp = sub.add_parser("template", help="make a receipt template from a sample capture, or test one")
    tsub = tp.add_subparsers(dest="template_command", required=True)
    sg = tsub.add_parser("suggest", help="propose a template TOML from a sample capture")
    sg.add_argument("capture", help="ESC/POS bytes from the printer tap, or text (receipts split by form feeds)")
    sg.add_argument("--name", default="shop_layout", help="the template's name (default: shop_layout)")
    sg.add_argument("--tz", help="zone for printed times (default: the system zone)")
    sg.set_defaults(func=cmd_suggest)
    tt = tsub.add_parser("test", help="show the events a template gives on a capture")
    tt.add_argument("template", help="a template TOML file")
    tt.add_argument("capture", help="ESC/POS bytes from the printer tap, or text (receipts split by form feeds)")
    tt.add_argument("--tz", help="zone for printed times (default: the system zone)")
    tt.set_defaults(func=cmd_test)


class CaptureError(Exception):
    pass


def read_capture(path: str, tz: Any) -> list[Any]:
    """The receipts in a capture file, PAN-masked, as the daemon's printer tap would see them."""
    from drivers.events import ReceiptText
    from drivers.pan import scrub_text
    from drivers.protocols.escpos import EscposDecoder

    try:
        p = Path(path)
        data = p.read_bytes()
        received = datetime.fromtimestamp(p.stat().st_mtime, UTC)
    except OSError as exc:
        raise CaptureError(f"{path}: {exc.strerror}") from None
    if p.suffix == ".hex":
        try:
            data = bytes.fromhex(data.decode("ascii"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise CaptureError(f"{path}: not a hex dump ({exc})") from None
    if any(b in data for b in (b"\x1b", b"\x1d", b"\x1c")):
        printer = EscposDecoder(tz=tz, source="capture")
        return [e for e in printer.feed(data, received) + printer.flush(received) if isinstance(e, ReceiptText)]
    for encoding in ("utf-8", "gb18030"):
        try:
            text = data.decode(encoding)
            break
        except UnicodeDecodeError:
            continue
    else:
        raise CaptureError(f"{path}: neither ESC/POS nor UTF-8/GB18030 text")
    return [ReceiptText(source="capture", time=received, lines=tuple(scrub_text(line) for line in part.splitlines()))
            for part in text.split("\f") if part.strip()]


def _describe(event: Any) -> str:
    from drivers.events import event_to_json
    return event_to_json(event)


def cmd_suggest(args: argparse.Namespace) -> int:
    from drivers.receipts import TemplateError, parse_template, read_receipt
    from drivers.receipts.suggest import suggest

    tz = zone_arg(args.tz) or system_zone()
    try:
        receipts = read_capture(args.capture, tz)
    except CaptureError as exc:
        err(str(exc))
        return EX_DATAERR
    if not receipts:
        err(f"{args.capture}: no receipt in the capture")
        return EX_DATAERR
    proposal = suggest([r.lines for r in receipts], name=args.name)
    try:
        template = parse_template(tomllib.loads(proposal.toml), f"{args.name} (suggested)")
    except (tomllib.TOMLDecodeError, TemplateError) as exc:   # a bug here, but say it rather than crash
        err(f"the suggested template does not load: {exc}")
        sys.stdout.write(proposal.toml)
        return EX_DATAERR
    out = sys.stdout
    out.write(proposal.toml)
    out.write("\n# What this template reads from each receipt of the sample:\n")
    read_any = False
    for i, receipt in enumerate(receipts, 1):
        events, marked = read_receipt(receipt, [template], tz=tz)
        if not events:
            why = (f"missing {marked.unread_field}" if marked.unread == "missing_field" else "no slip found")
            first = next((line.strip() for line in receipt.lines if line.strip()), "")
            out.write(f"# receipt {i}: nothing read ({why}) — {first[:40]}\n")
            continue
        read_any = True
        for event in events:
            out.write(f"# receipt {i}: {_describe(event)}\n")
    if not read_any:
        err("the suggested template reads nothing from the sample: its labels may be ones this does not know")
        return EX_DATAERR
    return EX_OK


def cmd_test(args: argparse.Namespace) -> int:
    from drivers.receipts import TemplateError, load_template, read_receipt

    tz = zone_arg(args.tz) or system_zone()
    try:
        template = load_template(args.template)
    except TemplateError as exc:
        err(str(exc))
        return EX_DATAERR
    try:
        receipts = read_capture(args.capture, tz)
    except CaptureError as exc:
        err(str(exc))
        return EX_DATAERR
    count = 0
    for i, receipt in enumerate(receipts, 1):
        events, marked = read_receipt(receipt, [template], tz=tz)
        for event in events:
            sys.stdout.write(_describe(event) + "\n")
        count += len(events)
        if marked.unread == "missing_field":
            err(f"receipt {i}: {template.name} fits but {marked.unread_field} is missing")
        elif not events:
            first = next((line.strip() for line in receipt.lines if line.strip()), "")
            err(f"receipt {i}: not this layout — {first[:40]}")
    err(f"{template.name}: {count} event(s) from {len(receipts)} receipt(s)")
    return EX_OK if count else EX_DATAERR
