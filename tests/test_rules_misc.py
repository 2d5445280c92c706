"""VEL-001 (card velocity), REF-001 (refunds), VOID-001 (operator voids), ENTRY-001 (keyed cards)."""

from __future__ import annotations

from datetime import datetime, timedelta

from test_rules_support import OTHER_CARD, Till, assert_well_formed, at, only, rules_of, view

from agent.rules.base import TxnView

T0 = at("2026-03-10 14:00")


# -- VEL-001 ----------------------------------------------------------------------------------
def test_third_charge_on_one_card_within_ten_minutes_is_checked() -> None:
    till = Till()
    till.sale(T0, 1000)
    till.sale(T0 + timedelta(minutes=4), 2000)
    f = only(till.sale(T0 + timedelta(minutes=10), 3000), "VEL-001")    # window edge is inclusive
    assert f.action == "check" and f.evidence["value"] == 3 and len(f.related) == 2
    assert_well_formed(f)


def test_charges_spread_over_more_than_ten_minutes_are_not_velocity() -> None:
    till = Till()
    till.sale(T0, 1000)
    till.sale(T0 + timedelta(minutes=4), 2000)
    assert till.sale(T0 + timedelta(minutes=10, seconds=1), 3000) == []


def test_declined_and_voided_charges_do_not_count_towards_velocity() -> None:
    till = Till()
    till.sale(T0, 1000, result="declined")
    till.sale(T0 + timedelta(minutes=1), 2000, voucher="000501")
    till.sale(T0 + timedelta(minutes=2), 2000, kind="void", original_voucher="000501")
    assert "VEL-001" not in rules_of(till.sale(T0 + timedelta(minutes=3), 3000))


# -- REF-001 ----------------------------------------------------------------------------------
class Journal:
    """A stand-in for the journal's History: sales by card, and when recording began."""

    def __init__(self, sales: list[TxnView], earliest: datetime | None) -> None:
        self.sales = sales
        self.first = earliest

    def sales_for_card(self, card: str, since: datetime, until: datetime) -> list[TxnView]:
        return [s for s in self.sales if s.card == card and since <= s.utc <= until]

    def earliest(self) -> datetime | None:
        return self.first


def test_refund_of_a_sale_from_last_week_is_normal() -> None:
    sale = view(T0 - timedelta(days=7), 12800, voucher="000100")
    till = Till(history=Journal([sale], T0 - timedelta(days=90)))
    assert till.sale(T0, 12800, kind="refund", original_voucher="000100") == []


def test_refund_larger_than_the_sale_it_names_is_checked() -> None:
    sale = view(T0 - timedelta(days=7), 12800, voucher="000100")
    till = Till(history=Journal([sale], T0 - timedelta(days=90)))
    f = only(till.sale(T0, 13800, kind="refund", original_voucher="000100"), "REF-001")
    assert f.action == "check" and f.evidence == {"value": 13800, "threshold": 12800, "baseline": {}}
    assert f.related == (sale,) and "the sale it refunds" in f.reason_en
    assert_well_formed(f)


def test_refund_with_no_sale_on_that_card_in_thirty_days_is_checked() -> None:
    old_sale = view(T0 - timedelta(days=31), 12800)
    till = Till(history=Journal([old_sale], T0 - timedelta(days=90)))
    f = only(till.sale(T0, 12800, kind="refund"), "REF-001")
    assert "no matching sale" in f.reason_en and "找不到" in f.reason_zh


def test_refund_is_not_called_unmatched_before_the_journal_covers_thirty_days() -> None:
    till = Till(history=Journal([], T0 - timedelta(days=3)))
    assert till.sale(T0, 12800, kind="refund") == []
    assert till.engine.insufficient["REF-001"] == 1
    assert Till().sale(T0, 12800, kind="refund") == []        # no journal at all


def test_refund_of_a_sale_made_minutes_ago_matches_from_memory() -> None:
    till = Till(history=Journal([], T0 - timedelta(days=90)))
    till.sale(T0, 12800, voucher="000100")
    assert till.sale(T0 + timedelta(minutes=5), 12800, kind="refund") == []
    assert rules_of(till.sale(T0 + timedelta(minutes=6), 20000, kind="refund")) == ["REF-001"]


# -- VOID-001 ---------------------------------------------------------------------------------
def _shift(till: Till, charges: int, start: datetime = T0, operator: str = "01") -> list[str]:
    vouchers = []
    for i in range(charges):
        v = view(start + timedelta(minutes=i), 1000 + i, operator=operator, card=f"622576******{i:04d}")
        till.see(v)
        vouchers.append(v.txn.voucher_no or "")
    return vouchers


def _void(till: Till, when: datetime, voucher: str, operator: str = "01") -> list[str]:
    return rules_of(till.sale(when, 1000, kind="void", original_voucher=voucher, operator=operator))


def test_sixth_void_in_a_short_shift_is_checked_once() -> None:
    till = Till()
    sold = _shift(till, 10)
    later = T0 + timedelta(hours=1)
    assert [_void(till, later + timedelta(minutes=i), sold[i]) for i in range(5)] == [[]] * 5
    f = only(till.sale(later + timedelta(minutes=6), 1000, kind="void", original_voucher=sold[5]), "VOID-001")
    assert f.action == "check" and f.evidence["value"] == 6 and len(f.related) == 5
    assert_well_formed(f)
    assert _void(till, later + timedelta(minutes=7), sold[6]) == []      # one alert per crossing


def test_percentage_counts_only_once_the_shift_has_twenty_charges() -> None:
    small = Till()
    sold = _shift(small, 19)
    assert _void(small, T0 + timedelta(hours=1), sold[0]) == []
    assert _void(small, T0 + timedelta(hours=1, minutes=1), sold[1]) == []   # 2/19, but too few charges
    busy = Till()
    sold = _shift(busy, 20)
    assert _void(busy, T0 + timedelta(hours=1), sold[0]) == []               # 1/20 = 5%: not more than 5%
    assert _void(busy, T0 + timedelta(hours=1, minutes=1), sold[1]) == []    # 2/20 = 10%, but only two voids
    assert _void(busy, T0 + timedelta(hours=1, minutes=2), sold[2]) == ["VOID-001"]   # 3/20 = 15%


def test_two_voids_early_in_a_long_shift_are_not_a_pattern() -> None:
    # The evaluation's bakery: an honest cashier voids two of the first 25 sales (8%) and none after.
    till = Till()
    sold = _shift(till, 25)
    assert _void(till, T0 + timedelta(hours=1), sold[0]) == []
    assert _void(till, T0 + timedelta(hours=1, minutes=1), sold[1]) == []
    sold += _shift(till, 100, start=T0 + timedelta(hours=2))
    assert _void(till, T0 + timedelta(hours=4), sold[30]) == []              # 3/125 = 2.4%


def test_voids_of_yesterday_and_of_other_operators_are_another_shift() -> None:
    till = Till()
    sold = _shift(till, 10, start=at("2026-03-09 20:00"))
    for i in range(4):
        _void(till, at("2026-03-09 23:00") + timedelta(minutes=i), sold[i])
    for i in range(4, 6):
        _void(till, at("2026-03-10 00:10") + timedelta(minutes=i), sold[i], operator="02")
    assert _void(till, at("2026-03-10 00:30"), sold[6]) == []
    night = Till(rules={"VOID-001": {"day_starts": "05:00"}})
    sold = _shift(night, 10, start=at("2026-03-09 20:00"))
    results = [_void(night, at("2026-03-09 23:50") + timedelta(minutes=i), sold[i]) for i in range(6)]
    assert results[-1] == ["VOID-001"]                                      # 23:50 .. 00:05, one night shift


def test_a_void_without_an_operator_cannot_be_attributed() -> None:
    till = Till()
    till.sale(T0, 1000, kind="void", original_voucher="000001", operator=None)
    assert till.engine.insufficient["VOID-001"] == 1


# -- ENTRY-001 --------------------------------------------------------------------------------
def test_card_number_keyed_by_hand_is_checked() -> None:
    till = Till()
    f = only(till.sale(T0, 12800, entry_mode="manual", operator="07"), "ENTRY-001")
    assert f.action == "check" and "operator 07" in f.reason_en and "手工" in f.reason_zh
    assert_well_formed(f)
    assert till.sale(T0, 12800, entry_mode="chip", card=OTHER_CARD) == []
    assert till.sale(T0, 12800, entry_mode="manual", result="declined", card="621700******9999") == []


def test_keyed_entry_below_the_configured_floor_is_ignored() -> None:
    till = Till(rules={"ENTRY-001": {"min_amount": "100.00"}})
    assert till.sale(T0, 9999, entry_mode="manual") == []
    assert rules_of(till.sale(T0, 10000, entry_mode="manual", card=OTHER_CARD)) == ["ENTRY-001"]
