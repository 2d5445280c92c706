"""The stream's names: subjects, defaults and the environment's secret names (no imports).

Apart from agent/fleet/stream.py so that building the command line's parser (every ``settleguard``
command, ``--help`` included) reads them without importing asyncio and ssl.
"""

from __future__ import annotations

SUBJECT_ROOT = "settleguard"
# `fleet watch`'s durable consumer (here, not in watch.py: the CLI parser reads it without the rule's imports).
DEFAULT_DURABLE = "settleguard-fleet-watch"
DEFAULT_STREAM = "SETTLEGUARD"
DEFAULT_URL = "nats://127.0.0.1:4222"
# Where a secret comes from when no option names it (the same names in docs/FLEET.md).
TOKEN_ENV, USER_ENV, PASSWORD_ENV = "SETTLEGUARD_NATS_TOKEN", "SETTLEGUARD_NATS_USER", "SETTLEGUARD_NATS_PASSWORD"


def subject(shop_id: str, till_id: str, kind: str) -> str:
    return f"{SUBJECT_ROOT}.{shop_id}.{till_id}.{kind}"


def kind_filter(kind: str) -> str:
    """Every till's subject of one kind: ``settleguard.*.*.<kind>``."""
    return f"{SUBJECT_ROOT}.*.*.{kind}"


def split_subject(name: str) -> tuple[str, str, str] | None:
    """(shop_id, till_id, kind) of ``settleguard.<shop>.<till>.<kind>``; None for any other subject."""
    parts = name.split(".")
    if len(parts) != 4 or parts[0] != SUBJECT_ROOT or not all(parts):
        return None
    return parts[1], parts[2], parts[3]
