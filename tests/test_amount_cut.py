"""Issue 20: AMT-001's "please check" cut, scored once per distinct bill, is the cut of scoring every bill.

``DecimalSlip.verify_cut`` weighs each distinct amount once and each hour bin once, and counts the budget
down over distinct scores with their multiplicities. The reference below is the computation it replaced,
written plainly: every kept large bill through ``weigh`` at its own hour, the scores sorted, the budget's
index read. The two must give the same float, bit for bit, on any month.
"""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.rules.amount import DecimalSlip, SlipParams
from agent.rules.baseline import AmountBaseline
from tests.helpers import SHANGHAI

NOW = datetime(2026, 3, 10, 4, 0, tzinfo=UTC)


def reference_scores(rule: DecimalSlip, base: AmountBaseline) -> list[float]:
    """Every kept large bill, list prices skipped, weighed as a live charge at its own hour, left out of itself."""
    p = rule.params
    hours = base.tail_hours or (None,) * len(base.tail_amounts)
    scores = []
    for a, h in zip(base.tail_amounts, hours, strict=True):
        if base.price_count(a) >= p.known_count:
            continue
        hour = 1.0 if h is None else base.hour_factor_at(h, leave_out=1)
        ev = rule.weigh(base, a, hour_factor=hour, leave_out=1)
        if ev is not None:
            scores.append(ev.score)
    return scores


def reference_cut(rule: DecimalSlip, base: AmountBaseline) -> float:
    p = rule.params
    scores = sorted(reference_scores(rule, base), reverse=True)
    allowed = int(float(p.budget) * base.trading_days)
    cut = float(p.verify_floor)
    if len(scores) > allowed:
        cut = max(cut, scores[allowed] + 0.01)
    return min(cut, float(p.min_score))


def random_month(rng: random.Random, timed: bool) -> list[int] | list[tuple[datetime, int]]:
    """A month of sales: small tickets at a rounding step, list prices sold many times, a tail of large bills
    (some repeated, some at round amounts that read as slips, some with a doubled digit), at random times."""
    step = rng.choice([1, 10, 100])
    small = [max(step, round(rng.randint(800, 6000) * rng.lognormvariate(0, 0.4) / step) * step)
             for _ in range(rng.randint(30, 900))]
    prices = [rng.choice([1280, 2510, 3800, 68000]) for _ in range(rng.randint(0, 80))]
    pool = [rng.randint(20, 2000) * 100 for _ in range(rng.randint(1, 12))]     # large bills that recur
    large = [rng.choice(pool) if rng.random() < 0.5 else
             rng.choice([rng.randint(10_000, 400_000), rng.randint(10, 4000) * 10**rng.randint(1, 3),
                         int(str(rng.randint(11, 99)) * 2)])
             for _ in range(rng.choice([0, 1, 3, rng.randint(5, 120)]))]
    amounts = small + prices + large
    rng.shuffle(amounts)
    if not timed:
        return amounts
    start = NOW - timedelta(days=30)
    # Few distinct minutes now and then: many bills share an hour bin (and a day).
    span = rng.choice([30 * 24 * 60, 3 * 60, 40 * 24 * 60])
    return [(start + timedelta(minutes=rng.randrange(span)), a) for a in amounts]


@settings(max_examples=300, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), timed=st.booleans(), zone=st.booleans(),
       budget=st.sampled_from(["0.05", "0.2", "1", "10"]), known=st.integers(2, 5),
       max_power=st.integers(1, 4), floor=st.sampled_from(["-5", "0", "1.0", "2.5"]))
def test_the_cut_scored_per_distinct_bill_is_the_cut_of_scoring_every_bill(
        seed: int, timed: bool, zone: bool, budget: str, known: int, max_power: int, floor: str) -> None:
    rng = random.Random(seed)
    base = AmountBaseline.compute(random_month(rng, timed), NOW, SHANGHAI if zone else None)
    assert base is not None
    assert bool(base.tail_hours) == (timed and bool(base.tail_amounts))
    rule = DecimalSlip(SlipParams(budget=Decimal(budget), known_count=known, max_power=max_power,
                                  verify_floor=Decimal(floor)))
    # The same scores with the same multiplicities (a Counter built from a mapping takes its values as counts).
    assert Counter(rule._tail_scores(base)) == Counter(reference_scores(rule, base))
    assert rule.verify_cut(base).hex() == reference_cut(rule, base).hex()


def test_many_tail_bills_with_repeats_and_shared_hours_give_the_same_cut() -> None:
    # 12,000 sales (600 large bills above P95, many at the same few amounts and hours): the cut the budget
    # sets falls inside a run of equal scores, where counting multiplicities must land on the same index.
    rng = random.Random(20)
    start = NOW - timedelta(days=30)
    small = [(start + timedelta(minutes=rng.randrange(30 * 24 * 60)), rng.randint(500, 9000))
             for _ in range(11_400)]
    large = [(start + timedelta(days=rng.randrange(30), hours=rng.choice([11, 19])),
              rng.choice([120_000, 250_000, 380_000, 66_000]) if rng.random() < 0.7 else rng.randint(10, 9000) * 100)
             for _ in range(600)]
    base = AmountBaseline.compute(small + large, NOW, SHANGHAI)
    assert base is not None and len(base.tail_amounts) >= 600
    for budget in ("0.05", "1", "5", "10"):
        rule = DecimalSlip(SlipParams(budget=Decimal(budget), known_count=1000, verify_floor=Decimal("-50")))
        scores = rule._tail_scores(base)
        assert max(scores.values()) > 1          # bills that share a score: the multiplicities are exercised
        assert sum(scores.values()) == len(reference_scores(rule, base))
        assert rule.verify_cut(base).hex() == reference_cut(rule, base).hex()
