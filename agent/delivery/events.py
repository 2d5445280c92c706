"""The till's own events for machine channels that ask for them (``events = true``: a NATS stream).

Called by the pipeline inside the journal transaction that records the event, so the outbox row and the
journal agree after any crash. The message id is stable for the same event seen again (a reprint, the
printed slip of a charge the terminal reported): the outbox keeps the first row of an id per channel, and
the stream drops a re-send within its duplicate window, so a head office sees each event once.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any

from agent.alerts.lifecycle import NoticeKind
from agent.model import Transaction, identity_key

# Event types a machine channel gets (agent/delivery/cloudevents.py: settleguard.<type>).
EVENT_TYPES = frozenset({"transaction", "settlement", "order", "ecr_request"})


def event_key(event: Any, data: dict[str, Any]) -> str:
    """The event's identity: a transaction's own key (ARCHITECTURE.md, "Transaction identity"), else a
    digest of its JSON, so the same settlement or order read twice is one event."""
    key = identity_key(event) if isinstance(event, Transaction) else None
    if key is None:
        text = json.dumps(data, sort_keys=True, ensure_ascii=False, default=str)
        key = hashlib.sha256(text.encode()).hexdigest()[:24]
    return f"{data['type']}.{key}"


def announce_event(announcer: Any, event: Any, shop: Any, now: datetime) -> None:
    """Queue ``event`` for the event channels (the caller checked there are some); other kinds are ignored.

    The id carries the shop and till: a terminal's voucher numbers are not unique across a chain, and one
    stream deduplicates by id across every till in it.
    """
    if getattr(event, "type", None) not in EVENT_TYPES:
        return
    data = event.to_dict()   # card numbers are masked already: they never leave drivers/
    key = event_key(event, data)
    announcer.to_machines(NoticeKind.EVENT, {**data, "key": key}, now,
                          message_id=f"event.{shop.shop_id}.{shop.till_slug}.{key}")
