"""``settleguard alerts``: list alerts from the journal."""

from __future__ import annotations

import argparse
import json
from typing import Any

from agent.cli.common import DEFAULT_CONFIG, EX_FAIL, EX_OK, err, loaded_zone, state_dir

DEFAULT_LIMIT = 200


def _positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"--limit takes a whole number of 1 or more (got {text!r})")
    return n


def add_parser(sub: Any) -> None:
    al = sub.add_parser("alerts", help="list alerts from the journal")
    al.add_argument("--open", action="store_true")
    al.add_argument("--json", action="store_true")
    al.add_argument("--state")
    al.add_argument("--limit", type=_positive, default=DEFAULT_LIMIT, metavar="N",
                    help=f"show the newest N alerts (default {DEFAULT_LIMIT}); says how many older ones it left out")
    al.add_argument("--all", action="store_true", help="show every alert")
    al.add_argument("--config", default=DEFAULT_CONFIG, help="for the shop's time zone (optional)")
    al.set_defaults(func=cmd_alerts)


def cmd_alerts(args: argparse.Namespace) -> int:
    from agent.alerts.lifecycle import ACTIVE_STATES
    from agent.store.journal import Journal
    from agent.store.schema import journal_path

    path = journal_path(state_dir(args.state))
    if not path.exists():
        err(f"no journal at {path} (is the state directory right? --state DIR)")
        return EX_FAIL
    journal = Journal(path)
    try:
        states = ACTIVE_STATES if args.open else None
        limit = None if args.all else args.limit
        alerts = journal.alerts(states=states, limit=limit, newest=True)
        left_out = journal.count_alerts(states=states) - len(alerts)
        dead = journal.dead_letters(None, oldest_first=True)
        zone = loaded_zone(args)
    finally:
        journal.close()
    # Never a silent cut: say how many older alerts are not shown, and how to see them.
    note = (f"另有 {left_out} 条较早的告警未显示 / {left_out} older alert(s) not shown: --limit N or --all"
            if left_out > 0 else None)
    if args.json:
        for a in alerts:
            print(json.dumps(a.to_dict(), ensure_ascii=False))
        if note:
            err(note)
        return EX_OK
    from rich.console import Console
    from rich.table import Table

    from agent.units import format_money

    table = Table(title="settleguard alerts", show_lines=True)
    table.add_column("code", no_wrap=True)
    table.add_column("rule / state", no_wrap=True)
    table.add_column("voucher", no_wrap=True)
    table.add_column("why / 原因", ratio=1)
    for a in alerts:
        t = a.transactions[-1] if a.transactions else None
        when = t.time.astimezone(zone).strftime("%m-%d %H:%M") if t and t.time else ""
        what = (f"{t.voucher_no or t.receipt_no or '-'}\n{format_money(t.amount_minor, t.currency)}\n{when}"
                if t else "")
        table.add_row(a.code or a.id[:12], f"{a.rule} {a.severity}\n{a.state} (rev {a.revision})", what,
                      f"{a.reason_zh}\n{a.reason}")
    console = Console()
    if note:
        console.print(note, highlight=False)
    console.print(table)
    if dead:
        console.print(f"{len(dead)} message(s) could not be delivered (dead letters); fix the channel, then see"
                      " `settleguard doctor`:")
        for row in dead[:20]:
            console.print(f"  {row['updated']}  {row['channel']}  {row['kind']}  alert {row['alert_id'] or '-'}:"
                          f" {row['last_error']}", highlight=False)
    return EX_OK
