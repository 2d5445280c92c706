"""A full card number never leaves drivers/: masking, free-text scrubbing, and an end-to-end sweep."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.sim.day import luhn_complete
from drivers.pan import contains_full_pan, luhn_valid, mask_pan, scrub_text


def test_mask_keeps_first_six_and_last_four() -> None:
    assert mask_pan("6225760012346691") == "622576******6691"
    assert mask_pan("6225 7600 1234 6691") == "622576******6691"


def test_already_masked_and_zvt_style_masks_are_normalised() -> None:
    assert mask_pan("************84") == "************84"
    assert mask_pan("622576EEEEEE6691".replace("E", "*")) == "622576******6691"


def test_short_values_keep_at_most_last_four() -> None:
    assert mask_pan("12345678") == "****5678"
    assert mask_pan("") is None and mask_pan(None) is None


@settings(max_examples=300)
@given(st.integers(min_value=12, max_value=18).flatmap(
    lambda n: st.text(alphabet="0123456789", min_size=n, max_size=n)))
def test_luhn_valid_pans_of_13_to_19_digits_never_survive_masking(prefix: str) -> None:
    pan = luhn_complete(prefix)
    assert luhn_valid(pan)
    masked = mask_pan(pan)
    assert masked is not None and not contains_full_pan(masked)
    line = f"卡号 CARD NO: {pan} /C"
    assert not contains_full_pan(scrub_text(line))
    assert pan[:6] in scrub_text(line) and pan[-4:] in scrub_text(line)


def test_scrub_leaves_ordinary_numbers_alone() -> None:
    # Amounts, RRNs (12 digits) and dates are not card numbers.
    line = "参考号 925498334778 金额 RMB 1,280.00 日期 2026/11/27"
    assert scrub_text(line) == line
