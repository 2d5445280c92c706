"""The data that flows through the agent: events (from drivers) and alerts.

Events are defined in ``drivers.events`` (decoders build them); this module
re-exports them and adds what only the agent knows: identity keys, alerts and
suggestions. JSON forms follow ARCHITECTURE.md, "Event JSON" and "Alert JSON", exactly.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from drivers.events import (
    RETURNING_KINDS,
    SHARED_FIELDS,
    Event,
    EventError,
    ReceiptText,
    Settlement,
    Transaction,
    event_from_dict,
    event_from_json,
    event_to_json,
)

SEVERITIES = ("high", "medium", "low")
# Most severe first: how reviews, digests and the till page order findings.
SEVERITY_RANK: dict[str, int] = {s: i for i, s in enumerate(SEVERITIES)}
ACTIONS = ("void", "refund", "check")
# How sure a finding is: "error" (a likely mistake to take back) or "verify" (something a person checks;
# it may well be genuine). Drives the wording and whether a closed batch turns it into refund guidance.
CERTAINTIES = ("error", "verify")
# Short codes people type and read aloud: no 0/O, 1/I/L, 2/Z, 5/S, 8/B, U/V look-alikes.
CODE_ALPHABET = "ACDEFGHJKMNPQRTWXY34679"
CODE_LENGTH = 4


def identity_key(txn: Transaction) -> str | None:
    """ARCHITECTURE.md, "Transaction identity": most specific first.

    Keys are strings with a scheme prefix so the three kinds never collide.
    A transaction with none of the three has no identity and is never merged.
    """
    tid = txn.terminal_id or ""
    if txn.batch_no and txn.voucher_no:
        return f"v:{tid}:{txn.batch_no}:{txn.voucher_no}"
    if txn.receipt_no:
        return f"r:{tid}:{txn.receipt_no}"
    if txn.rrn:
        return f"n:{txn.rrn}"
    return None


def all_identity_keys(txn: Transaction) -> list[str]:
    """Every key this sighting could be known by (a receipt may carry RRN and voucher)."""
    tid = txn.terminal_id or ""
    keys = []
    if txn.batch_no and txn.voucher_no:
        keys.append(f"v:{tid}:{txn.batch_no}:{txn.voucher_no}")
    if txn.receipt_no:
        keys.append(f"r:{tid}:{txn.receipt_no}")
    if txn.rrn:
        keys.append(f"n:{txn.rrn}")
    return keys


_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_ulid(now: datetime) -> str:
    """A ULID (time-sortable id, Crockford base32) for alerts; on the injected clock, so replay sorts by event time."""
    ms = int(now.timestamp() * 1000)
    value = (ms << 80) | int.from_bytes(os.urandom(10), "big")
    chars = []
    for _ in range(26):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    return "".join(reversed(chars))


@dataclass(frozen=True, slots=True)
class Suggestion:
    action: str
    voucher_no: str | None
    amount_minor: int
    steps_zh: str
    steps_en: str
    deadline: datetime | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "voucher_no": self.voucher_no,
            "amount_minor": self.amount_minor,
            "steps_zh": self.steps_zh,
            "steps_en": self.steps_en,
            "deadline": self.deadline.isoformat() if self.deadline else None,
        }

    @classmethod
    def from_dict(cls, obj: dict[str, Any]) -> Suggestion:
        deadline = obj.get("deadline")
        return cls(
            action=obj["action"],
            voucher_no=obj.get("voucher_no"),
            amount_minor=int(obj["amount_minor"]),
            steps_zh=obj.get("steps_zh", ""),
            steps_en=obj.get("steps_en", ""),
            deadline=datetime.fromisoformat(deadline) if deadline else None,
        )


@dataclass(frozen=True, slots=True)
class Alert:
    id: str
    revision: int
    rule: str
    rule_version: str
    severity: str
    state: str              # an agent.alerts.lifecycle.AlertState value
    reason: str
    reason_zh: str
    evidence: dict[str, Any]
    transactions: tuple[Transaction, ...]
    suggestion: Suggestion | None
    created: datetime
    updated: datetime
    key: str = ""
    code: str = ""                          # short code people type (unique among the till's active alerts)
    certainty: str = "error"                # one of CERTAINTIES
    # The person's answer that produced this revision: {"answer", "by", "role", "note", "at"}; else None.
    answer: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """ARCHITECTURE.md, "Alert JSON" (``reason_zh`` rides along after ``reason`` for Chinese readers)."""
        return {
            "type": "alert",
            "id": self.id,
            "code": self.code,
            "revision": self.revision,
            "rule": self.rule,
            "rule_version": self.rule_version,
            "severity": self.severity,
            "certainty": self.certainty,
            "state": self.state,
            "reason": self.reason,
            "reason_zh": self.reason_zh,
            "evidence": self.evidence,
            "transactions": [t.to_dict() for t in self.transactions],
            "suggestion": self.suggestion.to_dict() if self.suggestion else None,
            "created": self.created.isoformat(),
            "updated": self.updated.isoformat(),
            "answer": self.answer,
        }

    @classmethod
    def from_dict(cls, obj: dict[str, Any], key: str = "") -> Alert:
        return cls(
            id=obj["id"],
            revision=int(obj["revision"]),
            rule=obj["rule"],
            rule_version=obj["rule_version"],
            severity=obj["severity"],
            state=obj["state"],
            reason=obj["reason"],
            reason_zh=obj.get("reason_zh", ""),
            evidence=obj.get("evidence") or {},
            transactions=tuple(Transaction.from_dict(t) for t in obj.get("transactions", [])),
            suggestion=Suggestion.from_dict(obj["suggestion"]) if obj.get("suggestion") else None,
            created=datetime.fromisoformat(obj["created"]),
            updated=datetime.fromisoformat(obj["updated"]),
            key=key,
            code=str(obj.get("code") or ""),
            certainty=str(obj.get("certainty") or "error"),
            answer=obj.get("answer") if isinstance(obj.get("answer"), dict) else None,
        )


__all__ = [
    "ACTIONS",
    "CERTAINTIES",
    "CODE_ALPHABET",
    "CODE_LENGTH",
    "RETURNING_KINDS",
    "SEVERITIES",
    "SEVERITY_RANK",
    "SHARED_FIELDS",
    "Alert",
    "Event",
    "EventError",
    "ReceiptText",
    "Settlement",
    "Suggestion",
    "Transaction",
    "all_identity_keys",
    "event_from_dict",
    "event_from_json",
    "event_to_json",
    "identity_key",
    "new_ulid",
]
