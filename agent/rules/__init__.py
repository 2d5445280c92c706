"""The rule catalogue. Adding a rule: write its module, add one line to RULES."""

from __future__ import annotations

from agent.rules.amount import AmountCeiling, AmountOutlier, DecimalSlip, JustUnderLimit
from agent.rules.base import BaseRule, Finding, Observation, TxnView
from agent.rules.duplicate import ExactDuplicate, IdentityConflict, NearDuplicate, RekeyedOnOtherCard
from agent.rules.entry import ManualEntry
from agent.rules.match import ApprovedAfterGivingUp, ChargeDiffersFromSale, ChargeWithoutSale, SecondChargeForSale
from agent.rules.params import RuleParams
from agent.rules.refund import UnmatchedRefund
from agent.rules.state import RuleState
from agent.rules.timing import ClosedDay, OutsideHours
from agent.rules.velocity import CardVelocity
from agent.rules.voids import OperatorVoids

RULES: dict[str, type[BaseRule]] = {  # type: ignore[type-arg]
    ExactDuplicate.id: ExactDuplicate,
    IdentityConflict.id: IdentityConflict,
    NearDuplicate.id: NearDuplicate,
    RekeyedOnOtherCard.id: RekeyedOnOtherCard,
    DecimalSlip.id: DecimalSlip,
    AmountOutlier.id: AmountOutlier,
    AmountCeiling.id: AmountCeiling,
    JustUnderLimit.id: JustUnderLimit,
    CardVelocity.id: CardVelocity,
    OutsideHours.id: OutsideHours,
    ClosedDay.id: ClosedDay,
    UnmatchedRefund.id: UnmatchedRefund,
    OperatorVoids.id: OperatorVoids,
    ManualEntry.id: ManualEntry,
    ChargeDiffersFromSale.id: ChargeDiffersFromSale,
    SecondChargeForSale.id: SecondChargeForSale,
    ChargeWithoutSale.id: ChargeWithoutSale,
    ApprovedAfterGivingUp.id: ApprovedAfterGivingUp,
}

__all__ = ["RULES", "BaseRule", "Finding", "Observation", "RuleParams", "RuleState", "TxnView"]
