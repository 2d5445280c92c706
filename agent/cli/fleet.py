"""``settleguard fleet`` (head office's view of the chain) and ``settleguard fleet watch`` (CHAIN-001).

Both read the JetStream stream the tills publish to (docs/FLEET.md); neither needs a till's config.
Heavy imports (nats, rich) happen inside the commands, so other commands do not pay for them.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from agent.cli.common import EX_FAIL, EX_OK, err, usage_error

_SECRET_HELP = "env:NAME or file:PATH (never the secret itself: argv is visible to every user)"


def _connection_options(p: argparse.ArgumentParser, *, inherit: bool) -> None:
    # On `watch` the same options default to SUPPRESS, so `fleet --url X watch` keeps X (argparse would
    # otherwise overwrite the parent's value with the sub-command's default).
    def d(value: Any) -> Any:
        return argparse.SUPPRESS if inherit else value

    from agent.fleet.names import DEFAULT_STREAM, DEFAULT_URL, PASSWORD_ENV, TOKEN_ENV, USER_ENV
    p.add_argument("--url", default=d(DEFAULT_URL), help=f"head office's NATS (default {DEFAULT_URL})")
    p.add_argument("--stream", default=d(DEFAULT_STREAM), help=f"the JetStream stream (default {DEFAULT_STREAM})")
    p.add_argument("--token", default=d(None), metavar="REF", help=f"{_SECRET_HELP}; default ${TOKEN_ENV}")
    p.add_argument("--user", default=d(None), help=f"default ${USER_ENV}")
    p.add_argument("--password", default=d(None), metavar="REF", help=f"{_SECRET_HELP}; default ${PASSWORD_ENV}")
    p.add_argument("--creds", default=d(None), metavar="FILE", help="NKEY/JWT credentials file")
    p.add_argument("--tls-ca", default=d(None), metavar="FILE", help="CA bundle that signed the server's certificate")
    p.add_argument("--timeout", type=float, default=d(10.0), metavar="S", help="per request (default 10)")


def add_parser(sub: Any) -> None:
    fl = sub.add_parser("fleet", help="head office: every till's health, open alerts and dead letters (NATS)",
                        description="Read-only view over the chain's JetStream stream: each till's last "
                        "heartbeat (stale after its interval times --stale), open alerts by shop with "
                        "deadlines, dead letters. Reads what is there and exits.")
    _connection_options(fl, inherit=False)
    fl.add_argument("--json", action="store_true", help="one JSON object for machines")
    fl.add_argument("--stale", default="3x", metavar="FACTOR",
                    help="stale after this many heartbeat intervals of silence (default 3x)")
    fl.set_defaults(func=cmd_fleet)
    subs = fl.add_subparsers(dest="fleet_command", required=False, metavar="{watch}")
    wa = subs.add_parser("watch", help="optional: the chain-wide rule CHAIN-001 as a durable consumer",
                         description="Same masked card, same amount, two tills of the chain within --window: "
                         "publishes an alert to each affected till's alert subject. Runs until signalled.")
    _connection_options(wa, inherit=True)
    wa.add_argument("--window", default="10m", help="how close in time the two charges are (default 10m)")
    wa.add_argument("--late", default="1h",
                    help="how far behind a shop may forward after its uplink was down (default 1h)")
    from agent.fleet.names import DEFAULT_DURABLE
    wa.add_argument("--durable", default=DEFAULT_DURABLE, help=f"consumer name (default {DEFAULT_DURABLE})")
    wa.add_argument("--once", action="store_true", help="judge what is pending, then exit (tests, cron)")
    wa.set_defaults(func=cmd_watch)


def _nats_options(args: argparse.Namespace) -> Any:
    from agent.fleet.stream import NatsOptions
    if not args.timeout > 0:
        raise ValueError("--timeout takes seconds above 0")
    return NatsOptions(url=args.url, stream=args.stream, token=args.token, user=args.user, password=args.password,
                       creds=args.creds, tls_ca=args.tls_ca, timeout=args.timeout)


def cmd_fleet(args: argparse.Namespace) -> int:
    import asyncio

    from agent.fleet.stream import FleetError
    from agent.fleet.view import gather, parse_factor
    from drivers.clock import SYSTEM_CLOCK

    try:
        factor = parse_factor(args.stale)
        options = _nats_options(args)
    except ValueError as exc:
        return usage_error(str(exc))
    try:
        view = asyncio.run(gather(options, SYSTEM_CLOCK.now(), factor))
    except FleetError as exc:
        err(str(exc))
        return EX_FAIL
    if args.json:
        print(json.dumps(view.to_json(), ensure_ascii=False, indent=2))
    else:
        from agent.fleet.render import render
        render(view)
    return EX_OK


def cmd_watch(args: argparse.Namespace) -> int:
    import asyncio
    import signal

    from agent.fleet.chain import Finding
    from agent.fleet.stream import FleetError
    from agent.fleet.watch import WatchOptions, watch
    from agent.units import format_money, parse_duration
    from drivers.clock import SYSTEM_CLOCK

    try:
        options = _nats_options(args)
        wopts = WatchOptions(window=parse_duration(args.window), late=parse_duration(args.late),
                             durable=args.durable, once=args.once)
    except ValueError as exc:
        return usage_error(str(exc))
    if wopts.window.total_seconds() <= 0:
        return usage_error("--window must be above 0")

    def report(f: Finding) -> None:
        print(f"CHAIN-001 {f.first.card} {format_money(f.first.amount_minor, f.first.currency)}: "
              f"{f.first.shop_id}/{f.first.till_id} {f.first.time.isoformat()} + "
              f"{f.second.shop_id}/{f.second.till_id} {f.second.time.isoformat()}", flush=True)

    async def main() -> Any:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        return await watch(options, wopts, SYSTEM_CLOCK, stop=stop, report=report)

    try:
        result = asyncio.run(main())
    except FleetError as exc:
        err(str(exc))
        return EX_FAIL
    err(f"fleet watch: read {result.read} transaction message(s), {result.findings} finding(s), "
        f"{result.published} alert(s) published, {result.duplicates} already in the stream, "
        f"{result.warmed} re-read into the window, {result.skipped} skipped")
    return EX_OK
