"""Issue 21: AMT-001 weighs a slip against a genuine large bill, AMT-002 keeps to a false-alert budget,
and a low-confidence amount finding is something to check that never turns into refund guidance."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from test_rules_support import Till, at, only, view

from agent.alerts.lifecycle import AlertState
from agent.messages import AlertChange, Command
from agent.rules.amount import AmountOutlier, DecimalSlip, OutlierParams, outlier_cut
from agent.rules.base import TxnView
from agent.rules.baseline import AmountBaseline
from tests.helpers import SHANGHAI, Harness, config, sale

NOW = at("2026-03-10 12:00")


def _month(rng: random.Random, n: int, median: float, sigma: float, step: int) -> list[int]:
    return [max(step, round(median * rng.lognormvariate(0, sigma) / step) * step) for _ in range(n)]


def tea_shop_with_group_orders() -> list[int]:
    """A month of a tea shop: RMB 25.10 is its commonest ticket, ten-fen prices, and a tail of large
    genuine bills (offices ordering for a team, RMB 150-1,500, at odd amounts)."""
    rng = random.Random(21)
    small = _month(rng, 1500, 2400, 0.35, 10) + [2510] * 200
    groups = _month(rng, 60, 45000, 0.6, 10)
    return small + groups


def tea_shop_never_above_100() -> list[int]:
    """The same small tickets, and never a bill above RMB 100."""
    rng = random.Random(21)
    small = [a for a in _month(rng, 1500, 2400, 0.35, 10) if a <= 10000] + [2510] * 200
    return small


def shop(amounts: list[int]) -> Till:
    till = Till()
    till.engine.refresh_baseline(amounts, NOW)
    return till


def test_a_genuine_bill_ten_times_a_common_amount_in_a_shop_with_a_tail_of_large_bills_raises_nothing() -> None:
    # RMB 251.00 = 10 x RMB 25.10, this shop's commonest ticket; but its own month has 60 genuine bills of
    # RMB 150-1,500: a 251.00 bill is likelier genuine than a slip.
    assert shop(tea_shop_with_group_orders()).sale(NOW, 25100) == []


def test_the_same_amount_in_a_shop_that_never_bills_above_100_is_a_slip() -> None:
    f = only(shop(tea_shop_never_above_100()).sale(NOW, 25100), "AMT-001")
    assert f.evidence["meant_minor"] == 2510 and f.evidence["kind"] == "extra_zero"
    # Both stories are recorded, and the decision is their difference.
    ev = f.evidence
    assert ev["slip_likelihood"] > ev["genuine_likelihood"]
    assert abs(ev["value"] - (ev["slip_likelihood"] - ev["genuine_likelihood"])) < 0.01
    assert f.certainty == "error" and ev["confidence"] == "high"


def test_the_shops_tail_of_large_bills_is_what_tells_the_two_apart() -> None:
    heavy = AmountBaseline.compute(tea_shop_with_group_orders(), NOW)
    light = AmountBaseline.compute(tea_shop_never_above_100(), NOW)
    assert heavy is not None and light is not None
    assert heavy.tail_expected(25100) > 10 * light.tail_expected(25100)


def test_a_card_that_paid_bills_this_large_before_makes_a_genuine_bill_likelier() -> None:
    company = "622848******1234"
    fresh = only(shop(tea_shop_never_above_100()).sale(NOW, 25100, card=company), "AMT-001")
    till = shop(tea_shop_never_above_100())
    # The same card paid a RMB 240.00 team order six days ago (in the rules' memory of that card).
    till.sale(NOW - timedelta(days=6), 24000, card=company)
    seen = only(till.sale(NOW, 25100, card=company), "AMT-001")
    assert (fresh.evidence["card_factor"], seen.evidence["card_factor"]) == (1.0, 6.0)
    assert seen.evidence["genuine_likelihood"] > fresh.evidence["genuine_likelihood"]
    assert seen.evidence["value"] < fresh.evidence["value"] - 1.5      # ln 6 = 1.8 less likely a slip



# -- a list price on a regular's card (AMT-001 version 5) ----------------------------------------------
def bakery_with_office_orders() -> list[int]:
    """A month of a bakery: RMB 24.00 its commonest ticket (700 times), 1-3 items a ticket, and offices
    ordering 10-50 of one item; RMB 240.00 (20 x 12.00) was such an order six times, a list price."""
    rng = random.Random(7)
    menu = [800, 1200, 1500, 1800, 2400, 2500, 3000, 3500]
    small = [sum(rng.choice(menu) for _ in range(rng.choice([1, 1, 2, 2, 3]))) for _ in range(2500)]
    orders = [24000] * 5 + [rng.choice([1200, 1500, 1800, 2500]) * rng.randrange(10, 51) for _ in range(40)]
    return small + [2400] * 700 + orders


class CardBook:
    """The journal's card history as the rules see it (``state.history``): past sales by card."""

    def __init__(self, sales: list[TxnView]) -> None:
        self.sales = sales

    def sales_for_card(self, card: str, since: datetime, until: datetime) -> list[TxnView]:
        return [s for s in self.sales if s.card == card and since <= s.utc <= until]


REGULAR, OFFICE = "622848******7777", "622848******5555"


def _visits(card: str, amounts: list[int]) -> list[TxnView]:
    return [view(NOW - timedelta(days=25 - 2 * i, hours=3), a, card=card) for i, a in enumerate(amounts)]


def bakery(*cards: list[TxnView]) -> Till:
    till = Till(history=CardBook([v for c in cards for v in c]))
    till.engine.refresh_baseline(bakery_with_office_orders(), NOW)
    return till


def test_a_list_price_ten_times_the_commonest_ticket_on_a_regulars_card_is_something_to_check() -> None:
    # RMB 240.00 was charged six times this month (office orders), so by itself it is a list price. On the card
    # of a regular who paid here twelve times and never above RMB 30, it is RMB 24.00 with an extra zero.
    regular = _visits(REGULAR, [2400, 2500, 1800, 2400, 3000, 2400, 1500, 2400, 2700, 2400, 2400, 2600])
    till = bakery(regular)
    assert till.engine.baseline is not None and till.engine.baseline.price_count(24000) >= 3
    f = only(till.sale(NOW, 24000, card=REGULAR), "AMT-001")
    ev = f.evidence
    assert (ev["meant_minor"], ev["kind"], ev["card_regular"], ev["card_factor"]) == (2400, "extra_zero", True, 0.25)
    assert ev["charged_before"] >= 3
    # Weighed, not waved through: both stories recorded; low confidence, so "please check", never a refund.
    assert ev["slip_likelihood"] > ev["genuine_likelihood"]
    assert ev["confidence"] == "low" and f.certainty == "verify" and f.action == "check"
    assert "请核对" in f.reason_zh


def test_the_same_list_price_on_a_new_card_or_on_the_offices_card_raises_nothing() -> None:
    office = _visits(OFFICE, [24000, 18000, 24000])
    till = bakery(office)
    assert till.sale(NOW, 24000, card="622848******1111") == []
    assert till.sale(NOW + timedelta(minutes=5), 24000, card=OFFICE) == []


def test_a_regular_who_only_ever_paid_small_weighs_more_against_a_genuine_bill_than_a_few_visits() -> None:
    # RMB 251.00 in the shop that never bills above RMB 100: a slip whoever pays; the card's history sets how sure.
    few = _visits(REGULAR, [2510, 2400, 2600, 2510])
    many = _visits(OFFICE, [2510, 2400, 2600, 2510] * 3)
    till = Till(history=CardBook(few + many))
    till.engine.refresh_baseline(tea_shop_never_above_100(), NOW)
    a = only(till.sale(NOW, 25100, card=REGULAR), "AMT-001").evidence
    b = only(till.sale(NOW + timedelta(minutes=5), 25100, card=OFFICE), "AMT-001").evidence
    assert (a["card_factor"], a["card_regular"]) == (0.5, False)
    assert (b["card_factor"], b["card_regular"]) == (0.25, True)
    assert b["value"] > a["value"] + 0.6          # ln 2 likelier a slip

def test_a_regular_is_a_card_the_mask_tells_apart_not_every_card_ending_in_the_same_four_digits() -> None:
    # A terminal that prints only the last four digits pools every card of the shop ending 7777: twelve visits
    # of those are not one customer's, so RMB 240.00 on such a card keeps the list-price excuse.
    last4 = "************7777"
    pooled = _visits(last4, [2400, 2500, 1800, 2400, 3000, 2400, 1500, 2400, 2700, 2400, 2400, 2600])
    till = bakery(pooled)
    assert till.sale(NOW, 24000, card=last4) == []


def _visits_today(tmp_path: Path, visits: int) -> list[AlertChange]:
    """A real pipeline (journal + the rules' memory): ``visits`` RMB 24.00 sales on one card this morning,
    then RMB 240.00 (the bakery's list price) on it."""
    tmp_path.mkdir()
    h = Harness(tmp_path)
    start = h.clock.now()
    h.pipeline.engine.refresh_baseline(bakery_with_office_orders(), start)
    for i in range(visits):
        h.feed(sale(f"{100 + i:06d}", 2400, start + timedelta(minutes=10 * i), card=REGULAR))
    h.pipeline.engine.refresh_baseline(bakery_with_office_orders(), h.clock.now())
    h.feed(sale("000999", 24000, start + timedelta(minutes=10 * visits + 5), card=REGULAR))
    return h.opened("AMT-001")


def test_a_visit_in_both_the_journal_and_the_rules_memory_counts_once(tmp_path: Path) -> None:
    # Today's visits are in the journal and in the rules' last-day memory: five of them are five, not ten,
    # so the card is not yet a regular's (ten) and the list price stands; ten of them make it one.
    assert _visits_today(tmp_path / "five", 5) == []
    ten = _visits_today(tmp_path / "ten", 10)
    assert len(ten) == 1 and ten[0].alert.evidence["card_regular"] is True


# -- the "please check" cut from the month's large bills at their own hours ------------------------------
def tea_shop_with_evening_orders() -> list[tuple[datetime, int]]:
    """Four weeks of the tea shop's small tickets from 09:00 to 18:00, and twenty genuine large bills (RMB
    150-350, whole-yuan amounts) only ever at 19:00-21:00: evening catering orders."""
    rng = random.Random(21)
    day0 = datetime(2026, 2, 9, tzinfo=SHANGHAI)

    def when(hours: list[int]) -> datetime:
        return (day0 + timedelta(days=rng.randrange(28), hours=rng.choice(hours),
                                 minutes=rng.randrange(60))).astimezone(UTC)

    small = _month(rng, 1500, 2400, 0.35, 10) + [2510] * 200
    timed = [(when(list(range(9, 18))), a) for a in small]
    return timed + [(when([19, 20]), a) for a in _month(rng, 20, 20000, 0.3, 100)]


def test_a_slip_at_an_hour_the_shops_large_bills_never_happen_is_checked_against_the_cut_they_set_at_theirs() -> None:
    # The month's twenty evening bills, scored as the rule scores a live charge (each at its own hour, where
    # large bills are common), set a lower "please check" cut than the same bills scored as if the hour said
    # nothing. RMB 251.00 (25.10, the commonest ticket, with an extra zero) at 11:05, when this shop never
    # bills large, falls between the two cuts: it is something to check.
    pairs = tea_shop_with_evening_orders()
    till = Till()
    till.engine.refresh_baseline(pairs, NOW)
    base = till.engine.baseline
    assert base is not None and len(base.tail_hours) == len(base.tail_amounts) > 0
    assert {h % 24 for a, h in zip(base.tail_amounts, base.tail_hours, strict=True) if a > 10000} <= {19, 20}
    rule = next(r for r in till.engine.rules if isinstance(r, DecimalSlip))
    own_hours, hours_unknown = rule.verify_cut(base), rule.verify_cut(replace(base, tail_hours=()))
    assert own_hours < hours_unknown
    f = only(till.sale(datetime(2026, 3, 10, 11, 5, tzinfo=SHANGHAI), 25100), "AMT-001")
    ev = f.evidence
    assert (ev["meant_minor"], ev["kind"]) == (2510, "extra_zero") and ev["hour_factor"] < 1
    assert own_hours <= ev["value"] < hours_unknown
    assert abs(ev["threshold"] - own_hours) < 0.01
    assert ev["confidence"] == "low" and f.certainty == "verify"


def test_a_large_bill_scored_for_the_cut_leaves_itself_out_of_its_hours() -> None:
    # One bill alone at 07:00, before opening: scored as a live charge would be (the baseline without it), its
    # hour has no sales at all, so nothing is known (1.0), not "large bills happen at 7" that counting it gives.
    pairs = tea_shop_with_evening_orders()
    seven = datetime(2026, 3, 2, 7, 10, tzinfo=SHANGHAI)
    base = AmountBaseline.compute([*pairs, (seven.astimezone(UTC), 41000)], NOW, SHANGHAI)
    assert base is not None
    bin7 = base.tail_hours[base.tail_amounts.index(41000)]
    assert bin7 == 7
    assert base.hour_factor_at(bin7, leave_out=1) == 1.0 < base.hour_factor_at(bin7)
    assert base.hour_factor_at(bin7) == base.hour_factor(seven, weekend=False)


def test_the_amt_002_threshold_moves_with_the_shops_history() -> None:
    params = OutlierParams()
    heavy = AmountBaseline.compute(tea_shop_with_group_orders(), NOW)
    light = AmountBaseline.compute(tea_shop_never_above_100(), NOW)
    assert heavy is not None and light is not None
    cut_heavy, cut_light = outlier_cut(heavy, params), outlier_cut(light, params)
    assert cut_heavy.amount_minor > 3 * cut_light.amount_minor
    # A tighter budget puts the threshold further out.
    tight = outlier_cut(heavy, OutlierParams(budget="0.001"))
    assert tight.amount_minor > cut_heavy.amount_minor
    # The same RMB 600.00 is unusual in the small-ticket shop and ordinary-enough in the other.
    amount = 60000
    assert amount > cut_light.amount_minor and amount < cut_heavy.amount_minor


def test_the_amt_002_threshold_is_recomputed_with_the_baseline() -> None:
    till = shop(tea_shop_never_above_100())
    rule = next(r for r in till.engine.rules if isinstance(r, AmountOutlier))
    base = till.engine.baseline
    assert base is not None
    before = rule.cut(base).amount_minor
    till.engine.refresh_baseline(tea_shop_with_group_orders(), NOW + timedelta(hours=1))
    after_base = till.engine.baseline
    assert after_base is not None and rule.cut(after_base).amount_minor > before
    f = only(shop(tea_shop_never_above_100()).sale(NOW, 123457), "AMT-002")
    assert f.evidence["threshold_source"] in ("budget", "floor") and f.evidence["budget_per_day"] == 0.02


# -- confidence -> certainty, through the alert lifecycle -----------------------------------------
HOURS = "\n[shop.hours]\n" + "".join(f'{d} = ["09:00-21:30"]\n' for d in ("mon", "tue", "wed", "thu", "fri",
                                                                          "sat", "sun"))


def _at(hh: int, mm: int) -> datetime:
    return datetime(2026, 11, 27, hh, mm, tzinfo=SHANGHAI)


def _slip_day(tmp_path: Path, extra: str = "") -> tuple[Harness, list[AlertChange]]:
    h = Harness(tmp_path, config(HOURS + extra))
    h.pipeline.engine.refresh_baseline(tea_shop_never_above_100(), _at(9, 0).astimezone(UTC))
    h.feed(sale("000301", 25100, _at(14, 3)))
    opened = h.opened("AMT-001")
    h.clock.set(_at(23, 0).astimezone(UTC))
    h.pipeline.process([Command("cutoff")])
    return h, opened


def _notices(h: Harness) -> list[str]:
    return [c.notice for c in h.changes if isinstance(c, AlertChange) and c.alert.rule == "AMT-001"]


def test_a_low_confidence_slip_says_please_check_and_expires_at_cutoff_never_refund_guidance(tmp_path: Path) -> None:
    # The same charge with the "likely error" score raised out of reach: only something to verify.
    h, opened = _slip_day(tmp_path, '\n[rules.AMT-001]\nmin_score = "50"\n')
    assert len(opened) == 1
    alert = opened[0].alert
    assert alert.certainty == "verify" and alert.evidence["confidence"] == "low"
    assert alert.suggestion is not None and alert.suggestion.action == "check"
    assert "如属正常交易，无需处理" in alert.suggestion.steps_zh
    assert "请核对" in alert.reason_zh
    assert _notices(h) == ["opened", "expired"]
    final = h.journal.alerts()[0]
    assert final.state == AlertState.EXPIRED
    assert final.suggestion is not None and "只能退货" not in final.suggestion.steps_zh
    assert h.pipeline.counts["alerts_escalated"] == 0


def test_a_high_confidence_slip_stays_a_likely_error_and_escalates(tmp_path: Path) -> None:
    h, opened = _slip_day(tmp_path)
    alert = opened[0].alert
    assert alert.certainty == "error" and alert.evidence["confidence"] == "high"
    assert alert.suggestion is not None and alert.suggestion.action == "void"
    assert _notices(h) == ["opened", "escalated"]
