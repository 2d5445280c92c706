"""What the command line needs from the configuration without loading it: exit code, error, system zone.

Kept apart from :mod:`agent.config` (pydantic, the rule catalogue, the transports) so that commands which
never read a configuration (``decode``, ``--help``, ``simulate``) start without importing any of that;
:mod:`agent.config` re-exports all three, so ``agent.config.ConfigError`` is this very class.
"""

from __future__ import annotations

import os
from datetime import tzinfo
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

EX_CONFIG = 78


class ConfigError(Exception):
    """A configuration a person must fix: names the file, line (when known) and field."""

    def __init__(self, file: str, field: str, message: str, line: int | None = None) -> None:
        self.file, self.field, self.message, self.line = file, field, message, line
        where = f"{file}, line {line}" if line else file
        super().__init__(f"{where}: {field}: {message}" if field else f"{where}: {message}")


def system_zone() -> tzinfo:
    tz_env = os.environ.get("TZ")
    if tz_env:
        try:
            return ZoneInfo(tz_env.lstrip(":"))
        except (ZoneInfoNotFoundError, ValueError):
            pass
    try:
        link = os.readlink("/etc/localtime")
        if "zoneinfo/" in link:
            return ZoneInfo(link.split("zoneinfo/", 1)[1])
    except OSError:
        pass
    try:
        name = Path("/etc/timezone").read_text().strip()
        if name:
            return ZoneInfo(name)
    except (OSError, ZoneInfoNotFoundError, ValueError):
        pass
    return ZoneInfo("UTC")
