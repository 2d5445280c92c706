"""``settleguard doctor``: what is wrong, in one table."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from agent.cli.common import DEFAULT_CONFIG, EX_FAIL, EX_OK, state_dir


def add_parser(sub: Any) -> None:
    dr = sub.add_parser("doctor", help="check ports, permissions, config, journal, clock and endpoints")
    dr.add_argument("--config", default=DEFAULT_CONFIG)
    dr.add_argument("--state", help="state directory (default $STATE_DIRECTORY, else /var/lib/settleguard)")
    dr.add_argument("--network", action="store_true",
                    help="also open a TCP connection to each channel's host (never sends a message)")
    dr.add_argument("--json", action="store_true")
    dr.set_defaults(func=cmd_doctor)


def cmd_doctor(args: argparse.Namespace) -> int:
    from agent.service.doctor import render_text, run_checks

    checks = run_checks(Path(args.config), state_dir(args.state), network=args.network)
    bad = [c for c in checks if c.status == "fail"]
    if args.json:
        print(json.dumps({"ok": not bad, "checks": [c.to_dict() for c in checks]}, ensure_ascii=False, indent=2))
        return EX_FAIL if bad else EX_OK
    from rich.console import Console
    from rich.table import Table

    style = {"ok": "green", "warn": "yellow", "fail": "bold red", "skip": "dim"}
    table = Table(title="settleguard doctor")
    for col in ("check", "status", "detail"):
        table.add_column(col, overflow="fold")
    for c in checks:
        table.add_row(c.name, f"[{style[c.status]}]{c.status}[/]", c.detail)
    console = Console(highlight=False)
    console.print(table)
    print(render_text(checks))
    return EX_FAIL if bad else EX_OK
