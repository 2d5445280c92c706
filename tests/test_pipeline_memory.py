"""The rules' memory stays bounded by their horizon, whatever the transactions' stamps (issue 20)."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

import agent.pipeline as pipeline_module
import agent.rules.lookback as lookback_module
from agent.memory import limit_arenas, release_freed
from agent.messages import EventBatch
from agent.model import SHARED_FIELDS, Transaction
from agent.rules.lookback import JournalRuleState
from agent.rules.state import RuleState
from tests.helpers import Harness, sale
from tests.test_rules_support import SHANGHAI, at, view


def _backlog(h: Harness, hours: int, every: timedelta) -> int:
    """Sales stamped and received from ``hours`` before the clock up to 10 h before it, ten per batch; how many."""
    start = h.clock.now() - timedelta(hours=hours)
    n = int((timedelta(hours=hours - 10)) / every)
    for first in range(0, n, 10):
        events = tuple(sale(f"{i:06d}", 1000 + i, start + i * every, card=f"622576******{i % 10000:04d}",
                            batch=f"{i // 1000:06d}") for i in range(first, min(n, first + 10)))
        # Received when stamped (a spool or a buffered wire replayed late): the terminal's clock is right.
        h.pipeline.process([EventBatch("terminal", events, events[-1].time)])
    return n


def test_a_start_up_tick_does_not_stop_pruning_of_earlier_transactions(tmp_path: Path) -> None:
    """The daemon's first idle tick comes before any transaction. It used to record the clock's "now" as
    the newest transaction time pruned at, so a backlog stamped before the start-up never moved a minute
    past it and, the clock standing still within the minute, nothing left the rules' memory."""
    h = Harness(tmp_path)
    h.pipeline.tick()
    sent = _backlog(h, hours=60, every=timedelta(minutes=1))
    horizon = h.pipeline.engine.state.horizon
    held = len(h.pipeline.engine.state)
    # What is inside the horizon of the newest instant the pipeline knows (its clock) may stay; no more.
    inside = int((horizon - timedelta(hours=10)) / timedelta(minutes=1)) + 1
    assert sent == 3000
    assert held <= inside, f"{held} views held of {sent}; at most {inside} are inside the horizon"


def test_pruning_follows_transaction_time_when_the_clock_stands_still(tmp_path: Path) -> None:
    """A backlog caught up in seconds: a minute of transaction time is enough to prune, with or
    without the start-up tick."""
    h = Harness(tmp_path)
    _backlog(h, hours=60, every=timedelta(minutes=1))
    inside = int((h.pipeline.engine.state.horizon - timedelta(hours=10)) / timedelta(minutes=1)) + 1
    assert len(h.pipeline.engine.state) <= inside


def test_every_index_empties_when_its_views_leave_the_horizon() -> None:
    """Views are held once per key kind (a single view, or a list once a key is shared) and every index lets
    go of a view when it leaves the horizon: nothing in the rules' memory follows the number of transactions."""
    state = RuleState(SHANGHAI, horizon=timedelta(hours=1))
    start = at("2026-03-10 10:00")
    views = [view(start + timedelta(minutes=i), 1000 + i % 3, card=f"622576******{i % 4:04d}",
                  voucher=f"{i:06d}", rrn=f"R{i:011d}", terminal=f"T{i % 2}") for i in range(50)]
    voids = [view(start + timedelta(minutes=50 + i), 1000, kind="void", voucher=f"V{i:05d}", terminal="T0",
                  original_voucher=f"{2 * i:06d}") for i in range(5)]
    for v in views + voids:
        state.observe(v)
    assert state.by_reference(terminal_id="T1", voucher_no="000007") is views[7]
    assert state.by_reference(terminal_id="T0", voucher_no="000007") is None        # another terminal's number
    assert state.by_reference(terminal_id=None, rrn="R00000000009") is views[9]
    assert state.voided_by(views[4]) is voids[2] and state.voided_by(views[5]) is None
    assert [v.voucher_label for v in state.same_amount(1001, start, start + timedelta(minutes=10))] \
        == ["000001", "000004", "000007", "000010"]
    state.prune(start + timedelta(minutes=54) + state.horizon)     # all but the last void (minute 54) leave
    assert len(state) == 1
    assert state.by_reference(terminal_id="T1", voucher_no="000007") is None
    assert state.voided_by(views[4]) is None
    sizes = [len(state._by_tail), len(state._by_amount), len(state._by_ref), len(state._voided_by)]
    assert sizes == [1, 1, 1, 1], sizes          # only the remaining void's card, amount, voucher, original


def test_two_terminals_sharing_a_voucher_number_are_told_apart_and_pruned_separately() -> None:
    state = RuleState(SHANGHAI, horizon=timedelta(hours=1))
    first = view(at("2026-03-10 10:00"), voucher="000042", terminal="T1")
    second = view(at("2026-03-10 10:30"), voucher="000042", terminal="T2")
    state.observe(first)
    state.observe(second)
    assert state.by_reference(terminal_id="T1", voucher_no="000042") is first
    assert state.by_reference(terminal_id="T2", voucher_no="000042") is second
    state.prune(at("2026-03-10 11:10"))
    assert state.by_reference(terminal_id="T1", voucher_no="000042") is None
    assert state.by_reference(terminal_id="T2", voucher_no="000042") is second


def test_views_share_the_few_valued_strings_of_their_transactions() -> None:
    """Each decoded event brings its own copy of the terminal id, batch, operator...; the rules keep a day."""
    made = [Transaction.from_dict(json.loads(json.dumps(sale(f"{i:06d}", 100, at("2026-03-10 10:00")).to_dict())))
            for i in range(2)]
    for name in SHARED_FIELDS:                                # shared as built, from json.loads' own copies
        assert getattr(made[0], name) is getattr(made[1], name), name
    twin = Transaction.from_dict(json.loads(json.dumps(made[0].to_dict())))
    assert twin == made[0] and twin.terminal_id is made[0].terminal_id
    assert twin.voucher_no is not made[0].voucher_no          # unique values are left as they are


def test_the_pipeline_hands_freed_memory_back_after_work_and_when_idle(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    handed: list[int] = []

    def counted() -> bool:
        handed.append(1)
        return True

    monkeypatch.setattr(pipeline_module, "release_freed", counted)
    h = Harness(tmp_path)
    h.pipeline.tick()
    assert handed == []                                       # idle and nothing done: nothing to hand back
    n = _backlog(h, hours=12, every=timedelta(seconds=20))    # 360 events: fewer than the idle threshold
    assert n < pipeline_module.TRIM_IDLE_AFTER_EVENTS and handed == []
    _backlog(h, hours=13, every=timedelta(seconds=20))        # 540 more
    assert handed == []                                       # busy: not yet TRIM_AFTER_EVENTS
    h.pipeline.tick()
    assert handed == [1]                                      # the first idle moment after the work
    h.pipeline.tick()
    assert handed == [1]


def test_release_freed_works_on_this_c_library() -> None:
    """glibc (every till image we ship) has malloc_trim; the call must reach it, not silently do nothing."""
    assert release_freed() is True


def test_the_arena_cap_reaches_this_c_library() -> None:
    """mallopt(M_ARENA_MAX) answers 1 when glibc took the setting (0: refused), so this fails if it did not."""
    assert limit_arenas() is True


def test_the_daemons_look_backs_hold_a_bounded_cache_not_the_horizon(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The daemon's rules answer from the journal (agent/rules/lookback.py): what they keep in memory is a
    cache of views of a fixed size, however many views the horizon holds; the horizon itself is a count of
    journal rows, pruned as in memory."""
    monkeypatch.setattr(lookback_module, "CACHE_VIEWS", 50)
    h = Harness(tmp_path)
    state = h.pipeline.engine.state
    assert isinstance(state, JournalRuleState)
    sent = _backlog(h, hours=60, every=timedelta(seconds=30))
    inside = int((state.horizon - timedelta(hours=10)) / timedelta(seconds=30)) + 1
    assert sent == 6000
    assert 1000 < len(state) <= inside                 # held (as rows): the horizon's worth, no more
    assert state.resident() <= 50                      # in memory: the cache alone
    assert len(state._odd) == 0


def test_late_reports_and_second_voids_are_noted_only_until_pruned(tmp_path: Path) -> None:
    """What the journal cannot answer alone (a report older than the horizon when it arrives; a second void of
    one original, never the answer for it) is kept in memory by id, and let go as the in-memory state lets go
    of those views."""
    h = Harness(tmp_path)
    state = h.pipeline.engine.state
    assert isinstance(state, JournalRuleState)
    now = h.clock.now()
    h.feed(sale("000001", 1000, now))
    h.feed(sale("000002", 1000, now + timedelta(minutes=2), kind="void", original="000001"),
           sale("000003", 1000, now + timedelta(minutes=3), kind="void", original="000001"))
    h.clock.set(now + timedelta(minutes=5))
    h.pipeline.tick()
    # Stamped two days before the newest: older than the cutoff of the prune just made.
    h.pipeline.process([EventBatch("terminal", (sale("000004", 777, now - timedelta(days=2)),), h.clock.now())])
    assert len(state._odd) == 1 and sum(len(r.shadowed) for r in (state._voucher, state._orig_voucher)) == 1
    original = next(state.card_history("622576******6691", now - timedelta(minutes=1), now))
    voided = state.voided_by(original)
    assert voided is not None and voided.txn.voucher_no == "000002"   # the first void, as in memory
    h.clock.set(now + timedelta(days=2))
    h.pipeline.tick()
    assert len(state._odd) == 0 and all(not r.shadowed for r in (state._voucher, state._rrn, state._orig_voucher,
                                                                  state._orig_rrn))
    assert len(state) == 0


def test_rule_tallies_stay_bounded_by_the_horizon(tmp_path: Path) -> None:
    """The rules' own tallies (VOID-001's per operator and business day) are pruned with the state."""
    h = Harness(tmp_path)
    _backlog(h, hours=80, every=timedelta(minutes=2))
    shifts = h.pipeline.engine.state.tallies.get("VOID-001", {})
    assert 0 < len(shifts) <= 3          # today's business day and the one before (one operator)
