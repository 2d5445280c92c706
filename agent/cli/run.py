"""``settleguard run``: the daemon (systemd runs this)."""

from __future__ import annotations

import argparse
from typing import Any

from agent.cli.common import DEFAULT_CONFIG, EX_CONFIG, ConfigError, err, load_config, state_dir


def add_parser(sub: Any) -> None:
    r = sub.add_parser("run", help="the daemon (systemd runs this)")
    r.add_argument("--config", default=DEFAULT_CONFIG)
    r.add_argument("--state", help="state directory (default $STATE_DIRECTORY, else /var/lib/settleguard)")
    r.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    r.set_defaults(func=cmd_run)


def cmd_run(args: argparse.Namespace) -> int:
    from agent.service.daemon import Daemon, StateError
    from agent.service.logs import setup_logging

    setup_logging(args.log_level)
    try:
        loaded = load_config(args.config)
    except ConfigError as exc:
        err(str(exc))
        return EX_CONFIG
    daemon = Daemon(loaded, state_dir(args.state))
    try:
        return daemon.run_forever()
    except (ConfigError, StateError) as exc:
        # One plain line, exit 78: the unit's RestartPreventExitStatus= stops a restart loop that
        # cannot fix a configuration or a state directory.
        err(str(exc))
        return EX_CONFIG
