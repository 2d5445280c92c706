"""The daemon's look-backs from the journal (agent/rules/lookback.py) raise exactly the alerts the in-memory
rule state raises (issue 20): the same simulated month through the daemon's pipeline, event by event with
the daemon's scheduler, once with each, compared alert change by alert change (rule, transaction keys,
evidence, reasons, the transactions shown).

The month is a busy shop's mixed days with what makes the look-backs tricky added: a second terminal
charging the same cards (duplicates across terminals) and reusing the first one's voucher numbers, voids,
reversals (by RRN only) and refunds naming their originals, two voids of one original, a terminal whose clock
is three hours behind, first sightings missing the RRN and the 6+4 card that a second sighting fills in,
and reports arriving more than a day late.
"""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import date, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

import agent.replay as replay_module
from agent.config import parse_config
from agent.messages import AlertChange, Command, EventBatch
from agent.model import Settlement, Transaction
from agent.pipeline import Pipeline
from agent.replay import replay
from agent.rules.lookback import JournalRuleState
from agent.rules.state import RuleState
from agent.sim.day import build_day
from agent.sim.shops import CONVENIENCE
from agent.store.journal import Journal
from drivers.clock import ManualClock
from drivers.pan import mask_pan
from tests.helpers import MONTH_CONFIG

SHANGHAI = ZoneInfo("Asia/Shanghai")
CONFIG = MONTH_CONFIG
OTHER, SKEWED = "77001122", "88003344"


def _month(days: int = 31, per_day: int = 120) -> list[tuple[Any, Any, str]]:
    """(event, received, source) in the order received: the shop's terminal, a second one, a skewed one."""
    rng = random.Random(20)
    first = date(2026, 12, 14)   # across New Year (holiday calendar, the year of year-less times)
    out: list[tuple[Any, Any, str]] = []
    for i in range(days):
        evs = build_day("mixed", seed=i + 1, day=first + timedelta(days=i), tz=SHANGHAI, count=per_day,
                        profile=CONVENIENCE)
        for e in evs:
            ev = e.event
            if isinstance(ev, Settlement):
                out.append((replace(ev, batch_no=f"{i + 1:06d}"), e.at, "terminal"))
                continue
            if not isinstance(ev, Transaction):
                continue
            txn = replace(ev, card=mask_pan(ev.card), batch_no=f"{i + 1:06d}")
            if not e.reprint and txn.kind == "sale" and rng.random() < 0.06:
                # First seen without its RRN and with a last-4 mask; the terminal's own report fills both in.
                thin = replace(txn, rrn=None, card="************" + (txn.card or "0000")[-4:])
                out.append((thin, e.at, "printer"))
                out.append((txn, e.at + timedelta(seconds=rng.randrange(1, 40)), "terminal"))
            else:
                out.append((txn, e.at, "terminal"))
            if e.reprint or txn.result != "approved" or txn.kind != "sale":
                continue
            roll = rng.random()
            later = e.at + timedelta(seconds=rng.randrange(20, 400))
            if roll < 0.05:
                # The same card and amount on a second terminal, under the first one's voucher number.
                out.append((replace(txn, terminal_id=OTHER, rrn=f"B{txn.rrn}", trace_no=None), later, "other"))
            elif roll < 0.08:
                out.append((replace(txn, kind="reversal", voucher_no=f"R{txn.voucher_no}", trace_no=None,
                                    rrn=f"V{txn.rrn}", original_voucher_no=None, original_rrn=txn.rrn),
                            later, "terminal"))
            elif roll < 0.10:
                # Two voids of one original (the second never answers "voided by"), then a duplicate of it.
                for n in (1, 2):
                    out.append((replace(txn, kind="void", voucher_no=f"W{n}{txn.voucher_no}", trace_no=None,
                                        rrn=f"W{n}{txn.rrn}", original_voucher_no=txn.voucher_no,
                                        original_rrn=None), later + timedelta(seconds=n), "terminal"))
                out.append((replace(txn, voucher_no=f"D{txn.voucher_no}", rrn=f"D{txn.rrn}", trace_no=None),
                            later + timedelta(seconds=30), "terminal"))
            elif roll < 0.12:
                # The skewed terminal: its stamps three hours behind the instant it reports them at.
                out.append((replace(txn, terminal_id=SKEWED, voucher_no=f"S{txn.voucher_no}", rrn=f"S{txn.rrn}",
                                    time=(txn.time - timedelta(hours=3)) if txn.time else None), later, "skewed"))
            elif roll < 0.125 and txn.time is not None:
                # Reported 27 hours late: older than the rules' horizon when it arrives.
                out.append((replace(txn, voucher_no=f"L{txn.voucher_no}", rrn=f"L{txn.rrn}", trace_no=None),
                            later + timedelta(hours=27), "terminal"))
            elif roll < 0.145:
                # Voided (the void without a card: its original's is looked up), the amount paid on another card.
                out.append((replace(txn, kind="void", voucher_no=f"K{txn.voucher_no}", rrn=f"K{txn.rrn}", card=None,
                                    trace_no=None, original_voucher_no=txn.voucher_no, original_rrn=None),
                            later, "terminal"))
                out.append((replace(txn, voucher_no=f"N{txn.voucher_no}", rrn=f"N{txn.rrn}", trace_no=None,
                                    card=f"621700******{rng.randrange(10_000):04d}"),
                            later + timedelta(seconds=40), "terminal"))
            elif roll < 0.155:
                out.append((replace(txn, kind="refund", voucher_no=f"F{txn.voucher_no}", rrn=f"F{txn.rrn}",
                                    trace_no=None, amount_minor=max(1, txn.amount_minor // 2),
                                    original_voucher_no=txn.voucher_no, original_rrn=txn.rrn),
                            later + timedelta(hours=20), "terminal"))
    # Added reports are stamped when received (a late or skewed one keeps the stamp made for it).
    for n, (ev, received, source) in enumerate(out):
        if isinstance(ev, Transaction) and ev.time is not None and ev.voucher_no and ev.voucher_no[0] in "RWDKNF":
            out[n] = (replace(ev, time=received.replace(microsecond=0)), received, source)
    out.sort(key=lambda x: x[1])
    return out


class _JournalBacked(Pipeline):
    """Replay's pipeline as the daemon builds it: look-backs from the journal."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["rules_in_memory"] = False
        super().__init__(*args, **kwargs)


def _seen(changes: list[Any]) -> list[tuple[Any, ...]]:
    """Every alert change as staff would see it (alert ids and short codes are random, so not compared; nor is
    the path of the evidence bundle, named by the alert's id under each run's own state directory)."""
    return [(c.notice, c.at, c.alert.rule, c.alert.key, c.alert.state, c.alert.revision, c.alert.severity,
             c.alert.reason, c.alert.reason_zh, {k: v for k, v in c.alert.evidence.items() if k != "bundle"},
             tuple(t.to_dict() for t in c.alert.transactions))
            for c in changes if isinstance(c, AlertChange)]


@pytest.fixture(scope="module")
def month_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    items = _month()
    loaded = parse_config(CONFIG, "<test>")
    tmp = tmp_path_factory.mktemp("lookback")
    memory = replay(loaded, items, state=tmp / "memory", batched=False)
    kinds: list[type] = []
    mp = pytest.MonkeyPatch()

    class Watched(_JournalBacked):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            kinds.append(type(self.engine.state))

    mp.setattr(replay_module, "Pipeline", Watched)
    try:
        journal = replay(loaded, items, state=tmp / "journal", batched=False)
    finally:
        mp.undo()
    return {"items": items, "memory": memory, "journal": journal, "kinds": kinds}


def test_the_month_covers_what_makes_look_backs_tricky(month_runs: dict[str, Any]) -> None:
    txns = [ev for ev, _, _ in month_runs["items"] if isinstance(ev, Transaction)]
    assert len(txns) > 3500
    for kind in ("void", "reversal", "refund"):
        assert sum(t.kind == kind for t in txns) > 20, kind
    assert sum(t.terminal_id == OTHER for t in txns) > 50 and sum(t.terminal_id == SKEWED for t in txns) > 30
    rules = {c.alert.rule for c in month_runs["memory"].notifications if isinstance(c, AlertChange)}
    # Every rule that looks back fired in the month: the comparison below sees their answers.
    assert {"DUP-001", "DUP-003", "DUP-004", "VEL-001"} <= rules, rules
    assert month_runs["kinds"] == [JournalRuleState]


def test_journal_look_backs_raise_the_same_alerts_as_memory(month_runs: dict[str, Any]) -> None:
    memory, journal = month_runs["memory"], month_runs["journal"]
    assert memory.counts["alerts_opened"] > 50
    assert _seen(journal.notifications) == _seen(memory.notifications)
    assert journal.counts == memory.counts
    assert journal.outbox == memory.outbox


def test_replay_keeps_the_rules_in_memory(tmp_path: Path) -> None:
    loaded = parse_config(CONFIG, "<test>")
    kinds: list[type] = []
    mp = pytest.MonkeyPatch()

    class Watched(Pipeline):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            kinds.append(type(self.engine.state))

    mp.setattr(replay_module, "Pipeline", Watched)
    try:
        replay(loaded, _month(days=1, per_day=20), state=tmp_path / "r")
    finally:
        mp.undo()
    assert kinds == [RuleState]


def _drive(state: Path, items: list[tuple[Any, Any, str]], *, in_memory: bool, restarts: set[int]) -> list[Any]:
    """The items through a pipeline as the daemon runs it (one batch each, the baseline refreshed daily),
    restarted (a new pipeline on the same journal: the rules warm up from it) before the items numbered in
    ``restarts``; every alert change."""
    loaded = parse_config(CONFIG, "<test>")
    clock = ManualClock(items[0][1] - timedelta(seconds=1))
    state.mkdir()
    journal = Journal(state / "settleguard.sqlite3")
    changes: list[Any] = []

    def start() -> Pipeline:
        return Pipeline(loaded, journal, clock=clock, channels=("hq",), listeners=[changes.append],
                        rules_in_memory=in_memory)

    pipeline, day = start(), None
    for n, (event, received, source) in enumerate(items):
        clock.set(max(received, clock.now()))
        if n in restarts:
            pipeline = start()
        if received.date() != day:
            pipeline.process([Command("baseline")])
            day = received.date()
        pipeline.process([EventBatch(source, (event,), received)])
    journal.close()
    return changes


def test_after_restarts_the_warmed_up_look_backs_answer_as_memory_does(tmp_path: Path) -> None:
    """A restart reads the horizon back from the journal, each transaction as merged by then; sightings after
    the restart fill rows in further, which the views read back must not show (as in memory)."""
    items = _month(days=6, per_day=150)
    restarts = {len(items) * k // 9 for k in range(1, 9)}
    memory = _drive(tmp_path / "m", items, in_memory=True, restarts=restarts)
    journal = _drive(tmp_path / "j", items, in_memory=False, restarts=restarts)
    assert len(_seen(memory)) > 30
    assert _seen(journal) == _seen(memory)
