"""Duplicate-charge rules (family DUP).

Specificity, most specific first (the one that speaks when several fire on
the same transaction): DUP-001 exact duplicate (40) > DUP-002 one identity
reported as two different sales (30) > DUP-003 near-duplicate (20) > DUP-004
re-keyed on another card after a decline/void (10).

Windows are on UTC instants and inclusive at both ends: a second charge
exactly ``window`` after the first is still a duplicate. They look both ways,
because the terminal and the printer do not always report in order: when the
later charge was already seen, the finding is about that later charge (the one
to void), with the newly arrived earlier one as related.
A charge that has already been voided (or refunded) is nobody's duplicate.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any, ClassVar

from pydantic import field_validator

from agent.rules.base import (
    CHARGE_KINDS,
    BaseRule,
    Finding,
    Observation,
    TxnView,
    evidence,
    is_charge,
    same_slip,
)
from agent.rules.params import Duration, RuleParams, must
from agent.rules.state import RuleState
from agent.rules.text import format_duration, hhmm, money, vouchers
from drivers.pan import same_card


def _later_last(view: TxnView, others: list[TxnView]) -> tuple[TxnView, list[TxnView]]:
    """(subject, related): the latest charge is the one to void; on a tie the one that arrived last."""
    involved = sorted([*[(o.utc, 0, o) for o in others], (view.utc, 1, view)], key=lambda x: (x[0], x[1]))
    return involved[-1][2], [v for _, _, v in involved[:-1]]


def _repeated_charge(state: RuleState, obs: Observation, window: timedelta,
                     alike: Callable[[int, int], bool]) -> tuple[TxnView, list[TxnView]] | None:
    """(subject, related) when a new live charge has others on its card within ``window`` either way
    whose amounts are ``alike`` its own and that are not the same slip; else None."""
    view = obs.view
    if not obs.is_new or not is_charge(view) or state.voided_by(view) is not None:
        return None
    matches = [v for v in state.other_charges(view, view.utc - window, view.utc + window)
               if alike(v.amount_minor, view.amount_minor) and not same_slip(v, view)]
    return _later_last(view, matches) if matches else None


class WindowParams(RuleParams):
    window: Duration = timedelta(minutes=10)

    @field_validator("window")
    @classmethod
    def _positive(cls, v: timedelta) -> timedelta:
        if v <= timedelta(0):
            raise ValueError("must be longer than 0s")
        return v


class ExactDuplicateParams(WindowParams):
    window: Duration = timedelta(minutes=10)


class ExactDuplicate(BaseRule[ExactDuplicateParams]):
    """DUP-001: the same masked card charged the same amount twice, on different vouchers."""

    id: ClassVar[str] = "DUP-001"
    version: ClassVar[str] = "2"
    family: ClassVar[str] = "DUP"
    default_severity: ClassVar[str] = "high"
    specificity: ClassVar[int] = 40
    certainty: ClassVar[str] = "error"
    title_en: ClassVar[str] = "Duplicate charge"
    title_zh: ClassVar[str] = "重复扣款"
    Params = ExactDuplicateParams

    def state_horizon(self) -> timedelta:
        return self.params.window

    def check(self, state: RuleState, obs: Observation, now: datetime) -> list[Finding]:
        w = self.params.window
        repeated = _repeated_charge(state, obs, w, operator.eq)
        if repeated is None:
            return []
        subject, related = repeated
        involved = [*related, subject]
        gap = subject.utc - related[-1].utc
        window = format_duration(w)
        return [self.finding(
            subject, related,
            f"Same card {subject.card} charged {money(subject)} {len(involved)} times within {window} "
            f"(vouchers {vouchers(involved)}; last at {hhmm(subject)})",
            f"同一张卡 {subject.card} 在 {window} 内被扣 {money(subject)} 共 {len(involved)} 次"
            f"（凭证号 {vouchers(involved)}；最近一笔 {hhmm(subject)}）",
            evidence(int(gap.total_seconds()), int(w.total_seconds()),
                     unit="seconds between charges", count=len(involved)),
        )]


class IdentityConflictParams(RuleParams):
    pass


# Fields whose disagreement means "two different sales", not a better copy of one.
_SALE_FIELDS = ("amount_minor", "card", "kind")


class IdentityConflict(BaseRule[IdentityConflictParams]):
    """DUP-002: one voucher / RRN reported as two different sales.

    Either a re-sighting of the same identity that disagrees on amount, card or
    kind (``obs.conflicts`` from the journal merge; a disagreement on result
    alone is a late status, not a second sale), a sighting that carries the same
    RRN as a stored transaction but another voucher number (``obs.sighting``),
    or a new transaction whose RRN already belongs to another one. Which of the
    two is real cannot be told from the stream, so staff check the terminal's
    transaction list instead of voiding by a voucher number that now means two
    things (action "check"). Alerts are keyed by the stored transaction, so a
    third sighting never raises a second alert.
    """

    id: ClassVar[str] = "DUP-002"
    version: ClassVar[str] = "1"
    family: ClassVar[str] = "DUP"
    default_severity: ClassVar[str] = "high"
    specificity: ClassVar[int] = 30
    certainty: ClassVar[str] = "verify"
    title_en: ClassVar[str] = "One voucher, two sales"
    title_zh: ClassVar[str] = "同一凭证两笔交易"
    action: ClassVar[str] = "check"
    Params = IdentityConflictParams

    def check(self, state: RuleState, obs: Observation, now: datetime) -> list[Finding]:
        view = obs.view
        diffs: dict[str, tuple[Any, Any]] = {}
        related: list[TxnView] = []
        if obs.is_new:
            rrn = view.txn.rrn
            other = state.by_reference(terminal_id=None, rrn=rrn) if rrn else None
            if (other is None or other.key == view.key or same_slip(other, view)
                    or not (view.txn.kind in CHARGE_KINDS and other.txn.kind in CHARGE_KINDS)):
                return []
            diffs = {"voucher_no": (other.voucher_label, view.voucher_label)}
            for name in _SALE_FIELDS:
                a, b = getattr(other.txn, name), getattr(view.txn, name)
                if a is not None and b is not None and a != b and not (name == "card" and same_card(a, b)):
                    diffs[name] = (a, b)
            related = [other]
        else:
            diffs = {k: v for k, v in obs.conflicts.items() if k in _SALE_FIELDS}
            seen = obs.sighting
            stored = view.txn
            if (seen is not None and seen.voucher_no and stored.voucher_no
                    and seen.voucher_no != stored.voucher_no and seen.rrn and seen.rrn == stored.rrn):
                diffs["voucher_no"] = (stored.voucher_no, seen.voucher_no)
            if not diffs:
                return []
        if "voucher_no" in diffs:
            ident = ident_zh = f"RRN {view.txn.rrn}"
        else:
            ident = f"voucher {view.txn.batch_no or '?'}/{view.voucher_label}"
            ident_zh = f"凭证号 {view.txn.batch_no or '?'}/{view.voucher_label}"
        what = "; ".join(f"{k}: {a} vs {b}" for k, (a, b) in sorted(diffs.items()))
        return [self.finding(
            view, related,
            f"{ident} was reported as two different transactions ({what}); "
            f"check the terminal's transaction list before settlement",
            f"{ident_zh} 被报告为两笔不同的交易（{what}）；请在结算前核对终端交易明细",
            evidence(sorted(diffs), [], conflicts={k: [a, b] for k, (a, b) in diffs.items()}),
        )]


class NearDuplicateParams(WindowParams):
    window: Duration = timedelta(minutes=30)
    tolerance_percent: Annotated[Decimal, must(lambda v: 0 < v <= 50,
                                               "must be more than 0 and at most 50 (percent)")] = Decimal("1")


class NearDuplicate(BaseRule[NearDuplicateParams]):
    """DUP-003: the same card charged almost the same amount (within 1%, not equal) twice.

    Equal amounts are DUP-001's; the tolerance is relative to the larger amount
    and compared in exact decimal arithmetic. Something to verify (a second,
    slightly different basket is often a genuine second purchase), not a likely
    error like an exact duplicate.
    """

    id: ClassVar[str] = "DUP-003"
    version: ClassVar[str] = "1"
    family: ClassVar[str] = "DUP"
    default_severity: ClassVar[str] = "medium"
    specificity: ClassVar[int] = 20
    certainty: ClassVar[str] = "verify"
    action: ClassVar[str] = "check"
    title_en: ClassVar[str] = "Near-duplicate charge"
    title_zh: ClassVar[str] = "疑似重复扣款"
    Params = NearDuplicateParams

    def state_horizon(self) -> timedelta:
        return self.params.window

    def _near(self, a: int, b: int) -> bool:
        return a != b and Decimal(abs(a - b)) * 100 <= self.params.tolerance_percent * max(a, b)

    def check(self, state: RuleState, obs: Observation, now: datetime) -> list[Finding]:
        w = self.params.window
        repeated = _repeated_charge(state, obs, w, self._near)
        if repeated is None:
            return []
        subject, related = repeated
        involved = [*related, subject]
        amounts = ", ".join(money(v) for v in involved)
        window = format_duration(w)
        tol = f"{self.params.tolerance_percent.normalize()}%"
        diff = abs(subject.amount_minor - related[-1].amount_minor)
        return [self.finding(
            subject, related,
            f"Same card {subject.card} charged nearly the same amount {len(involved)} times within {window} "
            f"({amounts}; within {tol}; vouchers {vouchers(involved)}; last at {hhmm(subject)})",
            f"同一张卡 {subject.card} 在 {window} 内被扣近似金额 {len(involved)} 次"
            f"（{amounts}；相差不超过 {tol}；凭证号 {vouchers(involved)}；最近一笔 {hhmm(subject)}）",
            evidence(diff, str(self.params.tolerance_percent),
                     unit="minor units apart (threshold in percent)",
                     seconds_apart=int((subject.utc - related[-1].utc).total_seconds()),
                     window_seconds=int(w.total_seconds())),
        )]


class RekeyedParams(WindowParams):
    window: Duration = timedelta(minutes=2)
    common_count: Annotated[int, must(lambda v: v >= 2,
                                      "must be at least 2 (one sale does not make a common price)")] = 3


class RekeyedOnOtherCard(BaseRule[RekeyedParams]):
    """DUP-004: right after a declined or voided charge, the same amount approved on a different card.

    Usually the customer simply paid with another card, so the action is
    "check": confirm the first card was really not charged (a "declined" that
    timed out at the terminal may still have been approved by the issuer) and
    watch for card testing (several cards tried for one amount). Only a decline
    or void *before* the approval counts (inclusive window, 2 minutes: a
    customer who changes cards does it at once, while in a lunch rush two
    strangers paying the same amount a few minutes apart are common).
    An amount the shop charged ``common_count`` (3) or more times in the last
    30 days (a set lunch, a list price) is not evidence of a re-key: the next
    customer at that price is no coincidence.
    """

    id: ClassVar[str] = "DUP-004"
    version: ClassVar[str] = "2"
    family: ClassVar[str] = "DUP"
    default_severity: ClassVar[str] = "low"
    specificity: ClassVar[int] = 10
    certainty: ClassVar[str] = "verify"
    title_en: ClassVar[str] = "Re-keyed on another card"
    title_zh: ClassVar[str] = "失败/撤销后换卡重刷"
    action: ClassVar[str] = "check"
    Params = RekeyedParams

    def state_horizon(self) -> timedelta:
        return self.params.window

    def check(self, state: RuleState, obs: Observation, now: datetime) -> list[Finding]:
        view = obs.view
        card = view.card
        if not obs.is_new or not is_charge(view) or not card:
            return []
        base = state.baseline
        charged_before = base.price_count(view.amount_minor) if base is not None else 0
        if charged_before >= self.params.common_count:
            return []
        w = self.params.window
        attempts: list[TxnView] = []
        first_cards: list[str] = []
        for v in state.same_amount(view.amount_minor, view.utc - w, view.utc):
            if v.key == view.key:
                continue
            first_card = v.card
            if v.approved and v.txn.kind in ("void", "reversal"):
                original = state.by_reference(terminal_id=v.txn.terminal_id,
                                              voucher_no=v.txn.original_voucher_no, rrn=v.txn.original_rrn)
                first_card = first_card or (original.card if original else None)
            elif v.approved or v.txn.kind not in ("sale", "preauth_complete"):
                continue
            if first_card and not same_card(first_card, card):
                attempts.append(v)
                first_cards.append(first_card)
        if not attempts:
            return []
        last, last_card = attempts[-1], first_cards[-1]
        what_en = "declined" if not last.approved else "voided"
        what_zh = "被拒" if not last.approved else "被撤销"
        gap = int((view.utc - last.utc).total_seconds())
        return [self.finding(
            view, attempts,
            f"{money(view)} on card {card} at {hhmm(view)}, {gap}s after the same amount was {what_en} on "
            f"card {last_card} (voucher {last.voucher_label}); check the first card was not charged",
            f"{hhmm(view)} 卡 {card} 扣款 {money(view)}，距卡 {last_card} 同金额{what_zh}"
            f"（凭证号 {last.voucher_label}）仅 {gap} 秒；请确认第一张卡未被扣款",
            evidence(gap, int(w.total_seconds()), unit="seconds after the failed attempt",
                     attempts=len(attempts), charged_before=charged_before,
                     common_count=self.params.common_count),
        )]
