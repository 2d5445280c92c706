"""A full card number never leaves drivers/: masking, free-text scrubbing, and an end-to-end sweep."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.sim.day import luhn_complete
from drivers.pan import card_tail, contains_full_pan, luhn_valid, mask_pan, same_card, scrub_text


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


# --------------------------------------------------------------------------
# The fast mask_pan / scrub_text (issue 3/9) keep the behaviour of the plain
# per-character definitions below, which are the specification.

def _mask_by_definition(value: str | None) -> str | None:
    if value is None:
        return None
    cleaned = "".join(ch for ch in value.strip() if ch not in " -")
    if not cleaned:
        return None
    cleaned = "".join(ch if ch.isdigit() else "*" for ch in cleaned)
    n = len(cleaned)
    if n <= 10:
        keep_tail = min(4, max(0, n - 4))
        return "*" * (n - keep_tail) + cleaned[n - keep_tail:]
    return cleaned[:6] + "*" * (n - 10) + cleaned[-4:]


_CANDIDATE_BY_DEFINITION = re.compile(r"(?<![0-9])(?:[0-9][ -]?){12,18}[0-9](?![0-9])")


def _scrub_by_definition(text: str) -> str:
    def sub(match: re.Match[str]) -> str:
        raw = match.group(0)
        digits = re.sub(r"[ -]", "", raw)
        if not (13 <= len(digits) <= 19) or not luhn_valid(digits):
            return raw
        return _mask_by_definition(digits) or raw

    return _CANDIDATE_BY_DEFINITION.sub(sub, text)


CARDISH = st.text(alphabet=st.sampled_from([*"0123456789", " ", "-", "*", "E", "\t", "\u00a0", "\u0663", "\u00b2",
                                            "x", "卡"]), max_size=30)
TEXTISH = st.lists(st.sampled_from([*"0123456789", " ", "-", "--", "x", "卡号:", "6225760012346691",
                                    "4111 1111 1111 1111", "5" * 20]), max_size=30).map("".join)


@settings(max_examples=400)
@given(value=st.one_of(st.text(max_size=40), CARDISH))
def test_mask_pan_keeps_its_definition_for_any_input(value: str) -> None:
    assert mask_pan(value) == _mask_by_definition(value)


@settings(max_examples=400)
@given(text=st.one_of(st.text(max_size=60), TEXTISH))
def test_scrub_text_keeps_its_definition_for_any_text(text: str) -> None:
    assert scrub_text(text) == _scrub_by_definition(text)


def test_odd_characters_in_a_card_field_are_masked_not_kept() -> None:
    assert mask_pan("  6225\t7600-1234-6691 ") == "6225*7*******6691"   # a tab is not a separator
    assert mask_pan("622576\u00a00012346691") == "622576*******6691"     # nor a no-break space
    assert mask_pan("6225760012346\u0663\u0663\u0663") == "622576******6\u0663\u0663\u0663"  # str.isdigit digits stay
    assert mask_pan(" - - ") is None


def test_a_pan_in_a_long_line_is_masked_and_short_lines_pass_untouched() -> None:
    assert scrub_text("x" * 200 + " 4111-1111-1111-1111 " + "y" * 200) == \
        "x" * 200 + " 411111******1111 " + "y" * 200
    assert scrub_text("411111111111") == "411111111111"          # 12 digits: too short for a PAN
    assert scrub_text("55555555555555555555") == "55555555555555555555"  # 20 digits: too long


def test_masks_of_one_card_match_and_masks_of_two_cards_do_not() -> None:
    # The same card as the terminal (6+4) and as a receipt printing the last four only.
    a, b = "622576******6691", "************6691"
    assert card_tail(a) == card_tail(b) == "6691"
    assert same_card(a, b) and not same_card("622576******6691", "621700******6691")
    assert not same_card(None, "622576******6691")
