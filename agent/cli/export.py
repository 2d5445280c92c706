"""``settleguard export``: the journal's events as JSON lines, for ``replay --protocol jsonl``.

The monthly tuning loop (README, "Tuning on last month"): export last month from the till's journal,
replay it with a changed configuration on another machine, compare. What comes out is Event JSON
(ARCHITECTURE.md): each transaction as each wire saw it (the sightings, not the merged row, so reprints
and conflicting copies replay as they happened), receipts (with their verdict when a slip was not
understood), the till's ECR requests, settlements and till orders, in the order received. Cards were
masked before they were journalled; nothing else is added or dropped.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any

from agent.cli.common import DEFAULT_CONFIG, EX_FAIL, EX_OK, err, loaded_zone, state_dir, usage_error


def add_parser(sub: Any) -> None:
    ex = sub.add_parser("export", help="write the journal's events as JSON lines (replay --protocol jsonl reads "
                                       "them)")
    ex.add_argument("--since", required=True, metavar="WHEN",
                    help="how far back: a duration like 30d or 12h, or a shop-local date/time like 2026-11-01 "
                         "or 2026-11-01T09:00")
    ex.add_argument("--until", metavar="WHEN", help="up to (not including) this: same forms (default: now)")
    ex.add_argument("--source", metavar="NAME", help="only events from this [[source]]")
    ex.add_argument("--out", metavar="FILE", help="write here instead of standard output")
    ex.add_argument("--state", help="the state directory holding the journal (default: $STATE_DIRECTORY or "
                                    "/var/lib/settleguard)")
    ex.add_argument("--config", default=DEFAULT_CONFIG, help="for the shop's time zone (optional)")
    ex.set_defaults(func=cmd_export)


def parse_when(text: str, now: datetime, tz: tzinfo) -> datetime:
    """``30d`` (that long before now) or an ISO date/time (shop-local unless it carries an offset)."""
    from agent.units import UnitError, parse_duration

    try:
        return now - parse_duration(text)
    except (UnitError, ValueError):
        pass
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is neither a duration like 30d nor a date like 2026-11-01") from None
    return when if when.tzinfo else when.replace(tzinfo=tz)


def cmd_export(args: argparse.Namespace) -> int:
    from agent.store.queries import open_read_only
    from agent.store.schema import StoreError, journal_path
    from drivers.clock import SYSTEM_CLOCK

    tz = loaded_zone(args)
    now = SYSTEM_CLOCK.now()
    try:
        since = parse_when(args.since, now, tz)
        until = parse_when(args.until, now, tz) if args.until else now + timedelta(seconds=1)
    except ValueError as exc:
        return usage_error(f"--since/--until: {exc}")
    if until <= since:
        return usage_error(f"--until ({until:%Y-%m-%d %H:%M}) is not after --since ({since:%Y-%m-%d %H:%M})")
    path = journal_path(state_dir(args.state))
    if not path.exists():
        err(f"no journal at {path} (is the state directory right? --state DIR)")
        return EX_FAIL
    try:
        with open_read_only(path) as reader:
            rows = reader.journal_events(since, until, args.source)
    except StoreError as exc:
        err(f"{path}: {exc}")
        return EX_FAIL
    text = "".join(data + "\n" for _, _, data in rows)
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    sources = sorted({s for _, s, _ in rows})
    err(f"{len(rows)} event(s) from {since.astimezone(tz):%Y-%m-%d %H:%M} to {until.astimezone(tz):%Y-%m-%d %H:%M}"
        + (f" ({', '.join(sources)})" if sources else "")
        + ("; replay them: settleguard replay --config FILE --protocol jsonl " + (args.out or "EXPORT")
           if rows else ""))
    return EX_OK
