"""Replay's batched journal writes and in-memory baseline amounts give exactly the alerts that handling
each event in its own transaction (the daemon's way, baseline re-read from the journal) gives (issue 20)."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from agent.config import parse_config
from agent.messages import AlertChange
from agent.replay import decode_captures, replay
from agent.sim.day import build_day
from agent.sim.terminal import encode_day
from tests.helpers import MONTH_CONFIG

SHANGHAI = ZoneInfo("Asia/Shanghai")
CONFIG = MONTH_CONFIG


def _what(changes: list[Any]) -> list[tuple[Any, ...]]:
    """Every alert change as staff would see it (ids are random, so not compared)."""
    return [(c.notice, c.at, c.alert.rule, c.alert.key, c.alert.state, c.alert.revision, c.alert.severity,
             tuple(t.voucher_no for t in c.alert.transactions)) for c in changes if isinstance(c, AlertChange)]


def test_batched_replay_opens_the_same_alerts_as_event_by_event(tmp_path: Path) -> None:
    # A month of mixed days (every anomaly kind injected), one batch a day, on the cn_ecr wire.
    first = date(2026, 12, 14)   # across New Year too
    days = []
    for i in range(31):
        events = build_day("mixed", seed=i + 1, day=first + timedelta(days=i), tz=SHANGHAI, count=60)
        days.append([replace(e, event=replace(e.event, batch_no=f"{i + 1:06d}")) for e in events])
    capture = tmp_path / "month.cn_ecr"
    capture.write_bytes(b"".join(encode_day("cn_ecr", d) for d in days))
    end = datetime.combine(first + timedelta(days=31), datetime.min.time(), SHANGHAI)
    events, _ = decode_captures([capture], "cn_ecr", SHANGHAI, received=end)
    loaded = parse_config(CONFIG, "<test>")

    batched = replay(loaded, events, state=tmp_path / "batched")
    single = replay(loaded, events, state=tmp_path / "single", batched=False)

    assert batched.counts["alerts_opened"] > 10, "a mixed month opens alerts: the comparison must see some"
    assert _what(batched.notifications) == _what(single.notifications)
    assert batched.counts == single.counts
    assert batched.silent == single.silent
    assert batched.outbox == single.outbox
    assert [(m.channel, m.at, m.kind, m.rules) for m in batched.phones] == \
        [(m.channel, m.at, m.kind, m.rules) for m in single.phones]


def test_an_item_failing_in_an_optimistic_chunk_ends_as_on_the_careful_path(tmp_path: Path) -> None:
    """Replay's chunks go without a savepoint per item; one failing item rolls the chunk back and it is
    handled again item by item: the journal, the counts and the alerts end as with savepoints throughout."""
    from agent.messages import EventBatch
    from tests.helpers import Harness, sale

    outcomes = []
    for optimistic in (False, True):
        (tmp_path / str(optimistic)).mkdir()
        h = Harness(tmp_path / str(optimistic))
        original = h.pipeline.alerts.open

        def failing_open(finding: Any, now: datetime, original: Any = original) -> Any:
            if finding.subject.txn.voucher_no == "000124":
                raise RuntimeError("this alert cannot be written")
            return original(finding, now)

        h.pipeline.alerts.open = failing_open  # type: ignore[method-assign]
        t0 = h.clock.now()
        items = [EventBatch("terminal", (sale(f"{122 + i:06d}", 12800, t0 + timedelta(minutes=i)),),
                            t0 + timedelta(minutes=i)) for i in range(5)]
        h.pipeline.process(items, optimistic=optimistic)
        j = h.journal
        outcomes.append((
            j.count_transactions(),
            [(r["stage"], r["raw"]) for r in j.quarantined()],
            [(a.rule, a.key, a.state) for a in j.alerts()],
            dict(h.pipeline.counts),
            [(c.notice, c.alert.rule, c.alert.key) for c in h.changes],
            len(h.pipeline.engine.state),
        ))
    careful, optimistic_run = outcomes
    assert careful[1], "an item failed: the comparison must see the salvage path"
    assert optimistic_run == careful
