"""Shared wording for findings, so every rule names things the same way."""

from __future__ import annotations

from collections.abc import Sequence

from agent.rules.base import TxnView
from agent.units import format_duration, format_money

__all__ = ["amount", "charge_en", "charge_zh", "day", "format_duration", "hhmm", "money", "vouchers", "when"]


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


def charge_en(view: TxnView) -> str:
    """How an English reason names one charge: 'RMB 1,280.00 at 14:03 (voucher 000123)'."""
    return f"{money(view)} at {hhmm(view)} (voucher {view.voucher_label})"


def charge_zh(view: TxnView) -> str:
    """How a Chinese reason names one charge: '14:03 的 RMB 1,280.00（凭证号 000123）'."""
    return f"{hhmm(view)} 的 {money(view)}（凭证号 {view.voucher_label}）"


def vouchers(views: Sequence[TxnView]) -> str:
    return ", ".join(v.voucher_label for v in views)
