"""The rule contract: pure functions of (state, observation, now) -> findings.

A rule never reads the clock, the journal or the network. The pipeline
builds a :class:`TxnView` for each merged transaction, keeps
:class:`~agent.rules.state.RuleState` up to date, and turns findings into
alerts (one alert per (rule, transaction key); one alert per family per
transaction, from the most specific rule).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from pydantic import BaseModel, ConfigDict, field_validator

from agent.model import Transaction
from agent.units import parse_duration

if TYPE_CHECKING:
    from agent.rules.state import RuleState


@dataclass(frozen=True, slots=True)
class TxnView:
    """A merged transaction as the rules see it."""

    key: str                 # identity key (agent.model.identity_key) or a synthetic one
    txn: Transaction         # merged fields from every sighting
    utc: datetime            # instant used for windows (txn.time, else first receive time), UTC
    local: datetime          # the same instant on the shop's wall clock

    @property
    def card(self) -> str | None:
        return self.txn.card

    @property
    def amount_minor(self) -> int:
        return self.txn.amount_minor

    @property
    def approved(self) -> bool:
        return self.txn.result == "approved"

    @property
    def voucher_label(self) -> str:
        t = self.txn
        return t.voucher_no or t.receipt_no or t.trace_no or t.rrn or "?"


@dataclass(frozen=True, slots=True)
class Observation:
    """What just happened to one transaction."""

    view: TxnView
    is_new: bool                      # first sighting of this identity
    conflicts: dict[str, tuple[Any, Any]] = field(default_factory=dict)  # field -> (stored, new) on a re-sighting
    reprint: bool = False             # a re-sighting with identical content


@dataclass(frozen=True, slots=True)
class Finding:
    rule: str
    version: str
    family: str
    severity: str
    specificity: int                  # within a family, the higher one speaks to staff
    subject: TxnView                  # the transaction the suggestion acts on (void this one)
    related: tuple[TxnView, ...]      # the others involved (the first charge, the sale refunded, ...)
    reason_en: str
    reason_zh: str
    evidence: dict[str, Any]
    action: str = "void"              # void | refund | check


class RuleParams(BaseModel):
    """Parameters every rule takes; a rule's own Params subclass adds its knobs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    severity: str | None = None       # None -> the rule's default

    @field_validator("severity")
    @classmethod
    def _sev(cls, v: str | None) -> str | None:
        if v is not None and v not in ("high", "medium", "low"):
            raise ValueError("must be high, medium or low")
        return v


def duration_field(v: Any) -> timedelta:
    """pydantic 'before' validator body for '10m'-style durations."""
    if isinstance(v, timedelta):
        return v
    return parse_duration(v)


class Rule(Protocol):
    id: ClassVar[str]
    version: ClassVar[str]
    family: ClassVar[str]
    default_severity: ClassVar[str]
    specificity: ClassVar[int]
    Params: ClassVar[type[RuleParams]]
    title_en: ClassVar[str]
    title_zh: ClassVar[str]

    def __init__(self, params: RuleParams) -> None: ...

    def check(self, state: RuleState, obs: Observation, now: datetime) -> list[Finding]: ...
