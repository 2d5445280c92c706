"""Certainty declared by each rule (issue 16): likely errors are taken back, things to verify are checked
and expire at the close, never turning into refund guidance."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import ClassVar

import pytest

from agent.alerts.lifecycle import AlertState
from agent.messages import AlertChange, Command
from agent.rules import RULES
from agent.rules.base import BaseRule
from agent.rules.params import RuleParams
from drivers.events import Settlement
from tests.helpers import SHANGHAI, Harness, config, sale
from tests.test_rules_support import view

# Open 09:00-21:30 every day; the harness's cutoff is 23:00.
HOURS = "\n[shop.hours]\n" + "".join(f'{day} = ["09:00-21:30"]\n' for day in ("mon", "tue", "wed", "thu", "fri",
                                                                                 "sat", "sun"))
LIKELY_ERRORS = {"DUP-001", "AMT-001", "AMT-003", "MATCH-001", "MATCH-002", "MATCH-004"}


def at(hh: int, mm: int) -> datetime:
    return datetime(2026, 11, 27, hh, mm, tzinfo=SHANGHAI)   # a Friday


def notices(h: Harness, rule: str) -> list[str]:
    return [c.notice for c in h.changes if isinstance(c, AlertChange) and c.alert.rule == rule]


def test_every_rule_declares_its_certainty_and_only_likely_errors_ask_for_a_void() -> None:
    declared = {rule_id: cls.__dict__.get("certainty") for rule_id, cls in RULES.items()}
    assert None not in declared.values(), f"rules without their own certainty: {declared}"
    assert {r for r, c in declared.items() if c == "error"} == LIKELY_ERRORS
    for rule_id, cls in RULES.items():
        if cls.certainty == "verify":
            assert cls.action == "check", rule_id


def test_a_rule_that_forgets_is_something_to_verify_and_a_wrong_declaration_fails_at_import() -> None:
    assert BaseRule.certainty == "verify"
    with pytest.raises(TypeError, match="certainty must be 'error' or 'verify'"):
        class Sloppy(BaseRule[RuleParams]):
            certainty: ClassVar[str] = "maybe"


def test_a_time_alert_asks_for_a_check_and_expires_at_cutoff_never_refund_guidance(tmp_path: Path) -> None:
    h = Harness(tmp_path, config(HOURS))
    h.feed(sale("000201", 4500, at(22, 41)))          # after closing (21:30 + 15 min grace), before the cutoff
    opened = h.opened("TIME-001")
    assert len(opened) == 1
    alert = opened[0].alert
    assert alert.certainty == "verify" and alert.suggestion is not None and alert.suggestion.action == "check"
    assert "如属正常交易，无需处理" in alert.suggestion.steps_zh and "genuine" in alert.suggestion.steps_en
    h.clock.set(at(23, 0).astimezone(UTC))
    h.pipeline.process([Command("cutoff")])
    assert notices(h, "TIME-001") == ["opened", "expired"]
    final = h.journal.alerts()[0]
    assert final.state == AlertState.EXPIRED
    assert final.suggestion is not None and final.suggestion.action == "check"     # no refund steps
    assert "bundle" not in final.evidence and "statement_zh" not in final.evidence
    assert h.pipeline.counts["alerts_escalated"] == 0


def test_a_time_alert_expires_on_the_terminals_settlement_too(tmp_path: Path) -> None:
    h = Harness(tmp_path, config(HOURS))
    h.feed(sale("000201", 4500, at(22, 41)))
    h.feed(Settlement(source="jsonl", time=at(22, 50), terminal_id="15221155", batch_no="000128", count=1,
                      total_minor=4500, currency="CNY"))
    assert notices(h, "TIME-001") == ["opened", "expired"]


def test_a_likely_error_still_escalates_at_cutoff(tmp_path: Path) -> None:
    h = Harness(tmp_path, config(HOURS))
    h.feed(sale("000122", 12800, at(14, 3)), sale("000123", 12800, at(14, 4)))
    assert h.opened("DUP-001")[0].alert.certainty == "error"
    h.clock.set(at(23, 0).astimezone(UTC))
    h.pipeline.process([Command("cutoff")])
    assert notices(h, "DUP-001") == ["opened", "escalated"]


def test_a_finding_to_verify_never_asks_a_void_whatever_the_caller_passes() -> None:
    cls = RULES["TIME-001"]
    rule = cls(cls.Params())
    finding = rule.finding(view(at(23, 40)), [], "en", "zh", {}, action="void")
    assert (finding.action, finding.certainty) == ("check", "verify")

