"""The rule contract: pure functions of (state, observation, now) -> findings.

A rule never reads the clock, the journal or the network. The pipeline
builds a :class:`TxnView` for each merged transaction, keeps
:class:`~agent.rules.state.RuleState` up to date, and turns findings into
alerts (one alert per (rule, transaction key); one alert per family per
transaction, from the most specific rule).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from agent.model import Transaction
from agent.rules.params import RuleParams

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
    # field -> (stored, new) when a re-sighting disagrees
    conflicts: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    reprint: bool = False             # a re-sighting with identical content
    # The sighting as its source reported it, before merging: the merged view keeps the stored
    # voucher number, so a second sale filed under the same RRN is only visible here.
    sighting: Transaction | None = None


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
    certainty: str | None = None      # "error" | "verify" (agent.model.CERTAINTIES); None: from the action


def evidence(value: Any, threshold: Any, baseline: dict[str, Any] | None = None,
             **extra: Any) -> dict[str, Any]:
    """The evidence shape every alert carries (ARCHITECTURE.md, "Alert JSON"): value, threshold, baseline,
    then details."""
    return {"value": value, "threshold": threshold, "baseline": baseline or {}, **extra}


P = TypeVar("P", bound=RuleParams)


# Kinds that take money from the card holder.
CHARGE_KINDS = frozenset({"sale", "preauth_complete"})


def is_charge(view: TxnView) -> bool:
    t = view.txn
    return t.kind in CHARGE_KINDS and t.result == "approved"


def same_slip(a: TxnView, b: TxnView) -> bool:
    """Two views that carry the same voucher number on the same terminal (one slip, not two charges)."""
    ta, tb = a.txn, b.txn
    if a.voucher_label == "?" or a.voucher_label != b.voucher_label:
        return False
    return ta.terminal_id is None or tb.terminal_id is None or ta.terminal_id == tb.terminal_id


class BaseRule(Generic[P]):
    """Shared plumbing: parameters, effective severity and building a :class:`Finding`."""

    id: ClassVar[str]
    version: ClassVar[str]
    family: ClassVar[str]
    default_severity: ClassVar[str]
    specificity: ClassVar[int]
    Params: ClassVar[type[RuleParams]]
    title_en: ClassVar[str]
    title_zh: ClassVar[str]
    action: ClassVar[str] = "void"
    # How sure a finding of this rule is (agent.model.CERTAINTIES): "error" (a likely mistake: take the money
    # back) or "verify" (something a person checks; it may well be genuine). Every rule declares its own;
    # the default is the cautious one, so a rule that forgets never tells staff to void a genuine sale.
    certainty: ClassVar[str] = "verify"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.certainty not in ("error", "verify"):
            raise TypeError(f"{cls.__name__}.certainty must be 'error' or 'verify' (got {cls.certainty!r})")

    def __init__(self, params: RuleParams) -> None:
        if not isinstance(params, self.Params):
            raise TypeError(f"{self.id} needs {self.Params.__name__}, got {type(params).__name__}")
        self.params: P = params  # type: ignore[assignment]
        self.severity = params.severity or self.default_severity

    def observe(self, state: RuleState, view: TxnView) -> None:
        """Update this rule's running tallies (``state.tallies[self.id]``) for a new transaction.

        For rules whose question would otherwise mean rescanning the day (VOID-001 per shift).
        """

    def prune(self, state: RuleState, now: datetime) -> None:
        """Drop tallies older than the state's horizon."""

    def state_horizon(self) -> timedelta:
        """How far back this rule reads :class:`RuleState` (the engine keeps at least that much)."""
        return timedelta(0)

    def finding(self, subject: TxnView, related: Sequence[TxnView], reason_en: str, reason_zh: str,
                evidence: dict[str, Any], *, action: str | None = None,
                severity: str | None = None) -> Finding:
        # Something to verify only ever asks for a check: it may be genuine, so it never asks for a void and
        # never turns into refund guidance when the batch closes (lifecycle.batch_closed_cause).
        chosen = "check" if self.certainty == "verify" else (action or self.action)
        return Finding(rule=self.id, version=self.version, family=self.family,
                       severity=severity or self.severity, specificity=self.specificity, subject=subject,
                       related=tuple(related), reason_en=reason_en, reason_zh=reason_zh, evidence=evidence,
                       action=chosen, certainty=self.certainty)

    def check(self, state: RuleState, obs: Observation, now: datetime) -> list[Finding]:
        raise NotImplementedError
