"""Replay is live: the daemon on simulated time and ``replay`` write the same notices for the same day,
and replay reports what each phone would have received, in shop time."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from agent.config import parse_config
from agent.delivery.channels.base import HttpRequest, HttpResponse
from agent.messages import EventBatch
from agent.replay import phone_days, replay
from agent.schedule import fire_times
from agent.service.daemon import Daemon
from agent.store.queries import open_read_only
from agent.store.schema import journal_path
from drivers.clock import ManualClock
from drivers.events import Transaction
from tests.helpers import EXAMPLE_HOURS, SHANGHAI, sale

SHOP = """
[shop]
name = "好味道"
till = "t1"
timezone = "Asia/Shanghai"
""" + EXAMPLE_HOURS + """
[settlement]
cutoff = "23:00"

[[channel]]
name = "phones"
type = "wecom"
key = "test-key"
"""


def at(d: int, hour: int, minute: int = 0, second: int = 0) -> datetime:
    return datetime(2026, 11, d, hour, minute, second, tzinfo=SHANGHAI)


def day_of_events() -> list[tuple[Transaction, datetime]]:
    """Thursday 26 November: a double charge at noon left open (reminded, reviewed, escalated at the
    cutoff, held for the morning), a critical one after closing (its void deadline is before opening),
    one at 23:14 voided at 23:40 (held, then never sent), and one at 23:20 left for the morning."""
    out: list[tuple[Transaction, datetime]] = []

    def double(voucher: int, when: datetime, amount: int) -> None:
        card = f"622576******{voucher:04d}"
        for i in range(2):
            t = when + timedelta(seconds=40 * i)
            out.append((sale(f"{voucher + i:06d}", amount, t, card=card), t))

    for i in range(20):   # ordinary trading
        t = at(26, 9, 30) + timedelta(minutes=25 * i)
        out.append((sale(f"{500 + i:06d}", 3000 + 100 * i, t, card=f"621700******{i:04d}"), t))
    double(101, at(26, 12, 0), 12800)
    double(201, at(26, 22, 10), 8800)
    double(301, at(26, 23, 14), 6600)
    out.append((sale("000303", 6600, at(26, 23, 40), kind="void", original="000302", batch="000129"),
                at(26, 23, 40)))
    double(401, at(26, 23, 20), 7700)
    # After the cutoff the terminal is in its next batch.
    out = [(t.with_(batch_no="000129") if when > at(26, 23, 0) else t, when) for t, when in out]
    return sorted(out, key=lambda p: p[1])


def people_notices(state: Path) -> list[tuple[str, str, str, str]]:
    """(kind, what it is about, written at, not before) of every row for the phones, in shop time."""
    reader = open_read_only(journal_path(state))
    try:
        rows = reader.outbox_rows("phones")
    finally:
        reader.close()
    out = []
    for r in rows:
        payload = json.loads(r["payload"])
        about = payload.get("alert", {}).get("rule") or ",".join(a["rule"] for a in payload.get("alerts", ()))
        out.append((r["kind"], about, _local(r["created"]), _local(r["next_at"])))
    return out


def _local(text: str) -> str:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(SHANGHAI).strftime("%d %H:%M:%S")


class OkRobot:
    """The WeCom robot's answer to everything (nothing leaves the machine)."""

    def post(self, request: HttpRequest) -> HttpResponse:
        return HttpResponse(200, {}, b'{"errcode":0,"errmsg":"ok"}')


def run_daemon(tmp: Path, events: list[tuple[Transaction, datetime]], start: datetime, end: datetime) -> Path:
    """The real daemon on a ManualClock; its own Scheduler stepped every simulated minute (its thread only
    paces run_due on real time, which a simulated day cannot wait for)."""
    loaded = parse_config(SHOP, "<live>")
    clock = ManualClock(start)
    state = tmp / "daemon"
    daemon = Daemon(loaded, state, clock=clock, sender=OkRobot(), watch_config=False,
                    stuck_after=10 ** 9)
    daemon.start()
    try:
        assert daemon.scheduler is not None
        daemon.scheduler.stop()
        pending = list(events)
        # The live loop looks every second; a simulated day is stepped every minute and at each instant
        # the plan names (within the second the live loop would have seen it).
        steps = sorted({start + timedelta(minutes=i) for i in range(int((end - start) / timedelta(minutes=1)) + 1)}
                       | {when for when, _ in fire_times(daemon.scheduler.jobs, start, end)})
        for t in steps:
            while pending and pending[0][1] <= t:
                txn, when = pending.pop(0)
                clock.set(when)
                daemon.inbox.put(EventBatch("terminal", (txn,), when.astimezone(UTC)))
                daemon.command("tick")   # handled at its own instant, as a reader's batch is live
            clock.set(t)
            daemon.scheduler.run_due()
            daemon.command("tick")   # a barrier: everything posted before it has been handled
    finally:
        daemon.stop()
    return state


def test_replay_and_the_daemon_write_the_same_notices_for_the_same_day(tmp_path: Path) -> None:
    events = day_of_events()
    start = events[0][1] - timedelta(seconds=1)
    end = at(27, 10, 30)
    daemon_state = run_daemon(tmp_path, events, start, end)
    loaded = parse_config(SHOP, "<live>")
    result = replay(loaded, [(t, when.astimezone(UTC)) for t, when in events], state=tmp_path / "replay",
                    until=end, source="terminal")
    live = people_notices(daemon_state)
    replayed = people_notices(tmp_path / "replay")
    assert replayed == live
    kinds = [k for k, *_ in live]
    assert "reminder" in kinds and "review" in kinds and "escalated" in kinds
    # The review before the 21:30 closing; a reminder 30 min after the noon alert; the critical
    # after-hours one not held; the 23:20 one and the escalation held for Friday's 09:00 opening.
    assert ("review", "DUP-001", "26 21:00:00", "26 21:00:00") in live
    assert ("reminder", "DUP-001", "26 12:31:00", "26 12:31:00") in live or any(
        k == "reminder" and w.startswith("26 12:3") for k, _, w, _ in live)
    held = [n for n in live if n[3] == "27 09:00:00"]
    assert {k for k, *_ in held} >= {"opened", "escalated"}
    assert all(n[2] == n[3] for n in live if n not in held), "nothing else waited"
    # What the phone got: in quiet hours only the critical one, and one message at opening.
    phones = result.phones
    quiet = [m for m in phones if m.quiet]
    assert quiet and all(m.critical for m in quiet)
    morning = [m for m in phones if at(27, 0) <= m.at < at(27, 9, 30)]
    assert len(morning) == 1 and morning[0].at == at(27, 9, 0), "the night's findings: one message at opening"
    assert "DUP-001" in morning[0].rules
    # The night's open finding is reminded one interval after it reached the phone, not before.
    later = [m for m in phones if m.at >= at(27, 9, 30)]
    assert [m.kind for m in later] in ([], ["reminder"], ["digest"])
    # The 23:14 double charge was voided at 23:40: its held announcement never reached a phone.
    voided = next(n.alert.id for n in result.notifications
                  if getattr(n, "notice", None) == "voided" and n.alert.rule == "DUP-001")
    assert not any(voided in m.alert_ids for m in phones)
    days = phone_days(phones, SHANGHAI, start, end, result.people_channels)
    # Counted as the phone shows them: a digest over the robot's size limit arrives in parts.
    assert [(d.day.day, d.count) for d in days] == [
        (26, sum(m.parts for m in phones if m.at < at(27, 0))), (27, sum(m.parts for m in morning + later))]


def test_replay_json_keeps_each_notice_kind_and_the_shop_offset_and_the_summary_is_in_shop_time(
        tmp_path: Path) -> None:
    capture = tmp_path / "day.jsonl"
    lines = []
    for txn, _ in day_of_events():
        d: dict[str, Any] = txn.to_dict()
        lines.append(json.dumps(d, ensure_ascii=False))
    capture.write_text("\n".join(lines) + "\n", encoding="utf-8")
    cfg = tmp_path / "c.toml"
    cfg.write_text(SHOP + '\n[[source]]\nname = "t"\nprotocol = "jsonl"\nfile = "day.jsonl"\n', encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "agent.cli", "replay", "--config", str(cfg), "--json",
                           "--until", "2026-11-27T10:00", str(capture)],
                          capture_output=True, text=True, timeout=120, cwd=Path(__file__).parent.parent)
    assert proc.returncode == 0, proc.stderr
    notices = [json.loads(line) for line in proc.stdout.splitlines()]
    kinds = [n.get("notice") for n in notices]
    assert "reminder" in kinds and "opened" in kinds and "escalated" in kinds
    stamps = [v for n in notices for v in _times(n)]
    assert stamps and all(s.endswith("+08:00") for s in stamps), [s for s in stamps if not s.endswith("+08:00")]
    reminder = next(n for n in notices if n.get("notice") == "reminder")
    assert reminder["at"] > reminder["created"], "a reminder carries its own time, not the opening's"
    summary = proc.stderr
    assert "2026-11-26 09:30" in summary and "UTC+0800" in summary, summary
    assert "messages per phone per day" in summary
    assert "AMT-001" in summary and "silent" in summary, "no history: the amount rules could not judge"


def _times(obj: Any) -> list[str]:
    if isinstance(obj, dict):
        return [v for x in obj.values() for v in _times(x)]
    if isinstance(obj, list):
        return [v for x in obj for v in _times(x)]
    if isinstance(obj, str) and len(obj) >= 19 and obj[4] == "-" and obj[10] == "T":
        return [obj]
    return []
