"""Receipt lines made comparable before any template looks at them (pure; no file I/O).

Printers differ in ways that carry no meaning: full-width punctuation and digits (``金额：ＲＭＢ１２.００``),
runs of spaces used for alignment, a colon after a currency code (``RMB: 12.00``). Templates are matched on
:func:`normalise`\\ d lines, and their patterns are normalised the same way when loaded, so a template
written for one of these forms reads all of them (issue 18: one character of difference used to mean
total blindness). The original lines are what a ReceiptText carries; only matching uses these.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

# Full-width ASCII (U+FF01..U+FF5E) to half-width, the ideographic and no-break spaces to a space,
# the full-width yen/yuan sign to the ordinary one. One C-level str.translate per line.
_WIDTH: dict[int, int] = {c: c - 0xFEE0 for c in range(0xFF01, 0xFF5F)}
_WIDTH.update({0x3000: 0x20, 0x00A0: 0x20, 0xFFE5: 0xA5})

# "RMB:" / "RMB：" / "¥:" before an amount (or ending the line, the amount on the next) reads as "RMB ".
# Not after a letter, so "AGENCY:" keeps its colon.
_CUR_SEP = re.compile(r"(?<![A-Za-z])(RMB|CNY|¥|\$)\s*[:=]\s*(?=[-+]?\d|$)", re.IGNORECASE)
# A line holding only a currency code: the amount is on the line after it.
CURRENCY_ONLY = re.compile(r"(?:RMB|CNY|¥|\$|USD|EUR|€)", re.IGNORECASE)

# What a payment slip or a till receipt has that a kitchen ticket or a test print does not.
_MONEY = re.compile(r"(?<![\d.])\d{1,3}(?:,\d{3})*\.\d{2}(?![\d.])|(?:RMB|CNY|¥|\$)\s?-?\d", re.IGNORECASE)
_CARD_MASK = re.compile(r"\d{4,6}[*xX#]{3,}\d{4}")
_VOUCHER_LIKE = re.compile(r"(?<!\d)\d{6,}(?!\d)")
_SALE_WORDS = re.compile(r"合计|总计|应收|实收|应付|找零|金额|签购单|TOTAL|AMOUNT|SALE", re.IGNORECASE)


# Whether a line has anything _WIDTH changes: one C-level search, while translate() looks every character of
# a CJK line up in the dict (issue 20: 10x dearer than the search on a 签购单 line, which rarely has any).
_WIDE = re.compile("[\uff01-\uff5e\u3000\u00a0\uffe5]")


def normalise(line: str) -> str:
    """Full-width to half-width, whitespace runs to one space, no separator after a currency code."""
    s = " ".join((line.translate(_WIDTH) if _WIDE.search(line) else line).split())
    if (":" in s or "=" in s) and ("RMB" in s or "CNY" in s or "¥" in s or "$" in s or "rmb" in s or "cny" in s):
        s = _CUR_SEP.sub(r"\1 ", s).rstrip()
    return s


def normalise_pattern(pattern: str) -> str:
    """A template's regular expression in the same alphabet as :func:`normalise`\\ d lines."""
    return pattern.translate(_WIDTH)


def looks_like_a_sale(norm: Sequence[str]) -> bool:
    """Money on the receipt, and a card mask, a voucher-like number or a total/amount word: a payment slip or a
    till receipt, so failing to read it is worth telling the installer about."""
    money = other = False
    for s in norm:
        if not s:
            continue
        if not money and _MONEY.search(s):
            money = True
        if not other:
            compact = s.replace(" ", "")
            other = bool(_CARD_MASK.search(compact) or _VOUCHER_LIKE.search(s) or _SALE_WORDS.search(s))
        if money and other:
            return True
    return False
