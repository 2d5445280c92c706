"""Reminders and reviews through the pipeline: caps, growth, answers, quiet hours, closed days, order."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

from agent.alerts.lifecycle import NoticeKind
from agent.messages import AlertChange
from agent.store.queries import JournalReader
from tests.helpers import EXAMPLE_HOURS, SHANGHAI, Harness, config, sale

HOURS = EXAMPLE_HOURS


def at(d: int, hour: int, minute: int = 0, second: int = 0) -> datetime:
    return datetime(2026, 11, d, hour, minute, second, tzinfo=SHANGHAI)


def rows(h: Harness, kind: str | None = None) -> list[dict[str, object]]:
    out = JournalReader(h.journal.conn).outbox_rows("phones")
    return [r for r in out if kind is None or r["kind"] == kind]


def double_charge(h: Harness, voucher: int, when: datetime, amount: int = 12800) -> None:
    card = f"622576******{voucher:04d}"
    h.feed(sale(f"{voucher:06d}", amount, when, card=card))
    h.feed(sale(f"{voucher + 1:06d}", amount, when + timedelta(seconds=40), card=card))


def remind(h: Harness, when: datetime) -> int:
    h.clock.set(when)
    return int(h.command("reminders")["reminded"])


def test_an_open_finding_is_reminded_up_to_its_cap_at_growing_intervals(tmp_path: Path) -> None:
    h = Harness(tmp_path, config(HOURS + '\n[notify]\nreminders = 2\n'), channels=("phones",),
                start=at(26, 10, 0))
    double_charge(h, 101, at(26, 11, 0))
    assert [c.alert.rule for c in h.opened()] == ["DUP-001"]
    assert remind(h, at(26, 11, 30)) == 0, "30 minutes after the notice at 11:00:40"
    assert remind(h, at(26, 11, 31)) == 1
    assert remind(h, at(26, 12, 30)) == 0, "the second waits twice as long"
    assert remind(h, at(26, 12, 31)) == 1
    assert remind(h, at(26, 16, 0)) == 0, "capped at 2"
    assert [r["kind"] for r in rows(h)] == ["opened", "reminder", "reminder"]


def test_no_reminder_after_an_answer_or_the_terminals_void(tmp_path: Path) -> None:
    h = Harness(tmp_path, config(HOURS), channels=("phones",), start=at(26, 10, 0))
    double_charge(h, 101, at(26, 11, 0))
    double_charge(h, 201, at(26, 11, 5), amount=5600)
    first, _second = (c.alert for c in h.opened("DUP-001"))
    h.clock.set(at(26, 11, 10))
    assert h.command("ack", id=first.id, answer="legit", by="小王", note="两桌同价")["ok"]
    h.feed(sale("000301", 5600, at(26, 11, 20), kind="void", original="000202"))
    assert remind(h, at(26, 13, 0)) == 0
    assert rows(h, "reminder") == []


def test_nothing_is_reminded_in_quiet_hours_and_a_reminder_due_then_waits_for_the_morning(tmp_path: Path) -> None:
    manual = config(HOURS + '\n[settlement]\ncutoff = "manual"\n',
                    base='[shop]\nname = "测试店"\ntimezone = "Asia/Shanghai"\n')
    h = Harness(tmp_path, manual, channels=("phones",), start=at(26, 20, 0))
    double_charge(h, 101, at(26, 20, 10))
    for minute in range(0, 12 * 60, 10):
        remind(h, at(26, 20, 11) + timedelta(minutes=minute))
    assert rows(h, "reminder") == [], "the review at 21:00 reminded; after it, quiet until 09:00"
    assert remind(h, at(27, 9, 29)) == 0
    assert remind(h, at(27, 9, 30)) == 1, "one interval after the opening"


def test_an_escalated_finding_is_reminded_a_few_times_then_only_in_the_daily_review(tmp_path: Path) -> None:
    h = Harness(tmp_path, config(HOURS), channels=("phones",), start=at(23, 10, 0))
    double_charge(h, 101, at(23, 11, 0))
    h.clock.set(at(23, 23, 0))
    h.command("cutoff")
    escalated = rows(h, "escalated")
    assert len(escalated) == 1 and escalated[0]["next_at"].startswith("2026-11-24T01:00:00"), \
        "held for Tuesday's 09:00 opening (01:00 UTC)"
    sent = []
    t = at(24, 8, 0)
    while t < at(30, 20, 0):
        if remind(h, t):
            sent.append(t)
        t += timedelta(minutes=1)
    # Follow-up every 2 days, queued a minute before the opening so it joins the opening's message.
    assert sent == [at(26, 8, 59), at(28, 8, 59)]
    assert all(r["next_at"].endswith("01:00:00.000000Z") for r in rows(h, "reminder"))
    # Then only in the review's lines, until the refund window closes.
    h.clock.set(at(30, 21, 0))
    review = h.command("review")
    assert review["ok"]
    payload = rows(h)[-1]["payload"]
    assert "待退货 1 笔" in str(payload)


def test_the_review_lists_by_severity_then_amount_and_is_not_sent_on_a_closed_day(tmp_path: Path) -> None:
    h = Harness(tmp_path, config(HOURS), channels=("phones",), start=at(27, 10, 0))
    double_charge(h, 101, at(27, 11, 0), amount=5600)
    double_charge(h, 201, at(27, 11, 5), amount=1940000)
    double_charge(h, 301, at(27, 11, 9), amount=12800)
    h.feed(sale("000401", 4500, at(27, 11, 20), card="622576******9999", kind="sale"))
    h.clock.set(at(27, 21, 30))
    h.command("review")
    review = rows(h, NoticeKind.REVIEW.value)[-1]
    listed = json.loads(str(review["payload"]))["alerts"]
    amounts = [(a["severity"], a["transactions"][-1]["amount_minor"]) for a in listed]
    assert amounts == sorted(amounts, key=lambda x: ({"high": 0, "medium": 1, "low": 2}[x[0]], -x[1]))
    assert amounts[0] == ("high", 1940000)
    # Sunday is closed: nothing open, so no review and no all-clear.
    before = len(rows(h))
    for a in [c.alert for c in h.changes if isinstance(c, AlertChange) and c.notice == "opened"]:
        h.clock.set(at(28, 12, 0))
        h.command("ack", id=a.id, answer="legit", by="店长", note="ok", role="manager")
    count = len(rows(h))
    h.clock.set(at(29, 21, 0))
    assert h.command("review")["listed"] == 0
    assert len(rows(h)) == count and count >= before
