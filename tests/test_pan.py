"""A full card number never leaves drivers/: masking, free-text scrubbing, and an end-to-end sweep."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.sim.day import luhn_complete
from drivers.pan import card_tail, contains_full_pan, luhn_valid, mask_pan, same_card, scrub_lines, scrub_text


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
# The fast mask_pan keeps the behaviour of the plain per-character definition below, which is the
# specification. scrub_text is specified by what it guarantees (checked by a plain, slow reader of
# the same text): no card-number-sized Luhn-valid window survives, and text without one is untouched.

def _mask_by_definition(value: str | None) -> str | None:
    if value is None:
        return None
    cleaned = "".join(ch for ch in value.strip() if ch not in SEPARATORS)
    if not cleaned:
        return None
    cleaned = "".join(str(int(ch)) if ch.isdecimal() else ch for ch in cleaned)
    cleaned = "".join(ch if ch.isdigit() else "*" for ch in cleaned)
    n = len(cleaned)
    if n <= 10:
        keep_tail = min(4, max(0, n - 4))
        return "*" * (n - keep_tail) + cleaned[n - keep_tail:]
    return cleaned[:6] + "*" * (n - 10) + cleaned[-4:]


SEPARATORS = " -._/\u3000\uff0d\uff0e\uff3f\uff0f"


def card_windows(text: str) -> list[str]:
    """Every 13-19-digit Luhn-valid window of digit groups, read character by character: digits are any
    Unicode decimal digit, groups are split by at most three separators, a group over 19 digits is a
    longer number and ends a run."""
    runs: list[list[str]] = [[]]
    group, gap = "", 0
    for ch in text + "\x00":
        if ch.isdecimal():
            if group == "" and gap > 3:
                runs.append([])
            group += str(int(ch))
            gap = 0
            continue
        if group:
            if len(group) > 19:
                runs.append([])
            else:
                runs[-1].append(group)
            group = ""
        if ch in SEPARATORS:
            gap += 1
        else:
            gap = 99
    found = []
    for groups in runs:
        for i in range(len(groups)):
            for j in range(i, len(groups)):
                digits = "".join(groups[i:j + 1])
                if 13 <= len(digits) <= 19 and luhn_valid(digits):
                    found.append(digits)
    return found


CARDISH = st.text(alphabet=st.sampled_from([*"0123456789", " ", "-", "*", "E", "\t", "\u00a0", "\u0663", "\u00b2",
                                            "x", "卡"]), max_size=30)
TEXTISH = st.lists(st.sampled_from([*"0123456789", " ", "-", "--", ".", "_", "/", "  ", "x", "卡号:",
                                    "6225760012346691", "4111 1111 1111 1111", "５５５５", "5" * 20]),
                   max_size=30).map("".join)


@settings(max_examples=400)
@given(value=st.one_of(st.text(max_size=40), CARDISH))
def test_mask_pan_keeps_its_definition_for_any_input(value: str) -> None:
    assert mask_pan(value) == _mask_by_definition(value)


@settings(max_examples=600)
@given(text=st.one_of(st.text(max_size=60), TEXTISH))
def test_scrub_text_leaves_no_card_number_and_touches_nothing_else(text: str) -> None:
    clean = scrub_text(text)
    assert card_windows(clean) == []
    assert scrub_text(clean) == clean
    if not card_windows(text):
        assert clean == text


@settings(max_examples=300)
@given(prefix=st.integers(min_value=12, max_value=18).flatmap(
    lambda n: st.text(alphabet="0123456789", min_size=n, max_size=n)),
    sep=st.sampled_from(["", " ", "  ", "-", ".", "_", "/", "\u3000"]), fullwidth=st.booleans(),
    group=st.integers(min_value=1, max_value=6))
def test_a_card_number_in_any_written_form_is_masked_to_six_and_four(prefix: str, sep: str, fullwidth: bool,
                                                                     group: int) -> None:
    pan = luhn_complete(prefix)
    written = sep.join(pan[i:i + group] for i in range(0, len(pan), group))
    if fullwidth:
        written = written.translate({ord(d): chr(0xFF10 + int(d)) for d in "0123456789"})
    clean = scrub_text(f"备注 {written} 谢谢")
    assert clean == f"备注 {pan[:6]}{'*' * (len(pan) - 10)}{pan[-4:]} 谢谢"


def test_a_card_number_wrapped_over_two_lines_is_masked_in_place() -> None:
    lines = scrub_lines(["卡号 6225 8801", "3722 1231 /C", "金额 RMB 1.00"])
    assert lines == ("卡号 6225 88**", "**** 1231 /C", "金额 RMB 1.00")
    # Two ordinary lines are left as they are.
    assert scrub_lines(["凭证号 000006", "批次号 130911"]) == ("凭证号 000006", "批次号 130911")


def test_odd_characters_in_a_card_field_are_masked_not_kept() -> None:
    assert mask_pan("  6225\t7600-1234-6691 ") == "6225*7*******6691"   # a tab is not a separator
    assert mask_pan("622576\u00a00012346691") == "622576*******6691"     # nor a no-break space
    assert mask_pan("6225760012346\u0663\u0663\u0663") == "622576******6333"  # Unicode digits as ASCII
    assert mask_pan("6225760012346\u00b2\u00b2\u00b2") == "622576******6\u00b2\u00b2\u00b2"  # not decimal: kept
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
