"""Durations, money and local time as people write them in config and read them in alerts."""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal, InvalidOperation

_DURATION = re.compile(r"^\s*(\d+)\s*(ms|s|m|h|d)\s*$")
_UNIT = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}

# ISO 4217 minor-unit exponents for the currencies a till here meets; default 2.
CURRENCY_EXPONENT = {"JPY": 0, "KRW": 0, "VND": 0, "CLP": 0, "ISK": 0, "KWD": 3, "BHD": 3, "JOD": 3, "OMR": 3}
CURRENCY_LABEL = {"CNY": "RMB", "EUR": "EUR", "USD": "USD", "HKD": "HKD", "GBP": "GBP"}
# ISO 4217 numeric codes as ZVT and some ECRs send them.


class UnitError(ValueError):
    pass


def parse_duration(text: str | int | float) -> timedelta:
    """'10m', '30s', '2h', '3d', '250ms' -> timedelta. Bare numbers are seconds."""
    if isinstance(text, bool):
        raise UnitError("a duration like '10m' or '30s' is expected")
    if isinstance(text, (int, float)):
        if text < 0:
            raise UnitError("a duration must not be negative")
        try:
            return timedelta(seconds=text)
        except (OverflowError, ValueError):
            raise UnitError(f"{text!r} seconds is not a usable duration") from None
    if not isinstance(text, str):
        raise UnitError(f"a duration like '10m' or '30s' is expected (got {type(text).__name__})")
    m = _DURATION.match(text)
    if not m:
        raise UnitError(f"{text!r} is not a duration like '90s', '10m', '2h' or '3d'")
    try:
        return timedelta(seconds=int(m.group(1)) * _UNIT[m.group(2)])
    except OverflowError:
        raise UnitError(f"{text!r} is too long a duration") from None


def exponent(currency: str | None) -> int:
    return CURRENCY_EXPONENT.get((currency or "").upper(), 2)


def in_currency(amount_minor_2dp: int, currency: str | None) -> int:
    """A configured amount (read as 2-decimal minor units) in the minor units of ``currency``."""
    exp = exponent(currency)
    return amount_minor_2dp * 10 ** (exp - 2) if exp >= 2 else amount_minor_2dp // 10 ** (2 - exp)


def parse_money(text: str | int, currency: str = "CNY") -> int:
    """'5000.00' or '5000' or 5000 (major units) -> minor units; floats are refused."""
    if isinstance(text, (bool, float)):
        raise UnitError("write money as a string like \"5000.00\" (floats lose cents)")
    try:
        value = Decimal(str(text).replace(",", "").strip())
    except InvalidOperation as exc:
        raise UnitError(f"{text!r} is not an amount like \"1280.00\"") from exc
    if not value.is_finite():   # Decimal reads "INF" and "NaN": amounts they are not
        raise UnitError(f"{text!r} is not an amount like \"1280.00\"")
    scaled = value.scaleb(exponent(currency))
    if scaled != scaled.to_integral_value():
        raise UnitError(f"{text!r} has more decimals than {currency} allows")
    if scaled < 0:
        raise UnitError("an amount must not be negative")
    return int(scaled)


def format_money(amount_minor: int, currency: str | None = "CNY", *, label: bool = True) -> str:
    """12800 CNY -> 'RMB 128.00'; grouping with commas as slips print it."""
    exp = exponent(currency)
    sign = "-" if amount_minor < 0 else ""
    whole, frac = divmod(abs(amount_minor), 10**exp) if exp else (abs(amount_minor), 0)
    body = f"{whole:,}" + (f".{frac:0{exp}d}" if exp else "")
    if not label:
        return sign + body
    code = CURRENCY_LABEL.get((currency or "CNY").upper(), (currency or "").upper())
    return f"{sign}{code} {body}"


def format_duration(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds % 86400 == 0 and seconds:
        return f"{seconds // 86400}d"
    if seconds % 3600 == 0 and seconds:
        return f"{seconds // 3600}h"
    if seconds % 60 == 0 and seconds:
        return f"{seconds // 60}m"
    return f"{seconds}s"
