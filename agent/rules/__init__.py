"""The rule catalogue. Adding a rule: write its module, add one line to RULES."""

from __future__ import annotations

from agent.rules.base import Finding, Observation, Rule, RuleParams, TxnView
from agent.rules.duplicate import ExactDuplicate
from agent.rules.state import RuleState

RULES: dict[str, type] = {
    ExactDuplicate.id: ExactDuplicate,
}

__all__ = ["RULES", "Finding", "Observation", "Rule", "RuleParams", "RuleState", "TxnView"]
