"""Shared wording for findings, so every rule names things the same way."""

from __future__ import annotations

from agent.rules.base import TxnView
from agent.units import format_money


def money(view: TxnView) -> str:
    return format_money(view.amount_minor, view.txn.currency)


def hhmm(view: TxnView) -> str:
    return view.local.strftime("%H:%M")


def vouchers(views: list[TxnView] | tuple[TxnView, ...]) -> str:
    return ", ".join(v.voucher_label for v in views)
