"""Card-number masking (PCI DSS: at most the first 6 and last 4 digits).

Every decoder passes card fields through :func:`mask_pan` and free text
through :func:`scrub_text` before an event is built, so a full PAN never
leaves ``drivers``.
"""

from __future__ import annotations

import re

MASK_CHAR = "*"
# 13-19 digits, optionally grouped by single spaces or dashes as printed on slips.
_PAN_CANDIDATE = re.compile(r"(?<![0-9])(?:[0-9][ -]?){12,18}[0-9](?![0-9])")


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
    card field only ever holds a card number.
    """
    if value is None:
        return None
    cleaned = "".join(ch for ch in value.strip() if ch not in " -")
    if not cleaned:
        return None
    cleaned = "".join(ch if ch.isdigit() else MASK_CHAR for ch in cleaned)
    n = len(cleaned)
    if n <= 10:
        # Too short to keep 6+4 and still hide anything: keep only the last 4.
        keep_tail = min(4, max(0, n - 4))
        return MASK_CHAR * (n - keep_tail) + cleaned[n - keep_tail:]
    head, tail = cleaned[:6], cleaned[-4:]
    return head + MASK_CHAR * (n - 10) + tail


def scrub_text(text: str) -> str:
    """Mask every Luhn-valid 13-19 digit number inside free text (receipt lines, logs)."""

    def _sub(match: re.Match[str]) -> str:
        raw = match.group(0)
        digits = re.sub(r"[ -]", "", raw)
        if not (13 <= len(digits) <= 19) or not luhn_valid(digits):
            return raw
        masked = mask_pan(digits)
        assert masked is not None
        return masked

    return _PAN_CANDIDATE.sub(_sub, text)


def contains_full_pan(text: str) -> bool:
    """True when ``text`` holds a Luhn-valid 13-19 digit run (used by tests and log filters)."""
    for match in re.finditer(r"[0-9]{13,19}", text):
        run = match.group(0)
        for length in range(13, min(19, len(run)) + 1):
            for start in range(0, len(run) - length + 1):
                if luhn_valid(run[start:start + length]):
                    return True
    return False
