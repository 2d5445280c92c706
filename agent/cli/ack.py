"""``settleguard ack``: answer an alert (voided, refunded, legit) by its short code, through the daemon or offline."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from agent.cli.common import DEFAULT_CONFIG, EX_CONFIG, EX_FAIL, EX_OK, ConfigError, err, load_config, state_dir


def add_parser(sub: Any) -> None:
    ak = sub.add_parser("ack", help="answer an alert: legitimate, voided or refunded (recorded with who and when)")
    ak.add_argument("id", metavar="CODE", help="the alert's short code from the message (e.g. K7QD), or its id; "
                    "an ambiguous one is refused with the candidates")
    which = ak.add_mutually_exclusive_group(required=True)
    which.add_argument("--legit", action="store_true",
                       help="the charge is genuine: dismiss the alert (needs --note with the reason)")
    which.add_argument("--voided", action="store_true",
                       help="voided on the terminal (before settlement); with a terminal line it is confirmed "
                            "when the terminal shows the void")
    which.add_argument("--refunded", action="store_true",
                       help="after settlement: it was refunded (on the terminal or at the acquirer)")
    ak.add_argument("--by", help="who acknowledges, recorded beside your login name (default: none)")
    ak.add_argument("--note", help="why, in a few words (required with --legit)")
    ak.add_argument("--state")
    ak.add_argument("--config", default=DEFAULT_CONFIG, help="used only when no daemon is running")
    ak.set_defaults(func=cmd_ack)


def cmd_ack(args: argparse.Namespace) -> int:
    """Through the running daemon's control socket; with no daemon, straight into the journal."""
    from agent.alerts.lifecycle import STAFF_ANSWERS
    from agent.service.control import RequestError, parse_request, request

    sdir = state_dir(args.state)
    answer = next(name for name in STAFF_ANSWERS if getattr(args, name))
    # The daemon records who we are from the socket itself; --by is only a name recorded beside it.
    payload = {"cmd": "ack", "id": args.id, "answer": answer, "by": args.by, "note": args.note}
    try:
        parse_request(json.dumps(payload).encode())   # the daemon's own checks, before anything is sent
    except RequestError as exc:
        err(str(exc))
        return EX_FAIL
    try:
        reply = request(sdir / "control.sock", payload)
    except OSError as exc:
        err(f"cannot reach the daemon at {sdir / 'control.sock'}: {exc}")
        return EX_FAIL
    if reply is None:
        reply = _ack_offline(args, sdir, payload)
        if reply is None:
            return EX_CONFIG
    if not reply.get("ok"):
        err(str(reply.get("error", "failed")))
        return EX_FAIL
    alert = reply["alert"]
    code = alert.get("code") or alert["id"]
    print(f"alert {code} ({alert['rule']}, {alert['id']}) is now {alert['state']} (revision {alert['revision']}),"
          f" recorded as {reply.get('actor', '?')}")
    return EX_OK


def _ack_offline(args: argparse.Namespace, sdir: Path, payload: dict[str, Any]) -> dict[str, Any] | None:
    """The daemon's own code path (the alert book), on the journal directly.

    The outbox rows written here go out when the daemon starts.
    """
    from agent.alerts.announce import Announcer
    from agent.alerts.book import AlertBook, has_terminal_line
    from agent.delivery.channels.factory import build_channels, routing
    from agent.service.control import local_actor
    from agent.store.journal import Journal
    from agent.store.schema import journal_path
    from drivers.clock import SYSTEM_CLOCK

    path = journal_path(sdir)
    if not path.exists():
        return {"ok": False, "error": f"no journal at {path} and no daemon running (--state DIR?)"}
    try:
        loaded = load_config(args.config)
    except ConfigError as exc:
        err(str(exc))
        return None
    primary, people = routing(loaded.config, build_channels(loaded.config, tz=loaded.tz, path=loaded.path))
    journal = Journal(path)
    try:
        book = AlertBook(journal, Announcer(journal, channels=primary, people_channels=people), tz=loaded.tz,
                         cutoff=loaded.config.settlement.cutoff_time,
                         terminal_line=has_terminal_line(s.protocol for s in loaded.config.source))
        with journal.transaction():
            reply = book.ack({**payload, "by": local_actor(payload["by"])}, SYSTEM_CLOCK.now())
    finally:
        journal.close()
    return reply
