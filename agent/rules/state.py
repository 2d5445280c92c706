"""In-memory indexes the rules read; bounded so a long day never rescans itself.

The pipeline calls :meth:`RuleState.observe` for every merged transaction
(after the rules ran on it) and :meth:`prune` as time advances. Anything older
than ``horizon`` is dropped; longer look-backs (baselines, refunds) come from
the journal through :class:`History`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from datetime import datetime, timedelta, tzinfo
from typing import Protocol

from agent.rules.base import TxnView


class History(Protocol):
    """Look-ups the journal answers for rules with long windows."""

    def sales_for_card(self, card: str, since: datetime, until: datetime) -> list[TxnView]: ...


class _NoHistory:
    def sales_for_card(self, card: str, since: datetime, until: datetime) -> list[TxnView]:
        return []


class RuleState:
    def __init__(self, tz: tzinfo, *, horizon: timedelta = timedelta(hours=24),
                 history: History | None = None) -> None:
        self.tz = tz
        self.horizon = horizon
        self.history: History = history or _NoHistory()
        self._recent: deque[TxnView] = deque()
        self._by_card: dict[str, deque[TxnView]] = {}

    # -- updates (pipeline only) -------------------------------------------------
    def observe(self, view: TxnView) -> None:
        self._recent.append(view)
        if view.card:
            self._by_card.setdefault(view.card, deque()).append(view)

    def prune(self, now: datetime) -> None:
        cutoff = now - self.horizon
        while self._recent and self._recent[0].utc < cutoff:
            old = self._recent.popleft()
            if old.card:
                dq = self._by_card.get(old.card)
                if dq:
                    while dq and dq[0].utc < cutoff:
                        dq.popleft()
                    if not dq:
                        del self._by_card[old.card]

    # -- queries (rules) -------------------------------------------------------------
    def card_history(self, card: str, since: datetime) -> Iterator[TxnView]:
        """Transactions on this masked card at or after ``since`` (oldest first)."""
        for v in self._by_card.get(card, ()):
            if v.utc >= since:
                yield v

    def recent(self, since: datetime) -> Iterator[TxnView]:
        """Every transaction at or after ``since``, newest first."""
        for v in reversed(self._recent):
            if v.utc < since:
                break
            yield v

    def __len__(self) -> int:
        return len(self._recent)
