"""Weeks of ordinary trading written straight into a journal, so a demo shop has a baseline.

A real till reaches the daemon with a month of history in its journal; a
fresh demo does not. This writes past days' transactions (no rules, no
alerts: they are history, already settled) before the daemon starts, while
nothing else holds the journal.
"""

from __future__ import annotations

from datetime import UTC, date, timedelta, tzinfo

from agent.model import Transaction, identity_key
from agent.sim.day import build_day
from agent.store.journal import Journal


def seed_history(journal: Journal, *, today: date, tz: tzinfo, days: int = 14, per_day: int = 60,
                 seed: int = 1000) -> int:
    written = 0
    with journal.transaction():
        for back in range(days, 0, -1):
            day = today - timedelta(days=back)
            for ev in build_day("clean", seed=seed + back, day=day, tz=tz, count=per_day, settle=False):
                txn = ev.event
                if not isinstance(txn, Transaction) or ev.reprint:
                    continue
                # Past batches had their own numbers; keep keys from colliding with today's batch.
                txn = txn.with_(source="jsonl", batch_no=f"{day:%y%m%d}", card=_mask(txn.card))
                key = identity_key(txn)
                assert key is not None and txn.time is not None
                journal.merge_transaction(txn, key=key, instant=txn.time.astimezone(UTC),
                                          received=txn.time.astimezone(UTC), source="history")
                written += 1
    return written


def _mask(card: str | None) -> str | None:
    from drivers.pan import mask_pan

    return mask_pan(card)
