"""The review as the daily digest: what expired unchecked is said, nothing is pushed at night, lists never
repeat in every part of a split message and never make a review unsendable (found by review of issue 16)."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

from agent.delivery.channels.base import Notice
from agent.delivery.channels.wecom import WecomChannel
from agent.messages import Command
from tests.helpers import BASE_CONFIG, EXAMPLE_HOURS, SHANGHAI, Harness, config, sale

SH = SHANGHAI


def at(day: int, hh: int, mm: int = 0) -> datetime:
    return datetime(2026, 11, day, hh, mm, tzinfo=SHANGHAI)     # 26 Nov 2026 is a Thursday


def people_rows(h: Harness, kind: str) -> list[dict[str, Any]]:
    rows = h.journal.conn.execute("SELECT payload, next_at FROM outbox WHERE kind=? ORDER BY id", (kind,))
    return [{**json.loads(r[0]), "next_at": r[1]} for r in rows.fetchall()]


def shop(tmp_path: Path) -> Harness:
    return Harness(tmp_path, config(EXAMPLE_HOURS + '\n[rules.DUP-001]\nwindow = "10m"\n', base=BASE_CONFIG),
                   start=at(26, 9))


def test_an_off_hours_sale_that_expired_unseen_is_in_the_next_days_review(tmp_path: Path) -> None:
    h = shop(tmp_path)
    h.clock.set(at(26, 21, 0))
    h.pipeline.process([Command("review")])                  # Thursday's review, before the sale
    h.feed(sale("000201", 4500, at(26, 22, 41)))              # after closing: held for the morning
    (late,) = [c for c in h.changes if getattr(c, "notice", None) == "opened" and c.alert.rule == "TIME-001"]
    h.clock.set(at(26, 23, 0))
    h.pipeline.process([Command("cutoff")])                   # expires unchecked, never pushed
    h.clock.set(at(27, 21, 0))
    h.pipeline.process([Command("review")])                   # Friday's review
    (friday,) = [r for r in people_rows(h, "all_clear") + people_rows(h, "review") if "27T13:00" in r["next_at"]]
    listed = [line for section in friday["sections"] for line in section]
    assert any("未核对" in line for line in listed) and any(late.alert.code in line for line in listed)
    assert friday["title"][0] != "今日无待处理异常"


def test_a_review_caught_up_in_quiet_hours_sends_no_all_clear_and_holds_findings(tmp_path: Path) -> None:
    h = shop(tmp_path)
    h.clock.set(at(26, 22, 45))                               # a restart after closing catches up 21:00
    assert h.command("review")["quiet"] is True               # nothing open: no all-clear at night
    h.feed(sale("000301", 12800, at(26, 22, 46)), sale("000302", 12800, at(26, 22, 47)))
    h.clock.set(at(26, 22, 50))
    h.pipeline.process([Command("review")])
    (held,) = people_rows(h, "review")
    # The void deadline (23:00) comes before opening: the duplicate is critical and goes now.
    assert held["next_at"].startswith("2026-11-26T14:50")


def test_long_lists_are_blocks_of_their_own_never_repeated_and_never_unsendable() -> None:
    sections = (("待退货 95 笔：", *(f"· K{n:03d} 重复扣款 RMB 128.00 11-2{n % 9} 14:03" for n in range(95))),)
    n = Notice(kind="all_clear", alerts=(), shop="店", source="s", created=at(27, 21), deadline=at(27, 23),
               title=("今日无新的待处理异常，另见以下清单", "x"), sections=sections)
    parts = WecomChannel("w", key="k", tz=SH).build_requests(n, "m", at(27, 21))
    contents = [json.loads(p.body)["markdown"]["content"] for p in parts]
    assert all(len(c.encode()) <= 4096 for c in contents)
    joined = "\n".join(contents)
    assert all(joined.count(f"K{n:03d} ") == 1 for n in range(95)), "every line once, none repeated per part"
    assert joined.count("待退货 95 笔：") == 1 and joined.count("待退货 95 笔（续）") == 6   # 15 lines a block
