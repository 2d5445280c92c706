"""The running baseline (agent/rules/baseline.RunningBaseline, fed by agent/rules/state.SaleAmounts) equals
AmountBaseline.compute on the same window, field by field, whatever order sales arrive and leave in."""

from __future__ import annotations

import dataclasses
import random
from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.rules.baseline import KNOWN_PRICES_KEPT, AmountBaseline, RunningBaseline
from agent.rules.state import SaleAmounts

SHANGHAI = ZoneInfo("Asia/Shanghai")
START = datetime(2026, 3, 1, tzinfo=UTC)
WINDOW = timedelta(hours=30)


def assert_same(running: AmountBaseline | None, reference: AmountBaseline | None) -> None:
    if reference is None or running is None:
        assert running is reference
        return
    for f in dataclasses.fields(AmountBaseline):   # compare=False fields too, and the floats bit for bit
        got, want = getattr(running, f.name), getattr(reference, f.name)
        assert type(got) is type(want) and got == want, f.name
    assert list(running.price_counts.items()) == list(reference.price_counts.items())   # most_common's order


def window_of(added: list[tuple[datetime, int]], since: datetime, until: datetime) -> list[tuple[datetime, int]]:
    """What the daemon's refresh stands for (tests/test_grouped_baseline.pairs_in): every pair in [since, until]."""
    return [p for p in added if since <= p[0] <= until]


# A step: a sale at a minute offset from the refresh instant (negative: a late report; positive: stamped
# ahead of it), or the refresh instant moving on by some minutes (a big move empties the window).
sale = st.tuples(st.just("sale"), st.integers(-40 * 60, 120),
                 st.one_of(st.sampled_from([1800, 1800, 2000, 3600, 10000, 0]),   # ties, list prices, a zero
                           st.integers(1, 2_000_000),
                           st.integers(10**9, 10**12)))   # up to the boundary's limit; the capped histogram
move = st.tuples(st.just("move"), st.one_of(st.integers(0, 180), st.integers(24 * 60, 80 * 60)), st.just(0))


def replay_steps(steps: list[tuple[str, int, int]], tz: tzinfo | None) -> int:
    sales = SaleAmounts(WINDOW, tz=tz)
    added: list[tuple[datetime, int]] = []
    now, refreshes = START, 0
    for kind, minutes, amount in steps:
        if kind == "sale":
            at = now + timedelta(minutes=minutes, seconds=7 * len(added) % 60)
            sales.add(at, amount)
            added.append((at, amount))
            continue
        now += timedelta(minutes=minutes)
        running, held = sales.baseline(now - WINDOW, now)
        window = window_of(added, now - WINDOW, now)
        assert held == len(window)
        assert_same(running, AmountBaseline.compute(window, now, tz))
        refreshes += 1
    return refreshes


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(sale, sale, sale, move), max_size=120), st.sampled_from([SHANGHAI, None]))
def test_running_baseline_equals_compute(steps: list[tuple[str, int, int]], tz: tzinfo | None) -> None:
    replay_steps([*steps, ("move", 0, 0)], tz)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 5), min_size=1, max_size=60), st.integers(1, 4))
def test_mad_zero_falls_back_like_compute(amounts: list[int], repeat: int) -> None:
    """Over half the sales on one amount: MAD is 0 and the mean absolute deviation (or nothing) is the spread."""
    steps = [("sale", -i, 1800 if i % 3 else 1800 * a) for i, a in enumerate(amounts * repeat)]
    steps += [("sale", -1, 1800)] * len(steps) + [("move", 1, 0)]
    assert replay_steps(steps, SHANGHAI) == 1


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**32))
def test_more_than_512_distinct_amounts(seed: int) -> None:
    """More distinct amounts than price_counts keeps, ties at the cut included, over days that come and go."""
    rng = random.Random(seed)
    steps: list[tuple[str, int, int]] = []
    for _ in range(4):
        for _ in range(rng.randrange(400, 900)):
            amount = rng.choice([rng.randrange(1, 3000), rng.randrange(1, 10**7), 100 * rng.randrange(1, 40)])
            steps.append(("sale", -rng.randrange(0, 20 * 60), amount))
        steps.append(("move", rng.choice([60, 600, 1500]), 0))
    assert replay_steps(steps, SHANGHAI) == 4


def test_a_month_of_shop_days() -> None:
    """A simulated month moving a day at a time (the replay's shape): the window fills, then slides."""
    from bench.inputs import sim_days

    sales = SaleAmounts(timedelta(days=30), tz=SHANGHAI)
    added: list[tuple[datetime, int]] = []
    for day in sim_days(40, 120):
        for e in day:
            ev = e.event
            if getattr(ev, "kind", None) == "sale" and ev.time is not None and ev.amount_minor:
                at = ev.time.astimezone(UTC)
                sales.add(at, ev.amount_minor)
                added.append((at, ev.amount_minor))
        now = max(t for t, _ in added) + timedelta(hours=1)
        running, _ = sales.baseline(now - timedelta(days=30), now)
        assert running is not None and running.count > 0
        assert_same(running, AmountBaseline.compute(window_of(added, now - timedelta(days=30), now), now, SHANGHAI))
    assert len(sales) < len(added)   # what left the window is gone


def test_price_counts_cut_at_512_keeps_the_smaller_amounts_of_a_tie() -> None:
    running = RunningBaseline(SHANGHAI)
    pairs = [(START + timedelta(minutes=i), 1000 + i) for i in range(KNOWN_PRICES_KEPT + 100)]
    for at, amount in pairs:
        running.enter(amount, *running.place(at))
    got = running.baseline(START)
    assert got is not None and list(got.price_counts) == [1000 + i for i in range(KNOWN_PRICES_KEPT)]
    assert_same(got, AmountBaseline.compute(pairs, START, SHANGHAI))


def test_pairs_and_late_reports_behind_the_window() -> None:
    """A sale reported after the window has moved past its time is never counted (nor by the journal's query)."""
    sales = SaleAmounts(WINDOW, [(START, 500), (START + timedelta(hours=2), 700)], tz=SHANGHAI)
    now = START + WINDOW + timedelta(hours=1)
    assert sales.pairs(now - WINDOW, now) == [(START + timedelta(hours=2), 700)]
    sales.add(START + timedelta(minutes=30), 900)   # behind the window's start: dropped
    sales.add(now - timedelta(minutes=1), 1100)     # a late report inside it: counted
    running, held = sales.baseline(now - WINDOW, now)
    assert held == 2 and running is not None and running.count == 2
    assert_same(running, AmountBaseline.compute([(START + timedelta(hours=2), 700), (now - timedelta(minutes=1), 1100)],
                                                now, SHANGHAI))
    emptied = now + 2 * WINDOW
    assert sales.baseline(emptied - WINDOW, emptied) == (None, 0)
    sales.add(emptied, 1200)
    refilled, held = sales.baseline(emptied - WINDOW, emptied)
    assert held == 1 and refilled is not None and refilled.method == "constant"


def test_histogram_capped_at_max_bins() -> None:
    """Amounts further apart than MAX_BINS steps: the last running total holds every amount, as compute's."""
    steps = [("sale", -i, a) for i, a in enumerate([1, 3, 180, 1800, 1800, 10**11, 10**11 + 7])] + [("move", 1, 0)]
    assert replay_steps(steps, None) == 1


def test_tail_hours_when_the_tail_kept_is_cut_among_equal_amounts(monkeypatch: pytest.MonkeyPatch) -> None:
    """tail_hours lines up with tail_amounts (equal amounts by hour bin), and where TAIL_KEPT cuts a run of one
    amount both forms keep the same (latest) bins of it."""
    import agent.rules.baseline as baseline_module

    for kept in (1, 2, 3, 5, 8, 40):
        monkeypatch.setattr(baseline_module, "TAIL_KEPT", kept)
        rng = random.Random(kept)
        steps: list[tuple[str, int, int]] = []
        for _ in range(3):
            for _ in range(rng.randrange(60, 140)):
                amount = rng.choice([1800, 2000, 90000, 90000, 90000, 120000, 120000, rng.randrange(1, 10**6)])
                steps.append(("sale", -rng.randrange(0, 28 * 60), amount))
            steps.append(("move", rng.choice([30, 300]), 0))
        assert replay_steps(steps, SHANGHAI) == 3
        # The cut inside one amount's run of sales at different hours: the same (latest) bins in both forms.
        run = [("sale", -m, 90000) for m in (600, 61, 300, 1200, 59)] + [("sale", -m, 100) for m in range(200)]
        assert replay_steps([*run, ("move", 1, 0)], SHANGHAI) == 1
        got = AmountBaseline.compute([(START + timedelta(hours=h), 90000) for h in (9, 3, 20)]
                                     + [(START, 100)] * 100, START, SHANGHAI)
        assert got is not None and len(got.tail_hours) == len(got.tail_amounts) == min(kept, 3)
        # 03:00, 09:00 and 20:00 UTC on a Sunday: Sunday 11:00 and 17:00 and Monday 04:00 in Shanghai.
        assert got.tail_hours == (4, 24 + 11, 24 + 17)[3 - min(kept, 3):]
