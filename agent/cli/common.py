"""What every command shares: exit codes, error printing, zones and default paths.

Exit codes: 0 ok, 1 runtime failure, 2 usage, 65 bad input data, 78 bad configuration.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

# Not agent.config itself: it pulls in pydantic and the rule catalogue, which only commands that read a
# configuration need (load_config below imports it on first use).
from agent.config_errors import EX_CONFIG, ConfigError, system_zone

if TYPE_CHECKING:
    from agent.config import LoadedConfig

EX_OK, EX_FAIL, EX_USAGE, EX_DATAERR = 0, 1, 2, 65
DEFAULT_CONFIG = "/etc/settleguard/settleguard.toml"
DEFAULT_STATE = "/var/lib/settleguard"

__all__ = ["DEFAULT_CONFIG", "DEFAULT_STATE", "EX_CONFIG", "EX_DATAERR", "EX_FAIL", "EX_OK", "EX_USAGE", "ConfigError",
           "err", "load_config", "loaded_zone", "state_dir", "system_zone", "usage_error", "zone_arg"]


def load_config(path: str | Path) -> LoadedConfig:
    """:func:`agent.config.load_config`, imported when a command first reads a configuration."""
    from agent.config import load_config as load

    return load(path)


def err(message: str) -> None:
    print(f"settleguard: {message}", file=sys.stderr)


def zone_arg(name: str | None) -> ZoneInfo | None:
    if not name:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise SystemExit(usage_error(f"unknown time zone {name!r}")) from None


def usage_error(message: str) -> int:
    err(message)
    return EX_USAGE


def state_dir(arg: str | None) -> Path:
    return Path(arg or os.environ.get("STATE_DIRECTORY", "").split(":")[0] or DEFAULT_STATE)


def loaded_zone(args: argparse.Namespace) -> ZoneInfo | Any:
    """The shop's zone from --config when it loads, else the system zone (for display only)."""
    config = getattr(args, "config", None)
    if config and Path(config).exists():
        try:
            return load_config(config).tz
        except ConfigError:
            pass
    return system_zone()
