"""Who a webhook comes from: the shop and till ids in the CloudEvents ``source`` (issue 14, observation 6).

``settleguard://<shop id>/<till id>``, both slugs, so a receiver can tell a chain's shops and tills apart
whatever their display names are, and the source is always a URI reference (RFC 3986). The names stay
data (messages, the config); only the ids are identity.
"""

from __future__ import annotations

import hashlib
import re
import socket
from urllib.parse import quote, unquote

# An id that goes into URIs, file names and metric labels as it is: lowercase ASCII words joined by '-'.
SLUG_RE = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
SLUG_MAX = 63


def slugify(text: str) -> str:
    """The ASCII words of ``text``, lowercased and joined by '-' ("" when it has none)."""
    words = re.findall(r"[a-z0-9]+", text.lower())
    return "-".join(words)[:SLUG_MAX].strip("-")


def derive_id(name: str, fallback: str) -> str:
    """A stable slug for a display name: the name itself if it already is one, else its ASCII words plus
    8 hex digits of its SHA-256 (so "好味道餐饮 静安店" and "好味道餐饮 徐汇店" stay two shops, where
    transliteration-free slugging would give both nothing), or ``fallback`` plus the hash when the name
    has no ASCII words."""
    if SLUG_RE.fullmatch(name) and len(name) <= SLUG_MAX:
        return name
    digest = hashlib.sha256(name.encode("utf-8")).hexdigest()[:8]
    words = slugify(name)[: SLUG_MAX - 9].strip("-") or fallback
    return f"{words}-{digest}"


def check_slug(value: str | None, example: str, fallback: str) -> str | None:
    """``value`` when it is a valid id (or absent); else a ValueError that suggests one."""
    if value is None or (SLUG_RE.fullmatch(value) and len(value) <= SLUG_MAX):
        return value
    suggestion = slugify(value) or derive_id(value, fallback)
    raise ValueError(f"must be lowercase ASCII letters, digits and '-', at most {SLUG_MAX} characters, "
                     f"like \"{example}\" (it goes into the CloudEvents source URI); "
                     f"try \"{suggestion}\"")


def host_name() -> str:
    """This machine's host name: the till id's default (a display name like "收银台 1" repeats in every shop
    of a chain; the host is what an installer names per till, and it stays put across config edits)."""
    return socket.gethostname() or "till"


def source_ids(source: str) -> tuple[str, str] | None:
    """(shop id, till id) of a ``settleguard://<shop>/<till>`` source; None for anything else."""
    m = re.fullmatch(r"settleguard://([^/]+)/([^/]+)", source)
    return (unquote(m.group(1)), unquote(m.group(2))) if m else None


def event_source(shop_id: str, till_id: str) -> str:
    """The CloudEvents ``source``. Both parts are slugs already; quoting them is the belt to those braces,
    so no future id rule can make the source stop being a URI reference."""
    return f"settleguard://{quote(shop_id, safe='')}/{quote(till_id, safe='')}"
