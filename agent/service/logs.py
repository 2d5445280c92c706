"""Logging for journald: syslog level prefixes, no timestamps, no PANs, no secrets.

journald adds its own timestamps and reads ``<N>`` prefixes as priorities
(sd-daemon(3)); on a terminal we print plain lines instead.
"""

from __future__ import annotations

import logging
import os
import sys

from drivers.pan import scrub_text

_PRIORITY = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6, logging.DEBUG: 7}


class JournaldFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        prio = _PRIORITY.get(record.levelno, 6)
        return "\n".join(f"<{prio}>{line}" for line in text.splitlines() or [""])


class RedactingFilter(logging.Filter):
    """Last line of defence: mask card numbers and known secrets in every record."""

    def __init__(self, secrets: list[str] | None = None) -> None:
        super().__init__()
        self.secrets = [s for s in (secrets or []) if s and len(s) >= 6]

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = self.redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        # Tracebacks quote the exception's message, which may hold the very secret that failed.
        if record.exc_info and record.exc_info[1] is not None and record.exc_text is None:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        return True

    def redact(self, text: str) -> str:
        clean = scrub_text(text)
        for secret in self.secrets:
            clean = clean.replace(secret, "***")
        return clean


_filter = RedactingFilter()


def setup_logging(level: str = "INFO", *, journald: bool | None = None) -> RedactingFilter:
    if journald is None:
        journald = bool(os.environ.get("JOURNAL_STREAM")) or not sys.stderr.isatty()
    handler = logging.StreamHandler(sys.stderr)
    if journald:
        handler.setFormatter(JournaldFormatter("%(name)s: %(message)s"))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S"))
    handler.addFilter(_filter)
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level)
    return _filter


def add_secrets(secrets: list[str]) -> None:
    _filter.secrets = sorted({*(_filter.secrets), *[s for s in secrets if s and len(s) >= 6]})
