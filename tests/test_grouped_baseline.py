"""The daemon's baseline refresh from the journal's groups (agent/rules/grouped_baseline.py over
agent/store/sale_window.py) equals AmountBaseline.compute on the window's (instant, amount) pairs, field by
field and float for float: ties, list prices, a zero MAD, zero amounts, declines and refunds in the window,
the kept tail cut among equal amounts, and zones with DST and odd offsets."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from agent.model import identity_key
from agent.rules import baseline as b
from agent.rules.baseline import AmountBaseline
from agent.rules.grouped_baseline import baseline_from_window
from agent.store.journal import Journal
from agent.store.sale_window import JournalSaleWindow
from agent.store.schema import from_utc_text, utc_text
from tests.helpers import sale
from tests.test_baseline_running import assert_same

START = datetime(2026, 3, 26, tzinfo=UTC)   # Europe's clocks go forward on the 29th, inside the window
ZONES: list[tzinfo | None] = [ZoneInfo("Asia/Shanghai"), ZoneInfo("Europe/Berlin"), ZoneInfo("America/St_Johns"),
                              ZoneInfo("Asia/Kathmandu"), ZoneInfo("Australia/Lord_Howe"), None,
                              timezone(timedelta(minutes=7))]   # not whole quarter-hours: placed sale by sale


def pairs_in(journal: Journal, since: datetime, until: datetime) -> list[tuple[datetime, int]]:
    """What compute is given: every approved sale in [since, until], as the journal stores it."""
    rows = journal.conn.execute(
        "SELECT time_utc, amount_minor FROM transactions WHERE time_utc>=? AND time_utc<=? AND kind='sale'"
        " AND result='approved'", (utc_text(since), utc_text(until))).fetchall()
    return [(from_utc_text(r[0]), r[1]) for r in rows]


def fill(journal: Journal, rng: random.Random, n: int, *, prices: list[int], spread: timedelta) -> None:
    with journal.transaction():
        for i in range(n):
            at = START + timedelta(seconds=rng.randrange(int(spread.total_seconds())),
                                   microseconds=rng.randrange(1_000_000))
            roll = rng.random()
            amount = (rng.choice(prices) if roll < 0.5 else 0 if roll < 0.52
                      else rng.randrange(1, 10**7) if roll < 0.98 else rng.randrange(10**9, 10**12))
            kind = "refund" if rng.random() < 0.03 else "sale"
            result = "declined" if rng.random() < 0.05 else "approved"
            txn = sale(f"{i:06d}", amount, at, kind=kind, result=result, batch=f"{i // 500:06d}")
            key = identity_key(txn)
            assert key is not None
            journal.merge_transaction(txn, key=key, instant=at, received=at, source="jsonl")


def check(journal: Journal, since: datetime, until: datetime, tz: tzinfo | None) -> AmountBaseline | None:
    pairs = pairs_in(journal, since, until)
    reference = AmountBaseline.compute(pairs, until, tz)
    got, rows = baseline_from_window(JournalSaleWindow(journal.conn, since, until), until, tz)
    assert rows == len(pairs)
    assert_same(got, reference)
    return got


@pytest.mark.parametrize("seed", range(6))
def test_the_grouped_refresh_is_compute_on_random_windows(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    journal = Journal(tmp_path / "settleguard.sqlite3")
    fill(journal, rng, 1500, prices=[1800, 2000, 3600, 10000, 18800], spread=timedelta(days=8))
    for tz in ZONES:
        for _ in range(3):
            since = START + timedelta(minutes=rng.randrange(0, 6 * 24 * 60))
            until = since + timedelta(minutes=rng.randrange(1, 3 * 24 * 60))
            check(journal, since, until, tz)
        assert check(journal, START, START + timedelta(days=9), tz) is not None
    journal.close()


def test_the_kept_tail_cut_among_equal_amounts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """TAIL_KEPT (4,000 here) made small: the cut falls inside a run of one large amount charged at many hours,
    and the tail's sum adds that amount's excess 35 times (a product rounds differently)."""
    monkeypatch.setattr(b, "TAIL_KEPT", 7)
    rng = random.Random(7)
    journal = Journal(tmp_path / "settleguard.sqlite3")
    with journal.transaction():
        for i in range(800):   # 4% at one large amount (above P95), four larger ones, the rest small
            amount = 4_999_937 if i % 23 == 0 else 7_777_771 + i if i % 200 == 1 else rng.randrange(100, 10_000)
            at = START + timedelta(minutes=rng.randrange(3 * 24 * 60))
            txn = sale(f"{i:06d}", amount, at)
            journal.merge_transaction(txn, key=f"k{i}", instant=at, received=at, source="jsonl")
    for tz in ZONES:
        got = check(journal, START, START + timedelta(days=3), tz)
        assert got is not None and got.tail_count >= 36   # and a few small ones near P95
        assert got.tail_amounts == (4_999_937,) * 3 + (7_777_772, 7_777_972, 7_778_172, 7_778_372)
    journal.close()


def test_a_zero_mad_window_and_windows_with_nothing_to_count(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "settleguard.sqlite3")
    with journal.transaction():
        for i in range(40):   # over half the sales at one amount: MAD 0, the mean absolute deviation instead
            amount = 1800 if i % 3 else [500, 2500, 99_000][i % 9 // 3]
            txn = sale(f"{i:06d}", amount, START + timedelta(minutes=13 * i))
            journal.merge_transaction(txn, key=f"k{i}", instant=txn.time, received=txn.time, source="jsonl")
        for i in range(40, 43):   # approved, but nothing compute counts as a sale amount
            txn = sale(f"{i:06d}", 0, START + timedelta(days=5, minutes=i))
            journal.merge_transaction(txn, key=f"k{i}", instant=txn.time, received=txn.time, source="jsonl")
    tz = ZoneInfo("Asia/Shanghai")
    got = check(journal, START, START + timedelta(days=1), tz)
    assert got is not None and got.method == "meanad"
    assert baseline_from_window(JournalSaleWindow(journal.conn, START + timedelta(days=5),
                                                  START + timedelta(days=6)), START, tz) == (None, 3)
    assert baseline_from_window(JournalSaleWindow(journal.conn, START - timedelta(days=2),
                                                  START - timedelta(days=1)), START, tz) == (None, 0)
    for n in (1, 2, 3):   # the smallest windows: medians of one, two and three
        check(journal, START, START + timedelta(minutes=13 * (n - 1)), tz)
    journal.close()


def test_a_long_tail_of_rounded_bills(tmp_path: Path) -> None:
    """An exponential tail in ln(amount) (a shop with banquets), bills rounded to 5 yuan so the tail repeats
    amounts: the maximum-likelihood rate is the one kept, so its sum is compared float for float."""
    rng = random.Random(11)
    journal = Journal(tmp_path / "settleguard.sqlite3")
    with journal.transaction():
        for i in range(3000):
            amount = max(500, round(3000 * math.exp(rng.expovariate(1.6)) / 500) * 500)
            at = START + timedelta(minutes=rng.randrange(6 * 24 * 60))
            txn = sale(f"{i:06d}", amount, at)
            journal.merge_transaction(txn, key=f"k{i}", instant=at, received=at, source="jsonl")
    got = check(journal, START, START + timedelta(days=6), ZoneInfo("Asia/Shanghai"))
    assert got is not None and got.tail_count > 100
    cut = math.log(got.p95_minor)
    steep = math.log(got.tail_count + 1) / (math.log(max(got.tail_amounts)) - cut)
    assert got.tail_rate > steep   # the fitted rate, not the bound the largest bill sets
    journal.close()
