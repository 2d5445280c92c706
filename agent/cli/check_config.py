"""``settleguard check-config``: validate a configuration file."""

from __future__ import annotations

import argparse
from typing import Any

from agent.cli.common import EX_CONFIG, EX_OK, ConfigError, err, load_config


def add_parser(sub: Any) -> None:
    cc = sub.add_parser("check-config", help="validate a configuration file")
    cc.add_argument("file")
    cc.set_defaults(func=cmd_check_config)


def cmd_check_config(args: argparse.Namespace) -> int:
    from agent.service.preflight import preflight
    from drivers.clock import SYSTEM_CLOCK

    try:
        loaded = load_config(args.file)
        # Everything `run` would build, built once: a value that parses but fails when used is refused here.
        preflight(loaded, SYSTEM_CLOCK.now())
    except ConfigError as exc:
        err(str(exc))
        return EX_CONFIG
    cfg = loaded.config
    print(f"{args.file}: ok — {len(cfg.source)} source(s), {len(cfg.channel)} channel(s), "
          f"{sum(1 for p in loaded.rule_params.values() if p.enabled)} rule(s) enabled, zone {loaded.tz}")
    derived = " (derived from the names: set [shop] id and till_id to choose)" if cfg.shop.ids_derived else ""
    print(f"webhook source {cfg.shop.event_source}{derived}")
    return EX_OK
