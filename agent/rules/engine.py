"""Runs the enabled rules on each observation and folds findings per family.

The pipeline talks to rules only through :class:`RuleEngine`:
``evaluate(obs, now)`` (findings for staff, one per family and subject),
``observe(view)`` / ``prune(now)`` (keep the in-memory state current),
``refresh_baseline(amounts, now)`` (the shop's usual amounts from the journal,
on a schedule; ``baseline_window`` says how far back to read) and
``warnings(now)`` (configuration problems to shout about, e.g. a year the
holiday calendar does not cover).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta, tzinfo
from typing import Any

from pydantic import ValidationError

from agent.rules import RULES
from agent.rules.base import Finding, Observation, TxnView
from agent.rules.baseline import AmountBaseline
from agent.rules.calendar import HoursConfig, ShopCalendar
from agent.rules.lookback import JournalRuleState, Rows
from agent.rules.state import History, RuleState

# The in-memory horizon never drops below a day: VOID-001 shifts and AMT-004 look back that far.
MIN_HORIZON = timedelta(hours=25)
DEFAULT_BASELINE_WINDOW = timedelta(days=30)
TALLY_PRUNE_EVERY = timedelta(minutes=10)


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
                 history: History | None = None, *, hours: HoursConfig | None = None,
                 lookback: Rows | None = None) -> None:
        params = validate_rule_params({}) if rule_params is None else dict(rule_params)
        for rule_id, cls in RULES.items():
            params.setdefault(rule_id, cls.Params())
        self.params = params
        self.rules = [RULES[rid](p) for rid, p in params.items() if p.enabled]
        self.calendar = ShopCalendar(hours, tz)
        horizon = max([MIN_HORIZON, *(r.state_horizon() for r in self.rules)])
        # ``lookback``: the daemon's look-backs answered from the journal (agent/rules/lookback.py), not memory.
        self.state = (RuleState(tz, horizon=horizon, history=history, calendar=self.calendar) if lookback is None
                      else JournalRuleState(tz, lookback, horizon=horizon, history=history, calendar=self.calendar))
        self._tallies_pruned: datetime | None = None

    # -- per transaction -------------------------------------------------------------------
    def evaluate(self, obs: Observation, now: datetime) -> list[Finding]:
        findings: list[Finding] = []
        state = self.state
        if obs.conflicts:
            state.conflicting_sighting(obs)
        for rule in self.rules:
            hits = rule.check(state, obs, now)
            if hits:
                findings.extend(hits)
        return fold_by_family(findings) if len(findings) > 1 else findings

    def observe(self, view: TxnView) -> None:
        self.state.observe(view)
        for rule in self.rules:
            rule.observe(self.state, view)

    def prune(self, now: datetime) -> None:
        self.state.prune(now)
        # Rule tallies are per shift and day: sweeping them every few minutes is plenty.
        if self._tallies_pruned is None or now - self._tallies_pruned >= TALLY_PRUNE_EVERY:
            self._tallies_pruned = now
            for rule in self.rules:
                rule.prune(self.state, now)

    # -- scheduled ---------------------------------------------------------------------------
    @property
    def baseline_window(self) -> timedelta:
        """How far back the amounts handed to :meth:`refresh_baseline` should reach (AMT-002 ``window``)."""
        p = self.params.get("AMT-002")
        return p.window if p is not None else DEFAULT_BASELINE_WINDOW

    def refresh_baseline(self, amounts_minor: Sequence[int] | Sequence[tuple[datetime, int]],
                         now: datetime) -> AmountBaseline | None:
        """Recompute the shop's usual amounts from approved sale amounts in [now - baseline_window, now].

        O(n log n) once per refresh, so evaluating a transaction stays O(1).
        """
        baseline = AmountBaseline.compute(amounts_minor, now, self.state.tz)
        self.state.set_baseline(baseline)
        return baseline

    @property
    def baseline(self) -> AmountBaseline | None:
        return self.state.baseline

    def warnings(self, now: datetime) -> list[str]:
        """Configuration problems an operator must hear about (log them loudly, show them in doctor)."""
        year = now.astimezone(self.state.tz).year
        out = []
        for y in (year, year + 1) if now.astimezone(self.state.tz).month == 12 else (year,):
            msg = self.calendar.coverage_warning(y)
            if msg and self.calendar.configured:
                out.append(msg)
        return out

    @property
    def insufficient(self) -> Counter[str]:
        """Rule id -> how many transactions it could not judge for lack of history or data."""
        return self.state.insufficient


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
            f = dataclasses.replace(f, evidence={**f.evidence, "also_matched": sorted(others[k])})
        out.append(f)
    return out
