"""Labelled simulated days through the real pipeline: the rule targets of EVALUATION.md hold on a reduced run."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest

from agent.model import Transaction
from agent.rules.calendar import ShopCalendar
from agent.sim.day import ANOMALY_LABELS, build_day
from agent.sim.evaluate import (
    Summary,
    false_alerts_per_clean_day,
    family_markdown,
    markdown,
    parse_seeds,
    plan_seed,
    run_seed,
    score,
)
from agent.sim.shops import PROFILES

SHANGHAI = ZoneInfo("Asia/Shanghai")


@pytest.fixture(scope="module")
def reduced_run() -> Summary:
    # One seed per profile (restaurant on a make-up workday, convenience store, boutique, the banquet
    # restaurant's heavy tail, the bakery's round prices and group orders), smaller history.
    plan = (("restaurant", 12), ("convenience", 4), ("boutique", 5), ("banquet", 3), ("bakery", 9))
    return score([run_seed(seed, count=300, history_days=33, history_per_day=60, profile_name=name)
                  for name, seed in plan])


def test_duplicates_slips_and_off_hours_are_found(reduced_run: Summary) -> None:
    for rule_id in ("DUP-001", "DUP-003", "TIME-001", "TIME-002", "REF-001", "VEL-001", "ENTRY-001"):
        sc = reduced_run.rules[rule_id]
        assert sc.labelled > 0 and sc.recall is not None and sc.recall >= 0.95, (rule_id, reduced_run.misses)


def test_slips_are_found_except_some_tenfold_ones(reduced_run: Summary) -> None:
    # Known limit (EVALUATION.md): a tenfold slip that lands where honest amounts live (18.00 -> 180.00 in a
    # convenience store, a restaurant ticket landing among the banquets) cannot be told apart by amount alone;
    # AMT-001 now leaves those to the shop's genuine large bills rather than raise a false alert.
    assert reduced_run.rules["AMT-001"].labelled == 10
    slip_misses = [m for m in reduced_run.misses if "missed by AMT-001" in m]
    # A hundredfold slip is always an amount alert: AMT-001's, or AMT-002's with a thin month of history.
    hundredfold = [m for m in slip_misses if "slip_x100 " in m]
    assert all("raised: AMT-002" in m or "raised: AMT-003" in m for m in hundredfold), hundredfold


def test_at_most_one_false_alert_per_clean_day_of_300_transactions_in_every_shop(reduced_run: Summary) -> None:
    assert false_alerts_per_clean_day(reduced_run) <= 1.0, markdown(reduced_run)
    for name, p in reduced_run.by_profile.items():
        assert p["clean_fp"] * 300 / p["clean_txns"] <= 1.0, (name, reduced_run.false_alerts)


def test_no_duplicate_rule_fires_on_a_clean_day(reduced_run: Summary) -> None:
    # DUP-004 v1 flagged the next customer paying a common price right after someone's decline.
    assert all(sc.clean_fp == 0 for rid, sc in reduced_run.rules.items() if rid.startswith("DUP")), \
        reduced_run.false_alerts


def test_reprints_and_make_up_workday_sales_raise_nothing(reduced_run: Summary) -> None:
    restaurant = reduced_run.by_profile["restaurant"]
    assert restaurant["makeup_sales"] > 100 and restaurant["makeup_alerts"] == 0
    assert all(p["reprints"] > 0 and p["reprint_alerts"] == 0 for p in reduced_run.by_profile.values())


def test_the_report_is_a_markdown_table_with_every_profile(reduced_run: Summary) -> None:
    text = markdown(reduced_run)
    assert "| AMT-001 | slip_x10, slip_x100 |" in text
    assert all(f"| {name} |" in text for name in ("restaurant", "convenience", "boutique"))
    sided = family_markdown(reduced_run)
    assert all(f"| {name} |" in sided for name in PROFILES) and "ours / naive" in sided


def test_a_clean_day_has_no_anomaly_labels_only_reprints() -> None:
    for profile in PROFILES.values():
        events = build_day("clean", seed=11, day=date(2025, 11, 5), tz=SHANGHAI, profile=profile)
        assert events and not {e.label for e in events} & set(ANOMALY_LABELS)
        assert any(e.reprint for e in events)


def test_a_mixed_day_carries_every_anomaly_label() -> None:
    plan = plan_seed(4)
    events = build_day("mixed", seed=4, day=plan.day, tz=SHANGHAI, profile=plan.profile,
                       closed_day=plan.closed_day)
    assert set(ANOMALY_LABELS) <= {e.label for e in events}


def test_off_hours_sales_are_outside_opening_hours_and_ordinary_sales_inside_the_grace() -> None:
    for seed in (12, 4, 5):
        plan = plan_seed(seed)
        cal = ShopCalendar(plan.profile.hours_config(plan.closures), SHANGHAI)
        events = build_day("mixed", seed=seed, day=plan.day, tz=SHANGHAI, profile=plan.profile,
                           closed_day=plan.closed_day)
        for e in events:
            if not isinstance(e.event, Transaction) or e.label == "holiday":
                continue
            inside = cal.is_open(e.at, timedelta(minutes=15))
            assert inside == (e.label != "off_hours"), (seed, e.at, e.label)


def test_the_restaurant_trades_on_make_up_workdays_and_not_on_holidays() -> None:
    restaurant = PROFILES["restaurant"]
    makeup_sunday, national_day = date(2025, 9, 28), date(2025, 10, 1)
    on_makeup = build_day("clean", seed=1, day=makeup_sunday, tz=SHANGHAI, profile=restaurant)
    assert on_makeup and all(e.label in ("makeup_workday", "reprint") for e in on_makeup if e.label)
    assert build_day("clean", seed=1, day=national_day, tz=SHANGHAI, profile=restaurant) == []


def test_regular_customers_come_back_on_other_days() -> None:
    convenience = PROFILES["convenience"]
    days = [build_day("clean", seed=s, day=date(2025, 11, 3) + timedelta(days=s), tz=SHANGHAI,
                      profile=convenience, pool_seed=9) for s in (1, 2)]
    cards = [{e.event.card for e in evs if isinstance(e.event, Transaction)} for evs in days]
    assert len(cards[0] & cards[1]) > 20


def test_a_returning_card_pays_again_only_after_an_hour_unless_retrying_a_decline_or_a_void() -> None:
    # Independent draws once let a bakery regular pay the same RMB 13.00 twice within minutes: a clean day
    # that looks exactly like a duplicate charge (DUP-001), which real customers coming back do not produce.
    for profile in PROFILES.values():
        for seed in range(1, 4):
            events = build_day("clean", seed=seed, day=date(2025, 11, 5), tz=SHANGHAI, profile=profile)
            paid: dict[str, list[Transaction]] = {}
            for e in events:
                txn = e.event
                if isinstance(txn, Transaction) and not e.reprint and txn.card:
                    paid.setdefault(txn.card, []).append(txn)
            for txns in paid.values():
                if any(t.kind != "sale" or t.result != "approved" for t in txns):
                    continue          # a decline retried or a sale voided and rung again: minutes apart
                times = sorted(t.time for t in txns if t.time is not None)
                assert all(b - a >= timedelta(hours=1) for a, b in pairwise(times)), txns


def test_amounts_are_whole_minor_units_around_the_profiles_median() -> None:
    boutique = PROFILES["boutique"]
    events = build_day("clean", seed=2, day=date(2025, 11, 5), tz=SHANGHAI, profile=boutique, count=400)
    amounts = sorted(e.event.amount_minor for e in events if isinstance(e.event, Transaction) and not e.reprint)
    assert all(isinstance(a, int) and a > 0 for a in amounts)
    assert 0.7 * boutique.median_minor < amounts[len(amounts) // 2] < 1.4 * boutique.median_minor


def test_the_demo_day_is_unchanged() -> None:
    # The demo, its integration test and the seeded history depend on these exact events.
    events = build_day("demo", seed=7, day=date(2026, 11, 27), tz=SHANGHAI)
    labelled = [(e.at.time().isoformat(), e.label, e.event.amount_minor) for e in events
                if e.label and isinstance(e.event, Transaction)]
    assert labelled == [("14:04:40", "dup_exact", 12800), ("14:05:10", "reprint", 12800),
                        ("16:20:12", "slip_x100", 680000), ("22:15:30", "void_of_duplicate", 12800),
                        ("22:41:00", "off_hours", 4500)]
    assert len(events) == 67 and isinstance(events[0].at, datetime)


def test_seed_ranges_parse() -> None:
    assert parse_seeds("101-103,7") == [101, 102, 103, 7]
