"""DUP-001..DUP-004: duplicate charges, identity conflicts, near-duplicates, re-keying."""

from __future__ import annotations

from datetime import timedelta
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st
from test_rules_support import (
    CARD,
    OTHER_CARD,
    Till,
    assert_well_formed,
    at,
    only,
    rules_of,
    txn,
    view,
    view_of,
)

BERLIN = ZoneInfo("Europe/Berlin")


# -- DUP-001 ------------------------------------------------------------------------------
def test_same_card_same_amount_on_two_vouchers_is_a_duplicate_charge() -> None:
    till = Till()
    assert till.sale(at("2026-03-10 14:00"), 12800, voucher="000122") == []
    f = only(till.sale(at("2026-03-10 14:03"), 12800, voucher="000123"), "DUP-001")
    assert f.subject.txn.voucher_no == "000123"          # void the second one
    assert [v.txn.voucher_no for v in f.related] == ["000122"]
    assert f.action == "void" and f.severity == "high"
    assert "622576******6691" in f.reason_en and "RMB 128.00" in f.reason_en
    assert "000122, 000123" in f.reason_en
    assert "重复" not in f.reason_en and "同一张卡" in f.reason_zh
    assert f.evidence["value"] == 180 and f.evidence["threshold"] == 600
    assert_well_formed(f)


def test_reprinted_receipt_is_not_a_duplicate_charge() -> None:
    till = Till()
    first = view(at("2026-03-10 14:00"), voucher="000122")
    till.see(first)
    assert till.see(first, is_new=False, reprint=True) == []


def test_the_same_voucher_from_terminal_and_printer_is_one_charge_not_two() -> None:
    till = Till()
    till.see(view(at("2026-03-10 14:00"), voucher="000122"))
    # The printer tap reports the same slip under an RRN-less synthetic key: same voucher, same terminal.
    again = view(at("2026-03-10 14:00"), voucher="000122", rrn="925498334778")
    again = type(again)(key="u:printer", txn=again.txn, utc=again.utc, local=again.local)
    assert till.see(again) == []


def test_second_charge_exactly_at_the_window_edge_is_a_duplicate_one_second_later_is_not() -> None:
    till = Till()
    till.sale(at("2026-03-10 14:00:00"))
    assert rules_of(till.sale(at("2026-03-10 14:10:00"))) == ["DUP-001"]
    other = Till()
    other.sale(at("2026-03-10 14:00:00"))
    assert other.sale(at("2026-03-10 14:10:01")) == []


def test_declined_first_attempt_then_approved_is_not_a_duplicate() -> None:
    till = Till()
    till.sale(at("2026-03-10 14:00"), result="declined")
    assert till.sale(at("2026-03-10 14:01")) == []


def test_charge_after_the_first_was_voided_is_a_correction_not_a_duplicate() -> None:
    till = Till()
    till.sale(at("2026-03-10 14:00"), voucher="000122")
    till.sale(at("2026-03-10 14:01"), kind="void", original_voucher="000122", card=None)
    assert till.sale(at("2026-03-10 14:02"), voucher="000124") == []


def test_voiding_the_duplicate_then_charging_again_is_a_new_duplicate_of_the_first() -> None:
    till = Till()
    till.sale(at("2026-03-10 14:00"), voucher="000122")
    assert rules_of(till.sale(at("2026-03-10 14:01"), voucher="000123")) == ["DUP-001"]
    till.sale(at("2026-03-10 14:02"), kind="void", original_voucher="000123")
    f = only(till.sale(at("2026-03-10 14:03"), voucher="000125"), "DUP-001")
    assert [v.txn.voucher_no for v in f.related] == ["000122"]   # the voided 000123 is no longer involved


def test_duplicate_is_found_when_the_later_charge_was_reported_first_and_names_the_later_one() -> None:
    till = Till()
    later = view(at("2026-03-10 14:05"), voucher="000123")
    earlier = view(at("2026-03-10 14:00"), voucher="000122")
    assert till.see(later) == []
    f = only(till.see(earlier), "DUP-001")
    assert f.subject.txn.voucher_no == "000123" and [v.txn.voucher_no for v in f.related] == ["000122"]


def test_last_four_mask_from_the_receipt_and_six_plus_four_from_the_terminal_are_the_same_card() -> None:
    till = Till()
    till.sale(at("2026-03-10 14:00"), card="622576******6691")
    assert rules_of(till.sale(at("2026-03-10 14:02"), card="************6691")) == ["DUP-001"]
    other = Till()
    other.sale(at("2026-03-10 14:00"), card="622576******6691")
    assert other.sale(at("2026-03-10 14:02"), card="621700******6691") == []   # same tail, another bank


def test_duplicate_five_minutes_apart_across_the_fall_back_hour_is_found() -> None:
    # Berlin 2025-10-26: 02:58 CEST, then the clocks go back; 02:03 CET is 5 min later (wall clock says -55).
    till = Till(tz=BERLIN)
    first = at("2025-10-26 02:58", BERLIN).replace(fold=0)
    second = at("2025-10-26 02:03", BERLIN).replace(fold=1)
    assert (second - first.astimezone(second.tzinfo)).total_seconds() != 0
    till.see(view(first, tz=BERLIN))
    f = only(till.see(view(second, tz=BERLIN)), "DUP-001")
    assert f.evidence["value"] == 300


def test_charges_an_hour_apart_on_the_wall_clock_across_spring_forward_are_minutes_apart() -> None:
    # Berlin 2026-03-29: 01:58 CET then 03:03 CEST is 5 minutes later.
    till = Till(tz=BERLIN)
    till.see(view(at("2026-03-29 01:58", BERLIN), tz=BERLIN))
    assert rules_of(till.see(view(at("2026-03-29 03:03", BERLIN), tz=BERLIN))) == ["DUP-001"]


def test_reprint_of_the_duplicate_does_not_alert_again() -> None:
    till = Till()
    till.sale(at("2026-03-10 14:00"))
    dup = view(at("2026-03-10 14:01"))
    assert rules_of(till.see(dup)) == ["DUP-001"]
    assert till.see(dup, is_new=False, reprint=True) == []


@settings(max_examples=40, deadline=None)
@given(gap=st.integers(min_value=0, max_value=600), later_first=st.booleans())
def test_whatever_the_arrival_order_the_later_charge_is_the_one_to_void(gap: int, later_first: bool) -> None:
    till = Till()
    a = view(at("2026-03-10 14:00"), voucher="000122")
    b = view(at("2026-03-10 14:00") + timedelta(seconds=gap), voucher="000123")
    order = [b, a] if later_first else [a, b]
    findings = till.see_all(order)
    assert rules_of(findings) == ["DUP-001"]
    expected = order[-1] if gap == 0 else b
    assert findings[0].subject.key == expected.key


# -- DUP-002 ------------------------------------------------------------------------------
def test_same_voucher_resighted_with_another_amount_is_two_sales_under_one_voucher() -> None:
    till = Till()
    stored = view(at("2026-03-10 14:00"), 12800, voucher="000123")
    till.see(stored)
    f = only(till.see(stored, is_new=False, conflicts={"amount_minor": (12800, 128000)}), "DUP-002")
    assert f.action == "check" and f.subject.key == stored.key
    assert f.evidence["conflicts"] == {"amount_minor": [12800, 128000]}
    assert "000001/000123" in f.reason_en and "凭证号" in f.reason_zh
    assert_well_formed(f)


def test_a_late_result_is_a_status_update_not_a_second_sale() -> None:
    till = Till()
    stored = view(at("2026-03-10 14:00"), voucher="000123")
    till.see(stored)
    assert till.see(stored, is_new=False, conflicts={"result": ("declined", "approved")}) == []


def test_a_new_transaction_carrying_an_rrn_already_used_is_reported_twice() -> None:
    till = Till()
    till.see(view(at("2026-03-10 14:00"), voucher="000123", rrn="925498334778"))
    f = only(till.see(view(at("2026-03-10 14:00"), 13800, voucher="000124", rrn="925498334778")), "DUP-002")
    assert set(f.evidence["conflicts"]) == {"voucher_no", "amount_minor"}
    assert "RRN 925498334778" in f.reason_en


def test_a_sighting_merged_by_rrn_but_with_another_voucher_is_flagged() -> None:
    till = Till()
    stored = view(at("2026-03-10 14:00"), voucher="000123", rrn="925498334778")
    till.see(stored)
    seen = txn(at("2026-03-10 14:00"), voucher="000124", rrn="925498334778")
    f = only(till.see(stored, is_new=False, reprint=True, sighting=seen), "DUP-002")
    assert f.evidence["conflicts"] == {"voucher_no": ["000123", "000124"]}


def test_a_void_reusing_the_sales_rrn_is_not_a_second_sale() -> None:
    till = Till()
    till.see(view(at("2026-03-10 14:00"), voucher="000123", rrn="925498334778"))
    v = view(at("2026-03-10 14:01"), kind="void", voucher="000124", rrn="925498334778",
             original_voucher="000123")
    assert "DUP-002" not in rules_of(till.see(v))


# -- DUP-003 ------------------------------------------------------------------------------
def test_nearly_the_same_amount_on_one_card_is_a_near_duplicate() -> None:
    till = Till()
    till.sale(at("2026-03-10 14:00"), 10000)
    f = only(till.sale(at("2026-03-10 14:20"), 10100), "DUP-003")   # exactly 1% of the larger? 100/10100 < 1%
    assert (f.action, f.certainty) == ("check", "verify") and f.severity == "medium"
    assert_well_formed(f)


def test_amounts_more_than_one_percent_apart_are_different_purchases() -> None:
    till = Till()
    till.sale(at("2026-03-10 14:00"), 10000)
    assert till.sale(at("2026-03-10 14:10"), 10102) == []   # 102 / 10102 > 1%


def test_near_duplicate_window_is_thirty_minutes_inclusive() -> None:
    till = Till()
    till.sale(at("2026-03-10 14:00"), 10000)
    assert rules_of(till.sale(at("2026-03-10 14:30"), 10050)) == ["DUP-003"]
    late = Till()
    late.sale(at("2026-03-10 14:00"), 10000)
    assert late.sale(at("2026-03-10 14:30:01"), 10050) == []


def test_exact_duplicate_speaks_and_lists_the_near_duplicate_it_also_is() -> None:
    till = Till()
    till.sale(at("2026-03-10 14:00"), 10000)
    till.sale(at("2026-03-10 14:05"), 10050)   # near-duplicate of the first
    findings = till.sale(at("2026-03-10 14:08"), 10000)
    f = only(findings, "DUP-001")
    assert len([x for x in findings if x.family == "DUP"]) == 1
    assert f.evidence["also_matched"] == ["DUP-003"]


# -- DUP-004 ------------------------------------------------------------------------------
def test_same_amount_on_another_card_right_after_a_decline_is_checked() -> None:
    till = Till()
    till.sale(at("2026-03-10 14:00"), 56000, card=CARD, result="declined", voucher="000130")
    f = only(till.sale(at("2026-03-10 14:02"), 56000, card=OTHER_CARD), "DUP-004")
    assert f.action == "check" and f.severity == "low"
    assert CARD in f.reason_en and "000130" in f.reason_en and "declined" in f.reason_en
    assert_well_formed(f)


def test_same_amount_on_another_card_after_a_void_whose_card_is_only_on_the_original() -> None:
    till = Till()
    till.sale(at("2026-03-10 14:00"), 56000, card=CARD, voucher="000130")
    till.sale(at("2026-03-10 14:01"), 56000, kind="void", card=None, original_voucher="000130")
    f = only(till.sale(at("2026-03-10 14:03"), 56000, card=OTHER_CARD), "DUP-004")
    assert "voided" in f.reason_en and CARD in f.reason_en


def test_rekeying_more_than_two_minutes_after_the_decline_is_not_flagged() -> None:
    till = Till()
    till.sale(at("2026-03-10 14:00:00"), 56000, result="declined")
    assert till.sale(at("2026-03-10 14:02:01"), 56000, card=OTHER_CARD) == []
    edge = Till()
    edge.sale(at("2026-03-10 14:00:00"), 56000, result="declined")
    assert rules_of(edge.sale(at("2026-03-10 14:02:00"), 56000, card=OTHER_CARD)) == ["DUP-004"]


def test_the_next_customer_paying_a_common_price_after_a_decline_is_no_rekey() -> None:
    # A set lunch at 56.00 was charged 40 times this month: a stranger paying it a minute after someone's
    # card was declined is the lunch rush, not a re-key (the evaluation's DUP-004 false alerts, EVALUATION.md).
    till = Till()
    till.engine.refresh_baseline([5600] * 40 + [3000, 4500, 7000] * 10, at("2026-03-10 04:10"))
    till.sale(at("2026-03-10 12:00:00"), 5600, result="declined")
    assert till.sale(at("2026-03-10 12:01:00"), 5600, card=OTHER_CARD) == []
    twice = Till()
    twice.engine.refresh_baseline([5600] * 2 + [3000, 4500, 7000] * 10, at("2026-03-10 04:10"))
    twice.sale(at("2026-03-10 12:00:00"), 5600, result="declined")
    f = only(twice.sale(at("2026-03-10 12:01:00"), 5600, card=OTHER_CARD), "DUP-004")
    assert f.evidence["charged_before"] == 2 and f.evidence["common_count"] == 3


def test_retrying_the_same_card_after_a_decline_is_not_rekeying_on_another_card() -> None:
    till = Till()
    till.sale(at("2026-03-10 14:00"), 56000, result="declined")
    assert till.sale(at("2026-03-10 14:01"), 56000) == []


def test_an_approved_charge_before_is_not_a_failed_attempt() -> None:
    till = Till()
    till.sale(at("2026-03-10 14:00"), 56000, card=CARD)
    assert till.sale(at("2026-03-10 14:01"), 56000, card=OTHER_CARD) == []


def test_view_builder_keys_by_voucher_identity() -> None:
    v = view_of(txn(at("2026-03-10 14:00"), voucher="000123"))
    assert v.key == "v:15221155:000001:000123"
