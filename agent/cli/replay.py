"""``settleguard replay``: the full pipeline on captures, on simulated time."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from agent.cli.common import EX_CONFIG, EX_DATAERR, EX_FAIL, EX_OK, ConfigError, err, load_config, usage_error, zone_arg


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
    rp.add_argument("--capture", action="append", default=[], metavar="NAME=[PROTOCOL:]FILE",
                    help="one wire of several, replayed as the [[source]] NAME with its decoder options (the "
                         "protocol defaults to that source's); repeat for each wire, e.g. --capture "
                         "terminal=cn_ecr:day.bin --capture till=escpos:printer.bin: merged by time")
    rp.add_argument("captures", nargs="*", metavar="CAPTURE")
    rp.set_defaults(func=cmd_replay)


def cmd_replay(args: argparse.Namespace) -> int:
    from agent.replay import CaptureError, decode_captures
    from agent.sources import decoder_options

    try:
        loaded = load_config(args.config)
    except ConfigError as exc:
        err(str(exc))
        return EX_CONFIG
    tz = zone_arg(args.tz) or loaded.tz
    sources = loaded.config.source
    if args.capture or not args.captures:
        return _replay_wires(args, loaded, tz)
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
    paths = [Path(p) for p in args.captures]
    for p in paths:
        if not p.is_file():
            err(f"{p}: no such capture file")
            return EX_DATAERR
    try:
        events, stats = decode_captures(paths, protocol, tz, options=options)
    except CaptureError as exc:
        err(str(exc))
        return EX_DATAERR
    except ValueError as exc:
        return usage_error(str(exc))
    except TypeError as exc:
        return usage_error(f"bad decoder option in source {chosen.name if chosen else '?'}: {exc}")
    return _run_replay(args, loaded, events, stats,
                       "no events decoded from " + ", ".join(map(str, paths)) + f" as {protocol}")


def _replay_wires(args: argparse.Namespace, loaded: Any, tz: Any) -> int:
    """``--capture NAME=[PROTOCOL:]FILE`` repeated: each wire decoded as its [[source]], merged by time."""
    from agent.replay import CaptureError, Wire, decode_wires
    from agent.sources import decoder_options
    from drivers.protocols import PROTOCOLS

    if not args.capture:
        return usage_error("replay needs capture files, or --capture NAME=[PROTOCOL:]FILE for each wire")
    if args.captures or args.protocol or args.source:
        return usage_error("--capture names each wire's source and protocol: give no --protocol, --source or "
                           "plain capture files with it")
    sources = {s.name: s for s in loaded.config.source}
    wires: list[Wire] = []
    for spec in args.capture:
        name, eq, rest = spec.partition("=")
        if not eq or not name or not rest:
            return usage_error(f"--capture {spec!r}: expected NAME=[PROTOCOL:]FILE, e.g. terminal=cn_ecr:day.bin")
        protocol, colon, path = rest.partition(":")
        if not colon or (protocol not in PROTOCOLS and protocol != "auto"):
            protocol, path = "", rest      # no protocol given (or a path with a colon in it)
        cfg = sources.get(name)
        if cfg is None and not protocol:
            return usage_error(f"--capture {spec}: no [[source]] named {name} in {args.config} to take the protocol "
                               f"from (there are: {', '.join(sources) or 'none'}); write {name}=PROTOCOL:{path}")
        if cfg is not None and protocol and protocol != cfg.protocol:
            return usage_error(f"--capture {spec}: source {name} is {cfg.protocol}, not {protocol}")
        if name in {w.name for w in wires}:
            return usage_error(f"--capture {spec}: source {name} given twice (one file per wire)")
        p = Path(path)
        if not p.is_file():
            err(f"{p}: no such capture file")
            return EX_DATAERR
        if cfg is None:
            err(f"note: no [[source]] named {name} in {args.config}: {p} is decoded with the {protocol} decoder's "
                f"defaults")
        if cfg is not None:
            wires.append(Wire(name, protocol or cfg.protocol, p, decoder_options(cfg)))
        else:
            wires.append(Wire(name, protocol, p))
    try:
        events, stats = decode_wires(wires, tz)
    except CaptureError as exc:
        err(str(exc))
        return EX_DATAERR
    except ValueError as exc:
        return usage_error(str(exc))
    except TypeError as exc:
        return usage_error(f"bad decoder option in a source: {exc}")
    return _run_replay(args, loaded, events, stats,
                       "no events decoded from " + ", ".join(f"{w.name}={w.path}" for w in wires))


def _run_replay(args: argparse.Namespace, loaded: Any, events: Any, stats: dict[str, Any], nothing: str) -> int:
    """``events`` is a stream (agent.replay.Captures): whether it holds anything, and whether a capture
    breaks part-way, is known only as it is replayed."""
    import sqlite3
    import tempfile
    from datetime import datetime

    from rich.console import Console

    from agent.alerts.report import alert_line, notification_json, phone_table, summary_table
    from agent.replay import CaptureError, phone_days, replay
    from agent.service.control import listening

    until = None
    if args.until:
        try:
            until = datetime.fromisoformat(args.until)
        except ValueError:
            return usage_error(f"--until {args.until!r} is not a time like 2026-11-28T11:00")
        until = until if until.tzinfo else until.replace(tzinfo=loaded.tz)
    err_console = Console(stderr=True)
    out_console = Console(highlight=False)

    def listener(item: object) -> None:
        if args.json:
            line = notification_json(item, loaded.tz)
            if line is not None:
                sys.stdout.write(line + "\n")
        else:
            out_console.print(alert_line(item, loaded.tz))

    if args.state and listening(Path(args.state) / "control.sock"):
        # A bulk load into the running daemon's journal would hold its lock for thousands of rows and
        # checkpoint its pages without fsync: a replay's journal is never the daemon's own.
        return usage_error(f"--state {args.state} is the running daemon's state directory: give the replay "
                           "a directory of its own (or none: a temporary one)")
    try:
        result = replay(loaded, events, state=Path(args.state) if args.state else None, listener=listener,
                        until=until)
    except CaptureError as exc:
        err(str(exc))
        return EX_DATAERR
    except (OSError, sqlite3.OperationalError) as exc:
        if not _no_room(exc):
            raise
        where = args.state or tempfile.gettempdir()
        err(f"cannot write the replay's journal in {where} ({exc}): free space there, or give --state a "
            "directory on a disk with room, and run the replay again")
        return EX_FAIL
    if result.first is None:
        err(nothing)
        return EX_DATAERR
    console = err_console if args.json else out_console
    console.print(summary_table(result, stats, loaded.tz))
    if result.first is not None and result.end is not None:
        if result.people_channels:
            console.print(phone_table(phone_days(result.phones, loaded.tz, result.first, result.end,
                                                 result.people_channels)))
        else:
            console.print("no channel people read is configured: no phone would receive anything")
    return EX_OK


def _no_room(exc: BaseException) -> bool:
    """A disk that is full or cannot be written (the journal's directory): the person can fix that."""
    import errno

    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES)
    text = str(exc)
    return "disk is full" in text or "unable to open database" in text or "readonly database" in text
