"""Builders shared by the rule tests: transactions, views and an engine driven like the pipeline does."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

from agent.model import Transaction, identity_key
from agent.rules.base import Finding, Observation, TxnView
from agent.rules.calendar import HoursConfig
from agent.rules.engine import RuleEngine, validate_rule_params

SHANGHAI = ZoneInfo("Asia/Shanghai")
CARD = "622576******6691"
OTHER_CARD = "621700******1234"
_vouchers = itertools.count(1)


def at(text: str, tz: tzinfo = SHANGHAI) -> datetime:
    """'2026-03-10 14:03' on the shop's wall clock."""
    return datetime.fromisoformat(text).replace(tzinfo=tz)


def txn(when: datetime, amount: int = 12800, *, kind: str = "sale", result: str = "approved",
        card: str | None = CARD, voucher: str | None = None, terminal: str = "15221155",
        batch: str = "000001",
        rrn: str | None = None, operator: str | None = "01", entry_mode: str | None = "chip",
        original_voucher: str | None = None, original_rrn: str | None = None,
        currency: str = "CNY") -> Transaction:
    return Transaction(
        source="jsonl", kind=kind, result=result, amount_minor=amount, time=when, terminal_id=terminal,
        batch_no=batch, voucher_no=voucher or f"{next(_vouchers):06d}", rrn=rrn, card=card, currency=currency,
        entry_mode=entry_mode, operator=operator, original_voucher_no=original_voucher,
        original_rrn=original_rrn,
    )


def view_of(t: Transaction, tz: tzinfo = SHANGHAI) -> TxnView:
    assert t.time is not None
    utc = t.time.astimezone(UTC)
    return TxnView(key=identity_key(t) or f"u:{utc.isoformat()}", txn=t, utc=utc, local=utc.astimezone(tz))


def view(when: datetime, amount: int = 12800, **kw: Any) -> TxnView:
    tz = kw.pop("tz", when.tzinfo or SHANGHAI)
    return view_of(txn(when, amount, **kw), tz)


class Till:
    """An engine fed the way agent.pipeline feeds it: evaluate, then observe new transactions."""

    def __init__(self, tz: tzinfo = SHANGHAI, rules: dict[str, dict[str, Any]] | None = None,
                 history: Any = None, hours: dict[str, Any] | None = None) -> None:
        params = validate_rule_params(rules or {})
        self.engine = RuleEngine(tz, params, history,
                                 hours=HoursConfig.model_validate(hours) if hours is not None else None)
        self.tz = tz

    def see(self, v: TxnView, *, is_new: bool = True, now: datetime | None = None,
            conflicts: dict[str, tuple[Any, Any]] | None = None, reprint: bool = False,
            sighting: Transaction | None = None) -> list[Finding]:
        obs = Observation(view=v, is_new=is_new, conflicts=conflicts or {}, reprint=reprint,
                          sighting=sighting)
        now = now or v.utc + timedelta(seconds=1)
        findings = self.engine.evaluate(obs, now)
        if is_new:
            self.engine.observe(v)
        self.engine.prune(now)
        return findings

    def see_all(self, views: Iterable[TxnView]) -> list[Finding]:
        out: list[Finding] = []
        for v in views:
            out.extend(self.see(v))
        return out

    def sale(self, when: datetime, amount: int = 12800, **kw: Any) -> list[Finding]:
        return self.see(view(when, amount, tz=self.tz, **kw))


def rules_of(findings: list[Finding]) -> list[str]:
    return sorted(f.rule for f in findings)


def only(findings: list[Finding], rule: str) -> Finding:
    hits = [f for f in findings if f.rule == rule]
    assert len(hits) == 1, f"expected one {rule}, got {rules_of(findings)}"
    return hits[0]


def assert_well_formed(f: Finding) -> None:
    assert f.reason_en and f.reason_zh and f.reason_en != f.reason_zh
    assert {"value", "threshold", "baseline"} <= set(f.evidence)
    assert f.action in ("void", "check")
    assert f.severity in ("high", "medium", "low")
