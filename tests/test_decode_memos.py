"""The decode path's small memos (issue 20) give the answers a fresh computation gives, and the card scrubber's
memo never holds a card number."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import drivers.pan as pan
from drivers.pan import contains_full_pan, scrub_text
from drivers.timeutil import infer_datetime

SHANGHAI = ZoneInfo("Asia/Shanghai")
BERLIN = ZoneInfo("Europe/Berlin")


def test_scrub_text_remembers_only_texts_without_a_card_number() -> None:
    pan._CLEAN.clear()
    merchant = "商户号 898310048160001"            # 15 digits, not Luhn-valid: left alone
    card = "卡号 4111 1111 1111 1111 谢谢"          # a card number (Luhn-valid): masked
    assert scrub_text(merchant) == merchant
    assert merchant in pan._CLEAN                  # remembered: no card number in it
    first = scrub_text(card)
    assert first != card and not contains_full_pan(first)
    assert card not in pan._CLEAN and first not in pan._CLEAN
    assert scrub_text(card) == first               # the same answer the second time
    assert scrub_text(merchant) == merchant
    remembered = set(pan._CLEAN)
    pan._CLEAN.clear()
    assert remembered == {merchant} and all(scrub_text(t) == t for t in remembered)   # what a fresh scrub keeps


def test_scrub_text_memo_stays_bounded() -> None:
    pan._CLEAN.clear()
    for i in range(pan._CLEAN_ENTRIES * 2 + 7):
        text = f"订单 {i:08d} 已付款 谢谢惠顾"
        assert scrub_text(text) == text
    assert 0 < len(pan._CLEAN) <= pan._CLEAN_ENTRIES
    long_text = "x" * (pan._CLEAN_LONGEST + 1)
    assert scrub_text(long_text) == long_text and long_text not in pan._CLEAN


def test_infer_datetime_with_alternating_references_and_zones() -> None:
    """The last reference's local time is reused only for that very reference and zone: references two years
    apart, alternating, each get their own year (a stale local year would find no year at all for ``b``)."""
    a = datetime(2027, 6, 1, 3, 0, tzinfo=UTC)
    b = datetime(2025, 3, 1, 3, 0, tzinfo=UTC)
    for ref, zone in [(a, SHANGHAI), (b, SHANGHAI), (b, BERLIN), (a, BERLIN), (a, SHANGHAI), (b, BERLIN),
                      (b, BERLIN), (a, BERLIN)]:
        year = 2026 if ref is a else 2024
        assert infer_datetime(12, 31, 23, 30, 0, zone, ref) == datetime(year, 12, 31, 23, 30, tzinfo=zone)
    # The same instant as another object in another zone: worked out afresh (1 June 11:00 in Shanghai).
    assert infer_datetime(6, 1, 12, 0, 0, SHANGHAI, a.astimezone(BERLIN)) == datetime(2027, 6, 1, 12, tzinfo=SHANGHAI)
