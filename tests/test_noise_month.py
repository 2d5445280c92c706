"""The noise budget's target: 30 simulated days per shop profile, through replay and the delivery loop.

With the default budget, on days without a true finding: median <= 2 and max <= 6 messages per phone,
and nothing pushed in quiet hours unless critical (EVALUATION.md, "Noise budget"; agent/sim/noise.py).
"""

from __future__ import annotations

import pytest

from agent.sim.noise import run_profile


@pytest.mark.parametrize("profile", ["restaurant", "convenience", "boutique"])
def test_a_month_on_the_default_budget_stays_within_it(profile: str) -> None:
    result = run_profile(profile, days=30)
    counts = [d.count for d in result.judged()]
    assert len(counts) == 30
    assert result.median <= 2, counts
    assert result.maximum <= 6, counts
    assert result.quiet_not_critical == 0
    assert sum(result.alerts.values()) > 0, "false alerts happened: the budget was exercised"
    # Closed days (the restaurant's weekends) get nothing: no review, no all-clear.
    if profile == "restaurant":
        closed = [d for d in result.days if d.day.weekday() >= 5]
        assert closed and all(d.count == 0 for d in closed)
