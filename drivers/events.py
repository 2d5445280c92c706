"""Typed events produced by every decoder (ARCHITECTURE.md, "Event JSON").

Over 500 lines: every event type with its checks and its schema-ordered JSON form is one public contract.

These live in ``drivers`` because decoders build them and ``drivers`` never
imports ``agent``; ``agent.model`` re-exports them.  The JSON form is a public
contract: key order is the schema order, ``type`` first, absent values are
``null`` and never omitted.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, ClassVar, Literal

Kind = Literal["sale", "void", "refund", "preauth", "preauth_complete", "reversal", "balance"]
Result = Literal["approved", "declined"]
EntryMode = Literal["chip", "swipe", "contactless", "manual", "qr"]

KINDS: tuple[str, ...] = ("sale", "void", "refund", "preauth", "preauth_complete", "reversal", "balance")
RESULTS: tuple[str, ...] = ("approved", "declined")
ENTRY_MODES: tuple[str, ...] = ("chip", "swipe", "contactless", "manual", "qr")
# Kinds that give money back to the card holder (amount_minor stays positive).
RETURNING_KINDS: frozenset[str] = frozenset({"void", "refund", "reversal"})
# A transaction's fields with few distinct values on a till (one terminal, merchant, batch, operator, ...):
# shared (``sys.intern``) as the transaction is built, not copied per event; the rules hold a day of them
# (issue 20). Unique fields (voucher, RRN, card) are left alone: interning those would add an entry to the
# interpreter's table per transaction and save nothing.
SHARED_FIELDS: tuple[str, ...] = ("source", "kind", "result", "terminal_id", "merchant_id", "batch_no", "currency",
                                  "card_type", "entry_mode", "operator")


class EventError(ValueError):
    """An event object that does not follow the schema (bad field, bad type)."""


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.isoformat()


def _schema_dict(event: Any) -> dict[str, Any]:
    """``type`` first, then the schema's fields in order; times as ISO 8601."""
    out: dict[str, Any] = {"type": event.type}
    for name in event.SCHEMA:
        value = getattr(event, name)
        out[name] = _iso(value) if name == "time" else value
    return out


def _parse_time(value: Any, name: str) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise EventError(f"{name} must be an ISO 8601 string or null (got {value!r})")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise EventError(f"{name} is not an ISO 8601 date-time: {value!r}") from exc
    if parsed.tzinfo is None:
        raise EventError(f"{name} must carry a UTC offset: {value!r}")
    return parsed


def _opt_str(value: Any, name: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise EventError(f"{name} must be a string or null (got {value!r})")
    return value


def _opt_int(value: Any, name: str) -> int | None:
    if value is None:
        return None
    # bool is an int subclass; a float is never money.
    if isinstance(value, bool) or not isinstance(value, int):
        raise EventError(f"{name} must be an integer or null (got {value!r})")
    return value


@dataclass(frozen=True, slots=True)
class Transaction:
    """One transaction as one source saw it."""

    type: ClassVar[str] = "transaction"

    source: str
    kind: str
    result: str
    amount_minor: int
    time: datetime | None
    terminal_id: str | None = None
    merchant_id: str | None = None
    batch_no: str | None = None
    voucher_no: str | None = None
    receipt_no: str | None = None
    trace_no: str | None = None
    rrn: str | None = None
    auth_code: str | None = None
    original_voucher_no: str | None = None
    original_rrn: str | None = None
    currency: str | None = None
    card: str | None = None
    card_type: str | None = None
    entry_mode: str | None = None
    operator: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise EventError(f"kind must be one of {', '.join(KINDS)} (got {self.kind!r})")
        if self.result not in RESULTS:
            raise EventError(f"result must be approved or declined (got {self.result!r})")
        if isinstance(self.amount_minor, bool) or not isinstance(self.amount_minor, int):
            raise EventError(f"amount_minor must be an integer (got {self.amount_minor!r})")
        if self.amount_minor < 0:
            raise EventError(f"amount_minor must be >= 0; kind carries the sign (got {self.amount_minor})")
        if self.entry_mode is not None and self.entry_mode not in ENTRY_MODES:
            raise EventError(f"entry_mode must be one of {', '.join(ENTRY_MODES)} or null")
        if self.time is not None and self.time.tzinfo is None:
            raise EventError("time must be timezone-aware")
        # Once here, where every transaction is built (a frozen dataclass: equal strings, only identity changes),
        # instead of a second Transaction per view for the rules.
        for name in SHARED_FIELDS:
            value = getattr(self, name)
            if type(value) is str:
                object.__setattr__(self, name, sys.intern(value))

    # Schema order of ARCHITECTURE.md, "Event JSON"; to_dict/from_dict/JSON follow it exactly.
    SCHEMA: ClassVar[tuple[str, ...]] = (
        "source", "kind", "result", "terminal_id", "merchant_id", "batch_no", "voucher_no",
        "receipt_no", "trace_no", "rrn", "auth_code", "original_voucher_no", "original_rrn",
        "amount_minor", "currency", "card", "card_type", "entry_mode", "time", "operator",
    )

    def to_dict(self) -> dict[str, Any]:
        return _schema_dict(self)

    @classmethod
    def from_dict(cls, obj: dict[str, Any]) -> Transaction:
        _check_keys(obj, cls.type, cls.SCHEMA)
        kwargs: dict[str, Any] = {}
        for name in cls.SCHEMA:
            value = obj.get(name)
            if name == "time":
                kwargs[name] = _parse_time(value, name)
            elif name == "amount_minor":
                amount = _opt_int(value, name)
                if amount is None:
                    raise EventError("amount_minor is required")
                kwargs[name] = amount
            elif name in ("source", "kind", "result"):
                if not isinstance(value, str):
                    raise EventError(f"{name} is required and must be a string")
                kwargs[name] = value
            else:
                kwargs[name] = _opt_str(value, name)
        return cls(**kwargs)

    def with_(self, **changes: Any) -> Transaction:
        return replace(self, **changes)


@dataclass(frozen=True, slots=True)
class Settlement:
    """A batch closed (结算) on a terminal; totals as the source reported them."""

    type: ClassVar[str] = "settlement"

    source: str
    time: datetime | None
    terminal_id: str | None = None
    merchant_id: str | None = None
    batch_no: str | None = None
    count: int | None = None
    total_minor: int | None = None
    currency: str | None = None
    balanced: bool | None = None

    SCHEMA: ClassVar[tuple[str, ...]] = (
        "source", "terminal_id", "merchant_id", "batch_no", "time", "count", "total_minor",
        "currency", "balanced",
    )

    def __post_init__(self) -> None:
        if self.time is not None and self.time.tzinfo is None:
            raise EventError("time must be timezone-aware")

    def to_dict(self) -> dict[str, Any]:
        return _schema_dict(self)

    @classmethod
    def from_dict(cls, obj: dict[str, Any]) -> Settlement:
        _check_keys(obj, cls.type, cls.SCHEMA)
        source = obj.get("source")
        if not isinstance(source, str):
            raise EventError("source is required and must be a string")
        balanced = obj.get("balanced")
        if balanced is not None and not isinstance(balanced, bool):
            raise EventError("balanced must be true, false or null")
        return cls(
            source=source,
            time=_parse_time(obj.get("time"), "time"),
            terminal_id=_opt_str(obj.get("terminal_id"), "terminal_id"),
            merchant_id=_opt_str(obj.get("merchant_id"), "merchant_id"),
            batch_no=_opt_str(obj.get("batch_no"), "batch_no"),
            count=_opt_int(obj.get("count"), "count"),
            total_minor=_opt_int(obj.get("total_minor"), "total_minor"),
            currency=_opt_str(obj.get("currency"), "currency"),
            balanced=balanced,
        )


@dataclass(frozen=True, slots=True)
class ReceiptText:
    """Text printed by a terminal or a till (ZVT print lines, one ESC/POS receipt).

    Kept as evidence ("the receipt as printed") and parsed by receipt templates.
    Lines are already PAN-masked.
    """

    type: ClassVar[str] = "receipt"

    source: str
    time: datetime | None
    lines: tuple[str, ...] = field(default_factory=tuple)
    terminal_id: str | None = None
    qr: tuple[str, ...] = field(default_factory=tuple)
    # Seen but not understood (issue 18): set by the decoder on a receipt that looks like a payment slip
    # or a sales receipt but gave no event. ``unread`` is "no_template" (no template fits) or
    # "missing_field" (``unread_template`` fits but ``unread_field``, a required field, is missing).
    unread: str | None = None
    unread_template: str | None = None
    unread_field: str | None = None

    SCHEMA: ClassVar[tuple[str, ...]] = ("source", "terminal_id", "time", "lines", "qr", "unread",
                                         "unread_template", "unread_field")
    UNREAD: ClassVar[tuple[str, ...]] = ("no_template", "missing_field")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "type": self.type,
            "source": self.source,
            "terminal_id": self.terminal_id,
            "time": _iso(self.time),
            "lines": list(self.lines),
            "qr": list(self.qr),
        }
        if self.unread is not None:   # only when set: the JSON of an understood receipt is unchanged
            out.update(unread=self.unread, unread_template=self.unread_template, unread_field=self.unread_field)
        return out

    @classmethod
    def from_dict(cls, obj: dict[str, Any]) -> ReceiptText:
        _check_keys(obj, cls.type, cls.SCHEMA)
        lines = obj.get("lines") or []
        qr = obj.get("qr") or []
        if not isinstance(lines, list) or not all(isinstance(x, str) for x in lines):
            raise EventError("lines must be a list of strings")
        if not isinstance(qr, list) or not all(isinstance(x, str) for x in qr):
            raise EventError("qr must be a list of strings")
        source = obj.get("source")
        if not isinstance(source, str):
            raise EventError("source is required and must be a string")
        unread = _opt_str(obj.get("unread"), "unread")
        if unread is not None and unread not in cls.UNREAD:
            raise EventError(f"unread must be one of {', '.join(cls.UNREAD)} (got {unread!r})")
        return cls(
            source=source,
            time=_parse_time(obj.get("time"), "time"),
            lines=tuple(lines),
            terminal_id=_opt_str(obj.get("terminal_id"), "terminal_id"),
            qr=tuple(qr),
            unread=unread,
            unread_template=_opt_str(obj.get("unread_template"), "unread_template"),
            unread_field=_opt_str(obj.get("unread_field"), "unread_field"),
        )


# The till's side (issue 17): what the shop's own POS sold, and how it was paid.
TENDER_METHODS: tuple[str, ...] = ("card", "qr", "cash", "other")
# Tenders settled on a payment terminal, so each should have a charge on the terminal line.
ELECTRONIC_METHODS: frozenset[str] = frozenset({"card", "qr"})
MAX_TENDERS = 16   # one sale paid in more parts than this is not a till's sale


@dataclass(frozen=True, slots=True)
class Tender:
    """One part of how a sale was paid: method, amount (minor units, > 0) and the printed wallet/card hint."""

    method: str
    amount_minor: int
    hint: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "amount_minor": self.amount_minor, "hint": self.hint}

    @classmethod
    def from_dict(cls, obj: Any, where: str) -> Tender:
        if not isinstance(obj, dict):
            raise EventError(f"{where} must be an object")
        unknown = set(obj) - {"method", "amount_minor", "hint"}
        if unknown:
            raise EventError(f"{where}: unknown field(s): {', '.join(sorted(unknown))}")
        method = obj.get("method")
        if method not in TENDER_METHODS:
            raise EventError(f"{where}.method must be one of {', '.join(TENDER_METHODS)} (got {method!r})")
        amount = _opt_int(obj.get("amount_minor"), f"{where}.amount_minor")
        if amount is None:
            raise EventError(f"{where}.amount_minor is required")
        return cls(method=method, amount_minor=amount, hint=_opt_str(obj.get("hint"), f"{where}.hint"))


@dataclass(frozen=True, slots=True)
class Order:
    """A sale as the till recorded it (a printed 小票, or a till's own JSON line): the intended amounts."""

    type: ClassVar[str] = "order"

    source: str
    time: datetime | None
    total_minor: int
    order_no: str | None = None
    currency: str | None = None
    tenders: tuple[Tender, ...] = field(default_factory=tuple)

    SCHEMA: ClassVar[tuple[str, ...]] = ("source", "order_no", "time", "total_minor", "currency", "tenders")

    def __post_init__(self) -> None:
        if isinstance(self.total_minor, bool) or not isinstance(self.total_minor, int):
            raise EventError(f"total_minor must be an integer (got {self.total_minor!r})")
        if self.time is not None and self.time.tzinfo is None:
            raise EventError("time must be timezone-aware")

    def to_dict(self) -> dict[str, Any]:
        out = _schema_dict(self)
        out["tenders"] = [t.to_dict() for t in self.tenders]
        return out

    @classmethod
    def from_dict(cls, obj: dict[str, Any]) -> Order:
        _check_keys(obj, cls.type, cls.SCHEMA)
        source = obj.get("source")
        if not isinstance(source, str):
            raise EventError("source is required and must be a string")
        total = _opt_int(obj.get("total_minor"), "total_minor")
        if total is None:
            raise EventError("total_minor is required")
        tenders = obj.get("tenders")
        if tenders is None:
            tenders = []
        if not isinstance(tenders, list):
            raise EventError("tenders must be a list of objects")
        if len(tenders) > MAX_TENDERS:
            raise EventError(f"tenders: more than {MAX_TENDERS}")
        return cls(
            source=source, time=_parse_time(obj.get("time"), "time"), total_minor=total,
            order_no=_opt_str(obj.get("order_no"), "order_no"), currency=_opt_str(obj.get("currency"), "currency"),
            tenders=tuple(Tender.from_dict(t, f"tenders[{i}]") for i, t in enumerate(tenders)),
        )

    def with_(self, **changes: Any) -> Order:
        return replace(self, **changes)


# An integrated (ECR) link seen from the till's side (issue 17): what the till asked the terminal for,
# and when it gave up. ``state``: "requested" (the till sent the request: ZVT 06 01, a UnionPay-style
# request frame), "aborted" (the till cancelled it: ZVT 06 B0), "timed_out" (the till stopped waiting:
# from a till's own JSON line, or settleguard's [match] till_timeout). The terminal's answer is the
# ordinary ``transaction``; agent/ecr_link.py pairs the two (MATCH-004: approved after the till gave up).
ECR_STATES: tuple[str, ...] = ("requested", "aborted", "timed_out")
GAVE_UP_STATES: frozenset[str] = frozenset({"aborted", "timed_out"})


@dataclass(frozen=True, slots=True)
class EcrRequest:
    """The till's request on an ECR link (or its abort / timeout): the amount asked, not a charge."""

    type: ClassVar[str] = "ecr_request"

    source: str
    time: datetime | None
    state: str
    kind: str | None = None              # a transaction kind (sale, refund ...) when the request says
    amount_minor: int | None = None      # the amount asked (an abort may not repeat it)
    currency: str | None = None
    request_id: str | None = None        # the protocol's own id when it has one (UnionPay-style DF04)

    SCHEMA: ClassVar[tuple[str, ...]] = ("source", "request_id", "time", "kind", "amount_minor", "currency",
                                         "state")

    def __post_init__(self) -> None:
        if self.state not in ECR_STATES:
            raise EventError(f"state must be one of {', '.join(ECR_STATES)} (got {self.state!r})")
        if self.kind is not None and self.kind not in KINDS:
            raise EventError(f"kind must be one of {', '.join(KINDS)} or null (got {self.kind!r})")
        if self.amount_minor is not None and (isinstance(self.amount_minor, bool)
                                              or not isinstance(self.amount_minor, int) or self.amount_minor < 0):
            raise EventError(f"amount_minor must be an integer >= 0 or null (got {self.amount_minor!r})")
        if self.time is not None and self.time.tzinfo is None:
            raise EventError("time must be timezone-aware")

    def to_dict(self) -> dict[str, Any]:
        return _schema_dict(self)

    @classmethod
    def from_dict(cls, obj: dict[str, Any]) -> EcrRequest:
        _check_keys(obj, cls.type, cls.SCHEMA)
        source, state = obj.get("source"), obj.get("state")
        if not isinstance(source, str):
            raise EventError("source is required and must be a string")
        if not isinstance(state, str):
            raise EventError("state is required and must be a string")
        return cls(source=source, time=_parse_time(obj.get("time"), "time"), state=state,
                   kind=_opt_str(obj.get("kind"), "kind"),
                   amount_minor=_opt_int(obj.get("amount_minor"), "amount_minor"),
                   currency=_opt_str(obj.get("currency"), "currency"),
                   request_id=_opt_str(obj.get("request_id"), "request_id"))

    def with_(self, **changes: Any) -> EcrRequest:
        return replace(self, **changes)


Event = Transaction | Settlement | ReceiptText | Order | EcrRequest


@dataclass(frozen=True, slots=True)
class Rejected:
    """Input that did not become an event: a line or frame that failed to decode, or an event outside the
    model's limits (drivers/boundary.py). Never raised; the pipeline keeps it in the journal's quarantine.
    Every text is already card-scrubbed, valid Unicode and bounded (``drivers.boundary.rejected``)."""

    source: str
    stage: str    # "decode" (a line or frame), "limits" (an event outside the limits), "pipeline"
    reason: str   # one plain sentence, no card number
    raw: str      # the input's JSON or text form (hex for bytes that are not UTF-8), cut to a few KiB
EVENT_TYPES: dict[str, type[Transaction] | type[Settlement] | type[ReceiptText] | type[Order] | type[EcrRequest]] = {
    "transaction": Transaction,
    "settlement": Settlement,
    "receipt": ReceiptText,
    "order": Order,
    "ecr_request": EcrRequest,
}


def _check_keys(obj: dict[str, Any], type_: str, schema: tuple[str, ...]) -> None:
    if obj.get("type") != type_:
        raise EventError(f"type must be {type_!r}")
    unknown = set(obj) - set(schema) - {"type"}
    if unknown:
        raise EventError(f"unknown field(s): {', '.join(sorted(unknown))}")


def event_from_dict(obj: Any) -> Event:
    if not isinstance(obj, dict):
        raise EventError("an event must be a JSON object")
    cls = EVENT_TYPES.get(obj.get("type"))  # type: ignore[arg-type]
    if cls is None:
        raise EventError(f"unknown event type {obj.get('type')!r}")
    return cls.from_dict(obj)


def event_to_json(event: Event) -> str:
    """One JSON line (no newline); UTF-8 text kept readable (ensure_ascii off)."""
    return json.dumps(event.to_dict(), ensure_ascii=False)


def event_from_json(line: str) -> Event:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise EventError(f"not JSON: {exc.msg} at column {exc.colno}") from exc
    return event_from_dict(obj)


__all__ = [
    "ECR_STATES",
    "ELECTRONIC_METHODS",
    "ENTRY_MODES",
    "EVENT_TYPES",
    "GAVE_UP_STATES",
    "KINDS",
    "MAX_TENDERS",
    "RESULTS",
    "RETURNING_KINDS",
    "TENDER_METHODS",
    "EcrRequest",
    "Event",
    "EventError",
    "Order",
    "ReceiptText",
    "Rejected",
    "Settlement",
    "Tender",
    "Transaction",
    "event_from_dict",
    "event_from_json",
    "event_to_json",
]
