"""Logging for journald: syslog level prefixes, no timestamps, no PANs, no secrets.

journald adds its own timestamps and reads ``<N>`` prefixes as priorities
(sd-daemon(3)); on a terminal we print plain lines instead.

Redaction happens when a record is made (:func:`install_record_redaction`), not
only in our handler: whatever handler a record reaches (ours, pytest's, one a
library adds) sees the redacted text. A secret is registered in every form a
log line can carry it: raw, percent-encoded (both cases of hex, ``+`` for
space) and decoded; a URL registers its userinfo, query values and the path
segments that look like tokens (ARCHITECTURE.md's "Redaction" in the report).
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import re
import sys
import threading
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qsl, quote, quote_plus, unquote, unquote_plus, urlsplit

from pydantic import SecretStr

from drivers.pan import scrub_text

_PRIORITY = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6, logging.DEBUG: 7}

# Shorter strings are too likely to be ordinary words or numbers; masking them would wreck the logs.
MIN_SECRET = 6
MASK = "***"

# Whatever was registered, a URL in a log line never shows its userinfo or a credential-like query value.
_USERINFO = re.compile(r"(?<=://)[^/\s@?#]+@")
_CREDENTIAL_QUERY = re.compile(
    r"(?i)([?&](?:key|access_token|token|sign|signature|secret|password|passwd|pwd|auth|apikey|api_key)=)"
    r"[^&\s#\"'<>]+")
# HTTP credentials as a header quotes them (httpx sends a URL's userinfo as Basic auth).
_AUTH_HEADER = re.compile(r"(?i)\b(basic|bearer)\s+[A-Za-z0-9+/=._~-]{8,}")
# A path segment this long with letters and digits mixed is a token (Feishu hook id, Slack-style paths).
_PATH_TOKEN = re.compile(r"(?=.*\d)(?=.*[A-Za-z])[A-Za-z0-9_\-.~%]{12,}|[A-Za-z0-9_\-.~%]{24,}")


class JournaldFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        prio = _PRIORITY.get(record.levelno, 6)
        return "\n".join(f"<{prio}>{line}" for line in text.splitlines() or [""])


def secret_forms(value: str) -> set[str]:
    """Every way ``value`` may be written in a log line: raw, percent-encoded and decoded."""
    forms = {value, unquote(value), unquote_plus(value)}
    for text in list(forms):
        for encoded in (quote(text, safe=""), quote_plus(text, safe=""), quote(text), quote_plus(text)):
            forms.add(encoded)
            forms.add(re.sub(r"%[0-9A-F]{2}", lambda m: m.group().lower(), encoded))
    return {f for f in forms if len(f) >= MIN_SECRET}


def url_secrets(url: str) -> set[str]:
    """The parts of a URL that are credentials: userinfo, query values, token-like path segments."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return {url}
    found: set[str] = set()
    netloc = parts.netloc
    if "@" in netloc:
        userinfo = netloc.rsplit("@", 1)[0]
        found.add(userinfo)
        found.update(userinfo.split(":", 1))
        # The same pair as an Authorization: Basic header carries it.
        pair = unquote(userinfo).encode("utf-8")
        found.add(base64.b64encode(pair).decode("ascii"))
    for raw in parts.query.split("&"):
        if "=" in raw:
            found.add(raw.split("=", 1)[1])
    found.update(value for _, value in parse_qsl(parts.query, keep_blank_values=False))
    for segment in parts.path.split("/"):
        if _PATH_TOKEN.fullmatch(segment):
            found.add(segment)
    if parts.fragment:
        found.add(parts.fragment)
    return {f for f in found if len(f) >= MIN_SECRET}


class RedactingFilter(logging.Filter):
    """Last line of defence: mask card numbers and known secrets in every record."""

    def __init__(self, secrets: list[str] | None = None) -> None:
        super().__init__()
        self.secrets = sorted({f for s in (secrets or []) for f in secret_forms(s)}, key=len, reverse=True)

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "_redacted", False):
            return True
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
        setattr(record, "_redacted", True)  # noqa: B010 (LogRecord has no declared slot for it)
        return True

    def redact(self, text: str) -> str:
        clean = scrub_text(text)
        # Longest first, so a URL-encoded form is masked whole before a shorter form inside it.
        for secret in self.secrets:
            if secret in clean:
                clean = clean.replace(secret, MASK)
        clean = _USERINFO.sub(MASK + "@", clean)
        clean = _AUTH_HEADER.sub(r"\1 " + MASK, clean)
        return _CREDENTIAL_QUERY.sub(r"\1" + MASK, clean)


_filter = RedactingFilter()
_lock = threading.Lock()
_base_factory: Any = None


def install_record_redaction() -> None:
    """Redact every log record as it is made, whichever handler later sees it (idempotent)."""
    global _base_factory
    with _lock:
        if _base_factory is not None:
            return
        base = logging.getLogRecordFactory()

        def make(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = base(*args, **kwargs)
            # A record whose args do not fit its format: left as it is, for the handler to report.
            with contextlib.suppress(Exception):
                _filter.filter(record)
            return record

        _base_factory = base
        logging.setLogRecordFactory(make)


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
    install_record_redaction()
    return _filter


def _reveal(value: str | SecretStr) -> str:
    return value.get_secret_value() if isinstance(value, SecretStr) else value


def add_secrets(secrets: Iterable[str | SecretStr | None]) -> None:
    """Register secrets (a URL registers its credential parts as well) for every later log record."""
    forms: set[str] = set()
    for item in secrets:
        if not item:
            continue
        value = _reveal(item)
        # A URL gives its credential parts; the rest (scheme, host, path) stays readable in the logs.
        for piece in url_secrets(value) if "://" in value else {value}:
            forms |= secret_forms(piece)
    with _lock:
        _filter.secrets = sorted({*_filter.secrets, *forms}, key=len, reverse=True)
    install_record_redaction()


def register_url(url: str | SecretStr | None) -> None:
    """A URL a channel sends to: its credential parts are never logged."""
    if url:
        add_secrets([url])
