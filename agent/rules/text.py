"""Shared wording for findings, so every rule names things the same way."""

from __future__ import annotations

from collections.abc import Sequence

from agent.rules.base import TxnView
from agent.units import format_duration, format_money

__all__ = ["amount", "day", "format_duration", "hhmm", "money", "vouchers", "when"]


def money(view: TxnView) -> str:
    return format_money(view.amount_minor, view.txn.currency)


def amount(amount_minor: int, currency: str | None) -> str:
    return format_money(amount_minor, currency or "CNY")


def hhmm(view: TxnView) -> str:
    return view.local.strftime("%H:%M")


def day(view: TxnView) -> str:
    return view.local.strftime("%Y-%m-%d")


def when(view: TxnView) -> str:
    return view.local.strftime("%Y-%m-%d %H:%M")


def vouchers(views: Sequence[TxnView]) -> str:
    return ", ".join(v.voucher_label for v in views)
