"""Runs the enabled rules on each observation and folds findings per family.

The pipeline talks to rules only through :class:`RuleEngine`:
``evaluate(obs, now)`` (findings for staff, one per family and subject),
``observe(view)`` / ``prune(now)`` (keep the in-memory state current) and
``refresh_baseline(...)`` (history from the journal, on a schedule).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, tzinfo
from typing import Any

from pydantic import ValidationError

from agent.rules import RULES
from agent.rules.base import Finding, Observation, TxnView
from agent.rules.state import History, RuleState


class RuleConfigError(ValueError):
    """A rule section is invalid; ``path`` names the key (rules.DUP-001.window)."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


def validate_rule_params(section: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Validate every [rules.ID] table; unknown rule ids are errors."""
    params: dict[str, Any] = {}
    for rule_id, raw in section.items():
        cls = RULES.get(rule_id)
        if cls is None:
            raise RuleConfigError(f"rules.{rule_id}", f"unknown rule (known: {', '.join(sorted(RULES))})")
        try:
            params[rule_id] = cls.Params.model_validate(dict(raw))
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = ".".join(str(p) for p in err["loc"])
            raise RuleConfigError(f"rules.{rule_id}.{loc}" if loc else f"rules.{rule_id}",
                                  f"{err['msg']} (got {err.get('input')!r})") from None
    for rule_id, cls in RULES.items():
        params.setdefault(rule_id, cls.Params())
    return params


class RuleEngine:
    def __init__(self, tz: tzinfo, rule_params: Mapping[str, Any] | None = None,
                 history: History | None = None) -> None:
        params = validate_rule_params({}) if rule_params is None else dict(rule_params)
        for rule_id, cls in RULES.items():
            params.setdefault(rule_id, cls.Params())
        self.rules = [RULES[rid](p) for rid, p in params.items() if p.enabled]
        self.state = RuleState(tz, history=history)

    def evaluate(self, obs: Observation, now: datetime) -> list[Finding]:
        findings: list[Finding] = []
        for rule in self.rules:
            findings.extend(rule.check(self.state, obs, now))
        return fold_by_family(findings)

    def observe(self, view: TxnView) -> None:
        self.state.observe(view)

    def prune(self, now: datetime) -> None:
        self.state.prune(now)


def fold_by_family(findings: list[Finding]) -> list[Finding]:
    """One finding per (family, subject): the most specific speaks, the rest go in its evidence."""
    best: dict[tuple[str, str], Finding] = {}
    others: dict[tuple[str, str], list[str]] = {}
    for f in findings:
        k = (f.family, f.subject.key)
        cur = best.get(k)
        if cur is None or f.specificity > cur.specificity:
            if cur is not None:
                others.setdefault(k, []).append(cur.rule)
            best[k] = f
        else:
            others.setdefault(k, []).append(f.rule)
    out = []
    for k, f in best.items():
        if k in others:
            f = Finding(**{**{s: getattr(f, s) for s in f.__slots__},  # type: ignore[attr-defined]
                           "evidence": {**f.evidence, "also_matched": sorted(others[k])}})
        out.append(f)
    return out
