"""``settleguard simulate``: play a simulated shop day as a terminal would send it."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import date
from typing import Any
from zoneinfo import ZoneInfo

from agent.cli.common import EX_OK, usage_error, zone_arg
from drivers.clock import SYSTEM_CLOCK


def add_parser(sub: Any) -> None:
    s = sub.add_parser("simulate", help="play a simulated shop day as a terminal would send it")
    s.add_argument("--protocol", default="jsonl", choices=["jsonl", "zvt", "cn_ecr", "escpos"])
    g = s.add_mutually_exclusive_group()
    g.add_argument("--pty", action="store_true", help="open a pty pair and print the device path")
    g.add_argument("--port", help="write to a serial port (pyserial URL)")
    g.add_argument("--out", help="write the bytes to a file")
    s.add_argument("--seed", type=int, default=1)
    s.add_argument("--date", type=_day, help="the shop day to play, YYYY-MM-DD (default: today in the shop's zone, "
                   "so a daemon reading it live sees current charges)")
    s.add_argument("--speed", type=float, default=600.0, help="simulated seconds per real second (0 = flat out)")
    s.add_argument("--scenario", default="demo", help="demo | clean | mixed")
    s.add_argument("--count", type=int, help="ordinary sales in the day (clean/mixed)")
    s.add_argument("--profile", help="the shop: restaurant | convenience | boutique | cafe (cafe: both wires, the "
                   "terminal and the till; needs --out and --till-out). Default: the demo shop")
    s.add_argument("--till-out", metavar="FILE", help="with a both-wires profile: write the till's wire here "
                   "(its printed 小票, or its orders as JSON lines: --till-protocol)")
    s.add_argument("--till-protocol", default="escpos", choices=["escpos", "jsonl"],
                   help="the till's wire: escpos (receipts read by the bundled cn_sales_receipt template) or jsonl")
    s.add_argument("--tz", help="shop time zone (default Asia/Shanghai)")
    s.add_argument("--labels", help="with --out: write the anomaly labels as JSON lines here")
    s.add_argument("--baudrate", type=int, default=9600)
    s.add_argument("--wait", type=float, default=2.0, help="with --pty: seconds to wait before playing")
    s.set_defaults(func=cmd_simulate)


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date like 2026-11-27") from None


def cmd_simulate(args: argparse.Namespace) -> int:
    import time

    from agent.sim.day import build_day
    from agent.sim.terminal import PtyTerminal, play, write_file

    tz = zone_arg(args.tz) or ZoneInfo("Asia/Shanghai")
    day = args.date or SYSTEM_CLOCK.now().astimezone(tz).date()
    if args.profile is not None:
        return _simulate_profile(args, tz, day)
    if args.till_out:
        return usage_error("--till-out needs a shop with both wires: --profile cafe")
    try:
        events = build_day(args.scenario, seed=args.seed, tz=tz, count=args.count, day=day)
    except ValueError as exc:
        return usage_error(str(exc))
    if args.out:
        with open(args.out, "wb") as fh:
            n = write_file(fh, events, args.protocol)
        if args.labels:
            with open(args.labels, "w", encoding="utf-8") as lf:
                for e in events:
                    lf.write(json.dumps({"at": e.at.isoformat(), "label": e.label, "reprint": e.reprint,
                                         "voucher_no": getattr(e.event, "voucher_no", None)}) + "\n")
        print(f"wrote {n} events ({args.protocol}) to {args.out}", file=sys.stderr)
        return EX_OK
    if args.pty:
        term = PtyTerminal()
        print(term.device, flush=True)
        print(f"simulated terminal on {term.device}; start the agent on it, playing in {args.wait:g}s",
              file=sys.stderr)
        time.sleep(args.wait)
        try:
            play(events, term.write, args.protocol, speed=args.speed)
            time.sleep(1.0)  # let the reader drain before the master closes
        finally:
            term.close()
        return EX_OK
    if args.port:
        from drivers.transports.serial import SerialWriter

        with SerialWriter(args.port, baudrate=args.baudrate) as writer:
            play(events, writer.write, args.protocol, speed=args.speed)
        return EX_OK
    return usage_error("simulate needs one of --pty, --port DEV or --out FILE")


def _simulate_profile(args: argparse.Namespace, tz: ZoneInfo, day: date) -> int:
    """A day of one of the evaluation's shops; a both-wires shop writes the terminal's and the till's wire."""
    from agent.sim.day import build_day
    from agent.sim.shops import PROFILES, TILL_PROFILES
    from agent.sim.terminal import encode_event
    from agent.sim.till_day import build_till_day
    from agent.sim.wire_till import encode as encode_order
    from drivers.events import EcrRequest, Order

    profile = PROFILES.get(args.profile) or TILL_PROFILES.get(args.profile)
    if profile is None:
        return usage_error(f"--profile {args.profile}: no such shop (known: "
                           f"{', '.join([*PROFILES, *TILL_PROFILES])})")
    if not args.out:
        return usage_error("--profile writes a day to files: give --out (and --till-out for a both-wires shop)")
    scenario = "clean" if args.scenario == "demo" else args.scenario
    try:
        if profile.till is None:
            if args.till_out:
                return usage_error(f"--till-out: shop {profile.name} has no till wire (both wires: "
                                   f"{', '.join(TILL_PROFILES)})")
            events = build_day(scenario, seed=args.seed, tz=tz, count=args.count, day=day, profile=profile)
        else:
            if not args.till_out:
                return usage_error(f"shop {profile.name} has two wires: give --till-out FILE for the till's")
            events = build_till_day(scenario, seed=args.seed, tz=tz, count=args.count, day=day, profile=profile)
    except ValueError as exc:
        return usage_error(str(exc))
    # The till's ECR requests (EcrRequest) travel the other direction of the link: a JSON-lines terminal
    # wire carries them as the till software's own lines; a zvt/cn_ecr capture here is the terminal's
    # direction only, so they stay out (their late approvals then read as two charges for one sale).
    terminal = [e for e in events if not isinstance(e.event, Order)
                and (args.protocol == "jsonl" or not isinstance(e.event, EcrRequest))]
    orders = [e.event for e in events if isinstance(e.event, Order)]
    with open(args.out, "wb") as fh:
        for e in terminal:
            fh.write(encode_event(args.protocol, e.event, reprint=e.reprint))
    if args.till_out:
        with open(args.till_out, "wb") as fh:
            for o in orders:
                fh.write(encode_order(o, args.till_protocol))
    if args.labels:
        with open(args.labels, "w", encoding="utf-8") as lf:
            for e in terminal:
                if e.label is not None or e.reprint:
                    lf.write(json.dumps({"at": e.at.isoformat(), "label": e.label, "reprint": e.reprint,
                                         "voucher_no": getattr(e.event, "voucher_no", None)}) + "\n")
    print(f"wrote {len(terminal)} terminal events ({args.protocol}) to {args.out}"
          + (f" and {len(orders)} till orders ({args.till_protocol}) to {args.till_out}" if args.till_out else ""),
          file=sys.stderr)
    return EX_OK
