"""Card-number masking (PCI DSS: at most the first 6 and last 4 digits).

Every decoder passes card fields through :func:`mask_pan` and free text
through :func:`scrub_text` before an event is built, so a full PAN never
leaves ``drivers``. Both run once per decoded field, so they are written for
speed: the common shapes (plain ASCII digits, an already-masked field, text
without a long digit run) take a few C-level string calls and no Python loop.
"""

from __future__ import annotations

import re
from typing import Final

MASK_CHAR: Final = "*"
# 13-19 digits, optionally grouped by single spaces or dashes as printed on slips.
# Same language and the same matches as (?<![0-9])(?:[0-9][ -]?){12,18}[0-9](?![0-9]),
# but opening with a character class lets the regex engine skip non-digits in C
# instead of trying the lookbehind at every position.
_PAN_CANDIDATE: Final = re.compile(r"[0-9](?<![0-9][0-9])(?:[ -]?[0-9]){12,18}(?![0-9])")
_SHORTEST_PAN: Final = 13
# ASCII only: str.translate keeps a fast path while every character maps to ASCII.
_ASCII_NON_DIGIT_TO_MASK: Final = {i: MASK_CHAR for i in range(128) if not chr(i).isdigit()}


def luhn_valid(digits: str) -> bool:
    if not digits.isdigit():
        return False
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def mask_pan(value: str | None) -> str | None:
    """Mask a card-number field to first 6 / last 4.

    Already-masked input (``622576******6691``, ``************84``, ZVT ``E``
    nibbles rendered as ``*``) is normalised; any run of clear digits longer
    than the PCI allowance is masked whether or not it passes Luhn, because a
    card field only ever holds a card number. Spaces and dashes are dropped,
    every other non-digit becomes ``*``.
    """
    if value is None:
        return None
    cleaned = value.strip()
    if " " in cleaned or "-" in cleaned:
        cleaned = cleaned.replace(" ", "").replace("-", "")
    if not cleaned:
        return None
    n = len(cleaned)
    if n <= 10:
        # Too short to keep 6+4 and still hide anything: keep only the last 4.
        keep_tail = min(4, max(0, n - 4))
        return MASK_CHAR * (n - keep_tail) + _digits_or_mask(cleaned[n - keep_tail:])
    # Only the kept head and tail can show a digit, so only they need a look.
    return _digits_or_mask(cleaned[:6]) + MASK_CHAR * (n - 10) + _digits_or_mask(cleaned[-4:])


def _digits_or_mask(kept: str) -> str:
    if kept.isdigit() or not kept:
        return kept
    if kept.isascii():
        return kept.translate(_ASCII_NON_DIGIT_TO_MASK)
    # str.isdigit accepts non-ASCII digits too; per character, as ever.
    return "".join(ch if ch.isdigit() else MASK_CHAR for ch in kept)


def _mask_candidate(match: re.Match[str]) -> str:
    raw = match.group(0)
    digits = raw.replace(" ", "").replace("-", "")
    if not (_SHORTEST_PAN <= len(digits) <= 19) or not luhn_valid(digits):
        return raw
    masked = mask_pan(digits)
    assert masked is not None
    return masked


def scrub_text(text: str) -> str:
    """Mask every Luhn-valid 13-19 digit number inside free text (receipt lines, logs)."""
    if len(text) < _SHORTEST_PAN:
        return text
    return _PAN_CANDIDATE.sub(_mask_candidate, text)


def contains_full_pan(text: str) -> bool:
    """True when ``text`` holds a Luhn-valid 13-19 digit run (used by tests and log filters)."""
    for match in re.finditer(r"[0-9]{13,19}", text):
        run = match.group(0)
        for length in range(13, min(19, len(run)) + 1):
            for start in range(0, len(run) - length + 1):
                if luhn_valid(run[start:start + length]):
                    return True
    return False


# -- comparing masked numbers ---------------------------------------------------------------

def card_tail(card: str) -> str:
    """The last four digits: the one part every mask (6+4, last-4 only) keeps."""
    return card[-4:]


def same_card(a: str | None, b: str | None) -> bool:
    """Two masked card numbers that can be the same card (a 6+4 mask and a last-4 mask agree)."""
    if not a or not b:
        return False
    if a == b:
        return True
    if a[-4:] != b[-4:]:
        return False
    if len(a) != len(b):
        return a[-4:] == b[-4:] and (MASK_CHAR in a[:6] or MASK_CHAR in b[:6])
    return all(x == y or MASK_CHAR in (x, y) for x, y in zip(a, b, strict=True))
