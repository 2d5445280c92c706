"""``settleguard check-config``: validate a configuration file."""

from __future__ import annotations

import argparse
from typing import Any

from agent.cli.common import EX_CONFIG, EX_OK, ConfigError, err, load_config


def add_parser(sub: Any) -> None:
    cc = sub.add_parser("check-config", help="validate a configuration file")
    cc.add_argument("file")
    cc.add_argument("--strict", action="store_true",
                    help="a channel secret (env:/file:) that cannot be read now is an error, not a warning: "
                         "for the till itself, where the service must be able to send")
    cc.set_defaults(func=cmd_check_config)


def cmd_check_config(args: argparse.Namespace) -> int:
    from agent.config import unresolved_secrets
    from agent.service.preflight import preflight
    from drivers.clock import SYSTEM_CLOCK

    try:
        loaded = load_config(args.file)
        missing = unresolved_secrets(loaded.config)
        for where, problem, fix in missing:
            if args.strict:
                err(f"{args.file}: {where}: {problem}\n  fix: {fix}")
            else:
                effect = ("this person cannot sign in to the till page" if where.startswith("web.")
                          else "the service cannot send on this channel")
                err(f"warning: {args.file}: {where}: {problem} ({effect} until it is fixed; replay does not "
                    f"need it)\n  fix: {fix}")
        if missing and args.strict:
            return EX_CONFIG
        # Everything `run` would build, built once: a value that parses but fails when used is refused here.
        # Secrets that cannot be read were reported above; the rest is built as the service would build it.
        preflight(loaded, SYSTEM_CLOCK.now(), sending=not missing)
        if missing:   # the channels whose secrets do read: their values checked as sending would check them
            unreadable = {where.rsplit(".", 1)[0] for where, _, _ in missing}
            if loaded.config.web is not None and not any(w.startswith("web.") for w in unreadable):
                try:
                    loaded.config.web.resolved()
                except ValueError as exc:
                    raise ConfigError(args.file, "web", str(exc)) from None
            for i, ch in enumerate(loaded.config.channel):
                where = f"channel[{i}] ({ch.name})"
                if ch.enabled and where not in unreadable:
                    try:
                        ch.resolved()
                    except ValueError as exc:
                        raise ConfigError(args.file, where, str(exc)) from None
    except ConfigError as exc:
        err(str(exc))
        return EX_CONFIG
    cfg = loaded.config
    print(f"{args.file}: ok{' (with warnings)' if missing else ''} — {len(cfg.source)} source(s), "
          f"{len(cfg.channel)} channel(s), {sum(1 for p in loaded.rule_params.values() if p.enabled)} rule(s) "
          f"enabled, zone {loaded.tz}")
    shop = cfg.shop
    # The ids name this till in every CloudEvent, NATS subject and metric of a chain: show them, and say
    # when they are only derived (a renamed shop or a new host name would change a derived one).
    print(f"shop id {shop.shop_id}" + ("" if shop.id else
          f" (derived from [shop] name; set [shop] id = \"{shop.shop_id}\" to keep it)"))
    print(f"till id {shop.till_slug}" + ("" if shop.till_id else
          f" (derived from the host name; set [shop] till_id = \"{shop.till_slug}\" to keep it)"))
    print(f"event source {shop.event_source}")
    return EX_OK
