"""Card-number masking (PCI DSS: at most the first 6 and last 4 digits).

Every decoder passes card fields through :func:`mask_pan` and free text
through :func:`scrub_text` before an event is built, so a full PAN never
leaves ``drivers``. Both run once per decoded field, so they are written for
speed: the common shapes (plain ASCII digits, an already-masked field, text
without a long digit run) take a few C-level string calls and no Python loop.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from typing import Final

MASK_CHAR: Final = "*"
# What may stand between the digits of one printed card number: space (single or double), dash, dot,
# underscore, slash, and the full-width forms of those (an ideographic space, ＿－．／). At most three
# in a row ("6225 - 8801"); a wider gap is two numbers. Digits are any Unicode decimal digit (\d in a
# str pattern): full-width ６２２５ is as much a card number as 6225.
SEPARATORS: Final = " -._/\u3000\uff0d\uff0e\uff3f\uff0f"
_SEP: Final = "[" + re.escape(SEPARATORS) + "]"
# A run of at least 13 digits with separators allowed between them. Opening with a character class lets
# the regex engine skip non-digits in C; the run is maximal (greedy, and a shorter run cannot start inside
# a longer one), and the callback looks for card-number-sized windows inside it.
_PAN_CANDIDATE: Final = re.compile(rf"\d(?:{_SEP}{{0,3}}\d){{12,}}")
_GROUP: Final = re.compile(r"\d+")
_DROP_SEPARATORS: Final = {ord(c): None for c in SEPARATORS}
SHORTEST_PAN: Final = 13
_LONGEST_PAN: Final = 19
# ASCII only: str.translate keeps a fast path while every character maps to ASCII.
_ASCII_NON_DIGIT_TO_MASK: Final = {i: MASK_CHAR for i in range(128) if not chr(i).isdigit()}

def luhn_valid(digits: str) -> bool:
    if not (digits.isascii() and digits.isdigit()):
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
    nibbles rendered as ``*``) is normalised, full-width digits become ASCII; any run of clear digits longer
    than the PCI allowance is masked whether or not it passes Luhn, because a
    card field only ever holds a card number. :data:`SEPARATORS` (spaces, dashes,
    dots, underscores, slashes) are dropped, every other non-digit becomes ``*``.
    """
    if value is None:
        return None
    cleaned = value.strip().translate(_DROP_SEPARATORS)
    # Full-width (any Unicode decimal) digits as ASCII: one card compares equal however it was written.
    cleaned = normalise_digits(cleaned)
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


def normalise_digits(text: str) -> str:
    """Unicode decimal digits (full-width ６, Arabic-Indic ٣, ...) as ASCII; everything else unchanged."""
    if text.isascii():
        return text
    return "".join(str(unicodedata.decimal(ch)) if ch.isdecimal() else ch for ch in text)


def _pan_windows(groups: list[str], *, crossing: int | None = None) -> list[tuple[int, int]]:
    """(first, last) group indexes of each card-number-sized window: 13-19 digits, Luhn-valid.

    From each group the longest valid window wins, so a 19-digit card whose first 16 digits happen to
    pass Luhn is masked whole. A single group of more than 19 digits is a longer number (a barcode, an
    order number), not a card number; windows never include it. ``crossing`` (cross-line scrub):
    only windows holding group ``crossing`` and the one after it count.
    """
    found: list[tuple[int, int]] = []
    i = 0
    while i < len(groups):
        if crossing is not None and i > crossing:
            break
        best, total = None, 0
        for j in range(i, len(groups)):
            total += len(groups[j])
            if total > _LONGEST_PAN:
                break
            if total >= SHORTEST_PAN and (crossing is None or j > crossing) and luhn_valid("".join(groups[i:j + 1])):
                best = j
        if best is None:
            i += 1
        else:
            found.append((i, best))
            i = best + 1
    return found


def _mask_candidate(match: re.Match[str]) -> str:
    raw = match.group(0)
    spans = [(m.start(), m.end()) for m in _GROUP.finditer(raw)]
    groups = [normalise_digits(raw[a:b]) for a, b in spans]
    windows = _pan_windows(groups)
    if not windows:
        return raw
    out, pos = [], 0
    for first, last in windows:
        out.append(raw[pos:spans[first][0]])
        masked = mask_pan("".join(groups[first:last + 1]))
        assert masked is not None
        out.append(masked)
        pos = spans[last][1]
    out.append(raw[pos:])
    return "".join(out)


def scrub_text(text: str) -> str:
    """Mask every card number inside free text (any string field, receipt lines, QR payloads, logs).

    A card number is 13-19 digits that pass Luhn, written with ASCII or full-width (any Unicode) digits,
    grouped or not by up to three of :data:`SEPARATORS`; it becomes first 6 + ``*`` + last 4 in ASCII.
    Any such number is masked, whatever it is: an order or reference number that happens to pass Luhn
    (one in ten of that length) is masked too. That is the stance on purpose: text cannot tell a card
    number from another number, and a masked order number costs far less than a leaked card number.
    A number glued to other digits with no separator is one longer number and is left alone.
    """
    if len(text) < SHORTEST_PAN or text in _CLEAN:
        return text
    original = text
    # Until nothing changes: masking a window can leave its last four beside a later group, and those
    # may make a new card-number-sized window. Each pass masks digits, so this ends (in practice after
    # one pass that changes something and one that confirms).
    while True:
        clean = _PAN_CANDIDATE.sub(_mask_candidate, text)
        if clean == text:
            if text is original and len(clean) <= _CLEAN_LONGEST:   # unchanged from the start
                if len(_CLEAN) >= _CLEAN_ENTRIES:
                    _CLEAN.clear()
                _CLEAN.add(clean)
            return clean
        text = clean


# Texts scrub_text left unchanged (so holding no card number): a terminal repeats the same merchant id,
# reference formats and receipt lines in every frame, and a 15-digit merchant id costs a Luhn walk each
# time otherwise (a quarter of the event boundary's time in replay, issue 20). Bounded; cleared when full.
_CLEAN: Final[set[str]] = set()
_CLEAN_ENTRIES: Final = 4096
_CLEAN_LONGEST: Final = 256


_TAIL: Final = re.compile(rf"\d(?:{_SEP}{{0,3}}\d)*\s*$")
_HEAD: Final = re.compile(rf"\s*(\d(?:{_SEP}{{0,3}}\d)*)")


def scrub_lines(lines: Sequence[str]) -> tuple[str, ...]:
    """:func:`scrub_text` on every line, then card numbers split over two lines.

    Printers wrap: ``卡号 6225 8801`` then ``3722 1231``. When a line ends with digits and the next one
    starts with digits (after blanks), a 13-19-digit Luhn-valid window that takes digits from both is
    masked in place (its digits past the first six and before the last four become ``*``, layout kept).
    Like :func:`scrub_text`, it cannot tell a wrapped card number from two numbers that happen to touch.
    """
    out = [scrub_text(line) for line in lines]
    for k in range(len(out) - 1):
        a, b = out[k], out[k + 1]
        if not a.rstrip()[-1:].isdecimal() or not b.lstrip()[:1].isdecimal():
            continue
        tail, head = _TAIL.search(a), _HEAD.match(b)
        if tail is None or head is None:
            continue
        a_spans = [(tail.start() + m.start(), tail.start() + m.end()) for m in _GROUP.finditer(tail.group(0))]
        b_spans = [(head.start(1) + m.start(), head.start(1) + m.end()) for m in _GROUP.finditer(head.group(1))]
        groups = [normalise_digits(a[x:y]) for x, y in a_spans] + [normalise_digits(b[x:y]) for x, y in b_spans]
        windows = _pan_windows(groups, crossing=len(a_spans) - 1)
        if not windows:
            continue
        first, last = windows[0]
        n = sum(len(g) for g in groups[first:last + 1])
        hidden = set(range(6, n - 4))
        chars_a, chars_b = list(a), list(b)
        index = 0
        for g, (x, y) in enumerate([*a_spans, *b_spans]):
            if not first <= g <= last:
                continue
            target = chars_a if g < len(a_spans) else chars_b
            for pos in range(x, y):
                if index in hidden:
                    target[pos] = MASK_CHAR
                index += 1
        out[k], out[k + 1] = "".join(chars_a), "".join(chars_b)
    return tuple(out)


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
