"""The journal-backed rule state answers every look-back as the in-memory one does, question by question
(agent/rules/lookback.py, issue 20).

The daemon's pipeline runs on the journal-backed state while an in-memory :class:`RuleState` is fed the very
same ``observe``/``prune`` calls; after every batch both are asked the same questions (every card, amount,
voucher and RRN of the run, windows reaching past the horizon, every view held) and must give the same views
in the same order. The inputs are drawn to hit the corners: voucher numbers reused across terminals and
within the horizon, several voids of one original, reversals by RRN, refunds, reports stamped more than a day
late, a clock that steps back, and first sightings that a later one fills in (RRN, 6+4 card).
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from agent.messages import EventBatch
from agent.model import Transaction
from agent.rules.base import TxnView
from agent.rules.lookback import JournalRuleState
from agent.rules.state import RuleState
from tests.helpers import Harness

CARDS = ["622576******1111", "622576******2222", "625807******1111", "************2222", "621700******3333"]
TERMINALS = ["T1", "T2", None]


def _keys(views: Any) -> list[tuple[str, datetime, Transaction]]:
    return [(v.key, v.utc, v.txn) for v in views]


def _one(v: TxnView | None) -> tuple[str, datetime, Transaction] | None:
    return None if v is None else (v.key, v.utc, v.txn)


def _compare(journal: JournalRuleState, memory: RuleState, newest: datetime) -> int:
    asked = 0
    windows = [(newest - timedelta(hours=60), newest + timedelta(hours=2)), (newest - timedelta(minutes=30), newest),
               (newest - timedelta(hours=25), newest - timedelta(hours=20))]
    for since, until in windows:
        for card in CARDS:
            assert _keys(journal.card_history(card, since, until)) == _keys(memory.card_history(card, since, until))
            assert _keys(journal.card_history(card, since)) == _keys(memory.card_history(card, since))
        for amount in (1000, 1500, 2000, 500):
            assert _keys(journal.same_amount(amount, since, until)) == _keys(memory.same_amount(amount, since, until))
        asked += 3 * len(CARDS) + 4
    for terminal in TERMINALS:
        for n in range(12):
            voucher = f"{n:06d}"
            assert _one(journal.by_reference(terminal_id=terminal, voucher_no=voucher)) \
                == _one(memory.by_reference(terminal_id=terminal, voucher_no=voucher)), (terminal, voucher)
            rrn = f"R{n:03d}"
            assert _one(journal.by_reference(terminal_id=terminal, rrn=rrn)) \
                == _one(memory.by_reference(terminal_id=terminal, rrn=rrn)), rrn
            asked += 2
    for v in list(memory._recent):
        assert _one(journal.voided_by(v)) == _one(memory.voided_by(v)), v.key
        since, until = v.utc - timedelta(minutes=30), v.utc + timedelta(minutes=30)
        assert _keys(journal.other_charges(v, since, until)) == _keys(memory.other_charges(v, since, until))
        asked += 2
    assert len(journal) == len(memory)
    return asked


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_every_question_gets_the_in_memory_answer(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    h = Harness(tmp_path)
    journal = h.pipeline.engine.state
    assert isinstance(journal, JournalRuleState)
    memory = RuleState(journal.tz, horizon=journal.horizon)
    observe, prune = journal.observe, journal.prune

    def both_observe(view: TxnView) -> None:
        observe(view)
        memory.observe(view)

    def both_prune(now: datetime) -> None:
        prune(now)
        memory.prune(now)

    journal.observe = both_observe     # type: ignore[method-assign]
    journal.prune = both_prune         # type: ignore[method-assign]

    t = h.clock.now()
    sent: list[Transaction] = []
    asked = held = 0
    for step in range(700):
        t += timedelta(minutes=rng.choice([1, 2, 5, 20, 60]))
        received = t
        if rng.random() < 0.03:
            t -= timedelta(hours=rng.choice([1, 3]))     # the clock steps back (a wrong NTP server corrected)
        kind = rng.choices(["sale", "void", "reversal", "refund"], [8, 2, 1, 1])[0]
        stamp = received - timedelta(hours=30) if rng.random() < 0.04 else received
        n = rng.randrange(12)
        txn = Transaction(source="jsonl", kind=kind, result=rng.choice(["approved"] * 5 + ["declined"]),
                          amount_minor=rng.choice([1000, 1500, 2000, 500]), time=stamp,
                          terminal_id=rng.choice(TERMINALS), batch_no=f"{step // 50:06d}",
                          voucher_no=f"{n:06d}" if rng.random() < 0.9 else None,
                          rrn=f"R{rng.randrange(12):03d}{step:04d}" if rng.random() < 0.5 else f"R{n:03d}",
                          card=rng.choice([*CARDS, None]), currency="CNY",
                          original_voucher_no=f"{rng.randrange(12):06d}" if kind != "sale" and rng.random() < 0.7
                          else None,
                          original_rrn=f"R{rng.randrange(12):03d}" if kind != "sale" and rng.random() < 0.5 else None)
        if rng.random() < 0.1 and txn.card:
            # First seen thin (no RRN, a last-4 card); the fuller report a moment later fills the row in.
            thin = txn.with_(rrn=None, card="************" + txn.card[-4:])
            events: tuple[Transaction, ...] = (thin, txn)
        elif sent and rng.random() < 0.1:
            events = (rng.choice(sent),)               # a re-sighting of an earlier one
        else:
            events = (txn,)
        sent.append(txn)
        h.clock.set(t)
        h.pipeline.process([EventBatch("terminal", events, h.clock.now())])
        if step % 7 == 0:
            asked += _compare(journal, memory, max(t, stamp))
            held = max(held, len(memory))
    asked += _compare(journal, memory, t)
    assert asked > 5000
    assert held > 20          # the horizon held views: the answers compared were not all empty
