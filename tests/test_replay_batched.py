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

SHANGHAI = ZoneInfo("Asia/Shanghai")
CONFIG = """
[shop]
name = "回放测试店"
till = "t1"
timezone = "Asia/Shanghai"

[settlement]
cutoff = "23:00"

[[channel]]
name = "hq"
type = "webhook"
url = "http://127.0.0.1:9/never-called"
"""


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
