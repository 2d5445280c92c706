"""``settleguard demo``: everything on the embedded default, on a simulated terminal."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(sub: Any) -> None:
    d = sub.add_parser("demo", help="everything on the embedded default, on a simulated terminal")
    d.add_argument("--fast", action="store_true", help="finish in seconds")
    d.add_argument("--protocol", default="cn_ecr", choices=["jsonl", "zvt", "cn_ecr", "escpos"],
                   help="what the simulated terminal speaks")
    d.add_argument("--keep", metavar="DIR", help="keep the state directory (journal, evidence) in DIR and the "
                   "till page serving after the day, until Ctrl-C")
    d.add_argument("--serve", action="store_true", help="keep the till page serving after the day, until Ctrl-C "
                   "(make demo does this at a terminal)")
    d.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    from agent.service.logs import setup_logging
    from agent.sim.demo import run_demo

    setup_logging("WARNING", journald=False)
    return run_demo(fast=args.fast, protocol=args.protocol, keep=args.keep, serve=args.serve)
