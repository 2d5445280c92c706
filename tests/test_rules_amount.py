"""AMT-001..AMT-004 and the amount baseline: slips, outliers, the ceiling, splitting under a limit."""

from __future__ import annotations

import math
import random
from datetime import timedelta
from typing import Any

import pytest
from test_rules_support import OTHER_CARD, Till, assert_well_formed, at, only, rules_of

from agent.rules.baseline import KNOWN_PRICES_KEPT, MAX_BINS, NEAR_LOG, AmountBaseline
from agent.rules.engine import RuleConfigError, validate_rule_params

NOW = at("2026-03-10 12:00")
# A noodle shop: 30 days of tickets between RMB 25 and RMB 300, most around RMB 60-130.
TYPICAL = [2500, 3200, 3800, 4200, 4500, 4800, 5200, 5600, 5800, 6000, 6200, 6500, 6800, 7000, 7200,
           7500, 7800, 8000, 8500, 8800, 9000, 9500, 9900, 10500, 11000, 12000, 12800, 15000, 22000, 30000]


def shop(amounts: list[int] = TYPICAL, rules: dict[str, dict[str, Any]] | None = None) -> Till:
    till = Till(rules=rules)
    till.engine.refresh_baseline(amounts, NOW)
    return till


# -- the baseline ---------------------------------------------------------------------------
def test_baseline_percentiles_are_amounts_that_really_occurred() -> None:
    b = AmountBaseline.compute(TYPICAL, NOW)
    assert b is not None
    assert (b.count, b.p05_minor, b.p95_minor, b.median_minor) == (30, 3200, 22000, 7200)
    assert b.method == "mad" and b.sigma_log > 0


def test_baseline_ignores_zero_amounts_and_is_none_when_nothing_is_left() -> None:
    assert AmountBaseline.compute([0, 0], NOW) is None
    assert AmountBaseline.compute([], NOW) is None


def test_mad_zero_falls_back_to_mean_absolute_deviation() -> None:
    amounts = [2500] * 20 + [3000, 3500, 4000, 4500, 5000, 6000, 7000, 8000, 9000, 10000]
    b = AmountBaseline.compute(amounts, NOW)
    assert b is not None and b.method == "meanad"
    mean_ad = sum(abs(math.log(a) - math.log(2500)) for a in amounts) / len(amounts)
    assert b.sigma_log == pytest.approx(1.253314 * mean_ad)


def test_all_amounts_equal_has_no_spread() -> None:
    b = AmountBaseline.compute([2500] * 30, NOW)
    assert b is not None and b.method == "constant" and b.sigma_log == 0
    assert b.modified_z(2500) == 0 and b.modified_z(2600) == math.inf


def test_neighbourhood_counts_match_a_scan_and_memory_stays_bounded() -> None:
    rng = random.Random(5)
    amounts = [rng.randrange(1, 10**10) for _ in range(3000)] + [rng.randrange(100, 20000) for _ in range(3000)]
    b = AmountBaseline.compute(amounts, NOW)
    assert b is not None
    assert len(b.price_counts) <= KNOWN_PRICES_KEPT and len(b.cumulative) <= MAX_BINS
    for probe in [150, 999, 5000, 12345, 10**6, 10**9, 3]:
        lo, hi = math.log(probe) - NEAR_LOG, math.log(probe) + NEAR_LOG
        scanned = sum(1 for a in amounts if lo <= math.log(a) <= hi)
        # Bins are 1% wide and the window spans about 19 of them: they differ by at most one bin.
        assert abs(b.near_count(probe) - scanned) <= scanned / 10 + 3, probe


def test_known_prices_are_counted_exactly() -> None:
    b = AmountBaseline.compute([*MONTH, *[68000] * 7], NOW)
    assert b is not None and b.price_count(68000) == 7 and b.price_count(68001) == 0


# -- cold start ---------------------------------------------------------------------------
def test_first_day_without_history_judges_no_amount_but_the_ceiling() -> None:
    till = Till()
    assert till.sale(NOW, 128000) == []                       # a slip, but nothing to compare with
    assert till.engine.insufficient["AMT-001"] == 1 and till.engine.insufficient["AMT-002"] == 1
    assert rules_of(till.sale(NOW + timedelta(hours=1), 5_000_001, card=OTHER_CARD)) == ["AMT-003"]


def test_twenty_nine_sales_of_history_are_not_enough_thirty_are() -> None:
    assert shop(TYPICAL[:29]).sale(NOW, 128000) == []
    assert rules_of(shop(TYPICAL).sale(NOW, 128000)) == ["AMT-002"]


# -- AMT-001 ------------------------------------------------------------------------------
def _month() -> list[int]:
    # The noodle shop over a month: the same tickets, each rung up 30 times at +-10%, to the yuan.
    rng = random.Random(1)
    return [max(100, round(a * rng.uniform(0.9, 1.1) / 100) * 100) for a in TYPICAL * 30]


MONTH = _month()


def test_extra_zero_on_a_typical_amount_is_a_decimal_slip() -> None:
    f = only(shop(MONTH).sale(NOW, 128000, voucher="000123"), "AMT-001")
    assert f.action == "void" and f.severity == "high"
    assert f.evidence["factor"] == 10 and f.evidence["meant_minor"] == 12800
    assert f.evidence["value"] == pytest.approx(3.78) and f.evidence["threshold"] == 3.0
    assert f.certainty == "error" and f.evidence["confidence"] == "high"
    # Both stories, as ln(probability of this charge); the score is their difference (ln posterior odds).
    assert f.evidence["slip_likelihood"] - f.evidence["genuine_likelihood"] == pytest.approx(3.78, abs=0.01)
    assert f.evidence["kind"] == "extra_zero"
    # 62 sales within 10% of 128.00 this month, none near 1,280.00; 91% rung up to the yuan, 8% to ten yuan.
    assert (f.evidence["near_meant"], f.evidence["near_amount"]) == (62, 0)
    assert f.evidence["rounded_meant"] > 0.9 and f.evidence["rounded_amount"] < 0.1
    assert f.evidence["baseline"]["count"] == 900 and f.evidence["baseline"]["usual_step_minor"] == 100
    assert f.evidence["also_matched"] == ["AMT-002"]           # also an outlier, one alert
    assert "RMB 128.00 62 times" in f.reason_en and "RMB 1,280.00 0 times" in f.reason_en
    assert "是否应为 RMB 128.00" in f.reason_zh and "62 笔" in f.reason_zh
    assert_well_formed(f)


def test_two_extra_zeros_are_found_with_the_amount_meant() -> None:
    f = only(shop(MONTH).sale(NOW, 650000), "AMT-001")
    assert f.evidence["factor"] == 100 and f.evidence["meant_minor"] == 6500


def test_with_thirty_sales_an_extra_zero_is_an_outlier_but_not_yet_evidence_of_a_slip() -> None:
    # Two sales near 128.00 and none near 1,280.00 is a weak contrast: the outlier rule speaks, a month speaks up.
    assert rules_of(shop(TYPICAL).sale(NOW, 128000)) == ["AMT-002"]
    assert rules_of(shop(MONTH).sale(NOW, 128000)) == ["AMT-001"]


def test_a_large_amount_that_is_not_a_multiple_of_ten_is_no_slip() -> None:
    assert rules_of(shop(MONTH).sale(NOW, 128001)) == ["AMT-002"]


def test_a_big_ticket_just_above_the_usual_range_is_not_a_slip() -> None:
    # The demo's false alarm under version 1: 255.00 is above P95 (220.00) and 25.50 is inside P05..P95,
    # but there are honest sales near 255.00 and this shop does not ring up 25.50.
    assert shop(MONTH).sale(NOW, 25500) == []


def test_a_list_price_the_shop_charges_every_week_is_not_a_slip() -> None:
    # A banquet menu at 680.00, booked five times this month: 10 x 68.00, yet a known price.
    assert shop([*MONTH, *[68000] * 5]).sale(NOW, 68000) == []
    f = only(shop([*MONTH, 68000]).sale(NOW, 68000), "AMT-001")
    assert f.evidence["charged_before"] == 1 and f.evidence["known_count"] == 3


def test_a_slip_keeps_the_shops_price_rounding() -> None:
    # 3,915.00 = 100 x 39.15, but this shop rings up whole yuan: 39.15 is not how its prices look, so an
    # honest 3,915.00 (rounded like its prices) is the likelier story; AMT-002 still calls it unusual.
    # 390.00 = 10 x 39.00 keeps the shop's rounding and is a slip.
    assert only(shop(MONTH).sale(NOW, 39000), "AMT-001").evidence["meant_minor"] == 3900
    assert rules_of(shop(MONTH).sale(NOW + timedelta(hours=1), 391500, card=OTHER_CARD)) == ["AMT-002"]


def test_slip_score_is_configurable_and_must_be_positive() -> None:
    # Below the (raised) score of a likely error the same charge is only something to check.
    f = only(shop(MONTH, rules={"AMT-001": {"min_score": "8"}}).sale(NOW, 128000), "AMT-001")
    assert (f.certainty, f.action, f.evidence["confidence"]) == ("verify", "check", "low")
    with pytest.raises(RuleConfigError, match=r"rules\.AMT-001\.min_score"):
        validate_rule_params({"AMT-001": {"min_score": "0"}})
    with pytest.raises(RuleConfigError, match=r"rules\.AMT-001\.known_count"):
        validate_rule_params({"AMT-001": {"known_count": 1}})


def test_ten_times_an_amount_inside_the_usual_range_is_not_a_slip() -> None:
    # 200.00 = 10 x 20.00 but 200.00 is itself an ordinary ticket here (below P95).
    assert shop(MONTH).sale(NOW, 20000) == []


# -- AMT-002 ------------------------------------------------------------------------------
def test_an_amount_far_above_the_usual_range_is_an_outlier() -> None:
    f = only(shop().sale(NOW, 98765), "AMT-002")
    assert f.evidence["value"] > 3.5 and f.evidence["threshold"] == 3.5
    assert f.evidence["baseline"]["spread_method"] == "mad"
    assert "median RMB 72.00" in f.reason_en


def test_a_set_menu_plus_drinks_next_to_a_list_price_is_not_an_outlier() -> None:
    # 1,288.00 is booked ten times a month; 1,328.00 is that menu plus two bottles: 10 sales within 10%.
    assert shop([*MONTH, *[128800] * 10]).sale(NOW, 132800) == []
    f = only(shop(MONTH).sale(NOW, 132800), "AMT-002")
    assert f.evidence["near_amount"] == 0 and f.evidence["known_count"] == 3


def test_a_small_ticket_is_not_flagged_unless_low_outliers_are_asked_for() -> None:
    assert shop().sale(NOW, 100) == []
    low = shop(rules={"AMT-002": {"flag_low": True}})
    assert "below" in only(low.sale(NOW, 100), "AMT-002").reason_en


def test_outlier_with_mad_zero_uses_the_mean_deviation() -> None:
    amounts = [2500] * 20 + [3000, 3500, 4000, 4500, 5000, 6000, 7000, 8000, 9000, 10000]
    assert shop(amounts).sale(NOW, 6000) == []
    f = only(shop(amounts).sale(NOW, 95000), "AMT-002")
    assert f.evidence["baseline"]["spread_method"] == "meanad"


def test_with_one_price_for_everything_only_a_factor_of_five_away_is_flagged() -> None:
    car_wash = [2500] * 30
    assert shop(car_wash).sale(NOW, 12500) == []               # exactly 5x: allowed
    f = only(shop(car_wash).sale(NOW, 12600, card=OTHER_CARD), "AMT-002")
    assert f.evidence["threshold"] == "5x" and f.evidence["baseline"]["spread_method"] == "constant"


# -- AMT-003 ------------------------------------------------------------------------------
def test_exactly_the_ceiling_is_allowed_one_fen_more_is_flagged() -> None:
    till = Till(rules={"AMT-003": {"ceiling": "5000.00"}})
    assert till.sale(NOW, 500000) == []
    f = only(till.sale(NOW + timedelta(hours=1), 500001, card=OTHER_CARD), "AMT-003")
    assert f.action == "void" and f.evidence["threshold"] == 500000 and "RMB 5,000.00" in f.reason_en


def test_the_ceiling_follows_the_currency_of_the_transaction() -> None:
    till = Till(rules={"AMT-003": {"ceiling": "50000"}})
    assert till.sale(NOW, 50000, currency="JPY") == []            # 50,000 yen: no minor units
    later = NOW + timedelta(hours=1)
    assert rules_of(till.sale(later, 50001, currency="JPY", card=OTHER_CARD)) == ["AMT-003"]


def test_the_default_ceiling_is_fifty_thousand() -> None:
    assert validate_rule_params({})["AMT-003"].ceiling == 5_000_000


def test_a_ceiling_written_as_a_float_is_refused() -> None:
    with pytest.raises(RuleConfigError) as err:
        validate_rule_params({"AMT-003": {"ceiling": 5000.5}})
    assert err.value.path == "rules.AMT-003.ceiling"


# -- AMT-004 ------------------------------------------------------------------------------
def test_two_charges_just_under_the_no_pin_limit_on_one_card_are_checked() -> None:
    till = Till()
    assert till.sale(NOW, 98000) == []
    f = only(till.sale(NOW + timedelta(hours=3), 99000), "AMT-004")
    assert f.action == "check" and f.evidence["value"] == 2 and f.evidence["threshold"] == 2
    assert f.evidence["baseline"] == {"limit_minor": 100000, "band_low_minor": 95000}
    assert_well_formed(f)


def test_the_band_includes_its_lower_edge_and_excludes_the_limit() -> None:
    till = Till()
    till.sale(NOW, 95000)
    assert rules_of(till.sale(NOW + timedelta(hours=1), 95000, card="622576******6691")) == ["AMT-004"]
    outside = Till()
    outside.sale(NOW, 94999)
    outside.sale(NOW + timedelta(hours=1), 100000)
    assert outside.sale(NOW + timedelta(hours=2), 96000) == []


def test_under_limit_charges_a_day_and_a_second_apart_are_not_a_pattern() -> None:
    till = Till()
    till.sale(NOW, 98000)
    assert till.sale(NOW + timedelta(hours=24, seconds=1), 98000) == []
    edge = Till()
    edge.sale(NOW, 98000)
    assert rules_of(edge.sale(NOW + timedelta(hours=24), 99000)) == ["AMT-004"]


def test_a_declined_attempt_under_the_limit_does_not_count() -> None:
    till = Till()
    till.sale(NOW, 98000, result="declined")
    assert till.sale(NOW + timedelta(minutes=1), 99000) == []


def test_percentages_and_counts_are_validated() -> None:
    with pytest.raises(RuleConfigError, match=r"rules\.AMT-004\.count"):
        validate_rule_params({"AMT-004": {"count": 1}})
    with pytest.raises(RuleConfigError, match=r"rules\.AMT-002\.z_cut"):
        validate_rule_params({"AMT-002": {"z_cut": 0}})
    assert str(validate_rule_params({"AMT-004": {"band_percent": 2.5}})["AMT-004"].band_percent) == "2.5"
