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
                err(f"warning: {args.file}: {where}: {problem} ({effect} until it is set; replay does not "
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
    derived = " (derived from the names: set [shop] id and till_id to choose)" if cfg.shop.ids_derived else ""
    print(f"webhook source {cfg.shop.event_source}{derived}")
    return EX_OK
