"""``settleguard replay``: the full pipeline on captures, on simulated time."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from agent.cli.common import EX_CONFIG, EX_DATAERR, EX_OK, ConfigError, err, load_config, usage_error, zone_arg


def add_parser(sub: Any) -> None:
    rp = sub.add_parser("replay", help="run the full pipeline on captures, on simulated time; sends nothing")
    rp.add_argument("--config", required=True)
    rp.add_argument("--protocol", help="zvt | cn_ecr | jsonl | escpos | auto (default: the first source's)")
    rp.add_argument("--source", metavar="NAME",
                    help="decode as this [[source]]: its protocol and decoder options (default: the first "
                         "source whose protocol is the one decoded, so its options, e.g. lrc_init, apply "
                         "as in the daemon; none matching: the decoder's defaults)")
    rp.add_argument("--tz", help="zone for terminal timestamps (default: the config's)")
    rp.add_argument("--json", action="store_true", help="alert lifecycle as JSON lines on stdout (each with its "
                    "notice kind and time, in the shop's offset)")
    rp.add_argument("--until", metavar="TIME", help="run the schedule (review, cutoff, reminders) on to this "
                    "shop-local time, e.g. 2026-11-28T11:00 (default: an hour after the last event)")
    rp.add_argument("--state", help="keep the replay journal here (default: a temporary directory)")
    rp.add_argument("captures", nargs="+", metavar="CAPTURE")
    rp.set_defaults(func=cmd_replay)


def cmd_replay(args: argparse.Namespace) -> int:
    from datetime import datetime

    from rich.console import Console

    from agent.alerts.report import alert_line, notification_json, phone_table, summary_table
    from agent.replay import decode_captures, phone_days, replay
    from agent.sources import decoder_options

    try:
        loaded = load_config(args.config)
    except ConfigError as exc:
        err(str(exc))
        return EX_CONFIG
    tz = zone_arg(args.tz) or loaded.tz
    sources = loaded.config.source
    if args.source is not None:
        chosen = next((s for s in sources if s.name == args.source), None)
        if chosen is None:
            return usage_error(f"--source {args.source}: no such [[source]] in {args.config} "
                               f"(there are: {', '.join(s.name for s in sources) or 'none'})")
        if args.protocol and args.protocol != chosen.protocol:
            return usage_error(f"--protocol {args.protocol} contradicts source {chosen.name} "
                               f"(protocol {chosen.protocol}); give one of them")
        protocol = chosen.protocol
    else:
        protocol = args.protocol or (sources[0].protocol if sources else "auto")
        chosen = next((s for s in sources if s.protocol == protocol), None)
    options = decoder_options(chosen) if chosen is not None else {}
    until = None
    if args.until:
        try:
            until = datetime.fromisoformat(args.until)
        except ValueError:
            return usage_error(f"--until {args.until!r} is not a time like 2026-11-28T11:00")
        until = until if until.tzinfo else until.replace(tzinfo=loaded.tz)
    paths = [Path(p) for p in args.captures]
    for p in paths:
        if not p.is_file():
            err(f"{p}: no such capture file")
            return EX_DATAERR
    try:
        events, stats = decode_captures(paths, protocol, tz, options=options)
    except ValueError as exc:
        return usage_error(str(exc))
    except TypeError as exc:
        return usage_error(f"bad decoder option in source {chosen.name if chosen else '?'}: {exc}")
    if not events:
        err("no events decoded from " + ", ".join(map(str, paths)) + f" as {protocol}")
        return EX_DATAERR
    err_console = Console(stderr=True)
    out_console = Console(highlight=False)

    def listener(item: object) -> None:
        if args.json:
            line = notification_json(item, loaded.tz)
            if line is not None:
                sys.stdout.write(line + "\n")
        else:
            out_console.print(alert_line(item, loaded.tz))

    result = replay(loaded, events, state=Path(args.state) if args.state else None, listener=listener,
                    until=until)
    console = err_console if args.json else out_console
    console.print(summary_table(result, stats, loaded.tz))
    if result.first is not None and result.end is not None:
        if result.people_channels:
            console.print(phone_table(phone_days(result.phones, loaded.tz, result.first, result.end,
                                                 result.people_channels)))
        else:
            console.print("no channel people read is configured: no phone would receive anything")
    return EX_OK
