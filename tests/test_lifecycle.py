"""Before the batch closes: review, void resolves, cutoff/settlement escalates, ack, manual shops, DST."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from agent.alerts.remedy import next_cutoff
from agent.config import parse_config
from agent.messages import AlertChange, BatchClosed, Command, ReviewNotice
from agent.schedule import fire_times, missed_review, plan
from agent.service.daemon import Daemon
from agent.store.journal import Journal
from drivers.clock import ManualClock
from drivers.events import Settlement
from tests.helpers import BASE_CONFIG, SHANGHAI, Harness, committed_alerts, config, sale, wait_until

BERLIN = ZoneInfo("Europe/Berlin")


def at(hh: int, mm: int, ss: int = 0, day: int = 27) -> datetime:
    return datetime(2026, 11, day, hh, mm, ss, tzinfo=SHANGHAI)


def duplicate(h: Harness, v1: str = "000122", v2: str = "000123", hh: int = 14) -> None:
    h.feed(sale(v1, 12800, at(hh, 3)), sale(v2, 12800, at(hh, 4)))


def test_pre_close_review_lists_open_findings_with_time_left(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    duplicate(h)
    h.clock.set(at(22, 30).astimezone(UTC))
    h.pipeline.process([Command("review")])
    review = [c for c in h.changes if isinstance(c, ReviewNotice)]
    assert len(review) == 1 and len(review[0].alerts) == 1
    assert review[0].deadline == at(23, 0)
    rows = h.journal.conn.execute("SELECT kind, payload FROM outbox WHERE kind='review'").fetchall()
    assert len(rows) == 1 and json.loads(rows[0][1])["alerts"][0]["rule"] == "DUP-001"


def test_all_clear_when_nothing_is_open(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.clock.set(at(22, 30).astimezone(UTC))
    h.pipeline.process([Command("review")])
    kinds = [r[0] for r in h.journal.conn.execute("SELECT kind FROM outbox").fetchall()]
    assert kinds == ["all_clear"]


def test_void_before_cutoff_resolves_and_nothing_escalates(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    duplicate(h)
    h.feed(sale("000130", 12800, at(20, 0), kind="void", original="000123"))
    h.clock.set(at(23, 0).astimezone(UTC))
    h.pipeline.process([Command("cutoff")])
    notices = [c.notice for c in h.changes if isinstance(c, AlertChange)]
    assert notices == ["opened", "voided"]
    assert h.pipeline.counts["alerts_escalated"] == 0


def test_cutoff_with_an_open_finding_escalates_to_refund_with_evidence(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.pipeline.alerts.evidence_dir = tmp_path / "evidence"
    duplicate(h)
    h.clock.set(at(23, 0).astimezone(UTC))
    h.pipeline.process([Command("cutoff")])
    escalated = [c.alert for c in h.changes if isinstance(c, AlertChange) and c.notice == "escalated"]
    assert len(escalated) == 1
    alert = escalated[0]
    assert alert.state == "escalated" and alert.revision == 2
    assert alert.suggestion is not None and alert.suggestion.action == "refund"
    # The refund steps and the window come from config/remedies (issue 16); the exact wording is tested there.
    assert "管理 → 退货" in alert.suggestion.steps_zh and "30 days" in alert.suggestion.steps_en
    bundle = Path(alert.evidence["bundle"])
    evidence = json.loads((bundle / "evidence.json").read_text(encoding="utf-8"))
    assert evidence["rule_reasoning"]["rule"] == "DUP-001"
    assert [t["transaction"]["voucher_no"] for t in evidence["transactions"]] == ["000122", "000123"]
    assert [e["state"] for e in evidence["timeline"]] == ["open", "escalated"]
    assert "000123" in (bundle / "README.txt").read_text(encoding="utf-8")
    assert any(isinstance(c, BatchClosed) for c in h.changes)


def test_a_settlement_event_closes_the_batch_in_a_manual_shop(tmp_path: Path) -> None:
    loaded = config(base=BASE_CONFIG.replace('cutoff = "23:00"', 'cutoff = "manual"'))
    assert [j.name for j in plan(loaded)] == ["reminders", "baseline"]  # no review or cutoff on the clock
    h = Harness(tmp_path, loaded)
    duplicate(h)
    alert = h.opened()[0].alert
    assert alert.suggestion is not None and alert.suggestion.deadline is None
    h.clock.set(at(23, 30).astimezone(UTC))  # past any usual cutoff: still open, the batch is open
    assert h.journal.alerts(states=("open",))
    h.feed(Settlement(source="cn_ecr", time=at(23, 45), terminal_id="15221155", batch_no="000128",
                      count=2, total_minor=25600, currency="CNY"))
    assert [a.state for a in h.journal.alerts()] == ["escalated"]


def test_settlement_of_another_terminal_leaves_this_batch_open(tmp_path: Path) -> None:
    h = Harness(tmp_path, config(base=BASE_CONFIG.replace('cutoff = "23:00"', 'cutoff = "manual"')))
    duplicate(h)
    h.feed(Settlement(source="cn_ecr", time=at(23, 45), terminal_id="99999999", batch_no="000001"))
    assert [a.state for a in h.journal.alerts()] == ["open"]


def test_review_missed_while_down_happens_at_start_up_if_the_batch_is_open() -> None:
    loaded = config()
    assert missed_review(loaded, None, at(22, 40).astimezone(UTC))
    assert not missed_review(loaded, at(22, 30).astimezone(UTC), at(22, 40).astimezone(UTC))
    assert not missed_review(loaded, None, at(23, 10).astimezone(UTC))  # batch settled: too late
    assert not missed_review(loaded, None, at(21, 0).astimezone(UTC))   # not yet due


def test_daemon_reviews_at_start_up_after_missing_it(tmp_path: Path) -> None:
    seen: list[object] = []
    loaded = config()
    daemon = Daemon(loaded, tmp_path, clock=ManualClock(at(22, 45)), listeners=[seen.append], use_scheduler=False)
    daemon.start()
    try:
        wait_until(lambda: any(isinstance(s, ReviewNotice) for s in seen), "the catch-up review at start-up")
    finally:
        daemon.stop()


def test_cutoff_in_a_dst_zone_follows_the_wall_clock() -> None:
    # Europe/Berlin leaves summer time on 2026-10-25: the 23:00 cutoff is 22:00 UTC that night, 21:00 UTC before.
    before = next_cutoff(datetime(2026, 10, 24, 12, 0, tzinfo=BERLIN), datetime(2000, 1, 1, 23).time(), BERLIN)
    after = next_cutoff(datetime(2026, 10, 25, 12, 0, tzinfo=BERLIN), datetime(2000, 1, 1, 23).time(), BERLIN)
    assert before is not None and after is not None
    assert before.astimezone(UTC).hour == 21 and after.astimezone(UTC).hour == 22
    assert after.astimezone(UTC) - before.astimezone(UTC) == timedelta(hours=25)  # the night is an hour longer
    # A cutoff inside the spring-forward gap (02:30 on 2026-03-29 does not exist) lands on a real instant.
    gap = next_cutoff(datetime(2026, 3, 29, 0, 30, tzinfo=BERLIN), datetime(2000, 1, 1, 2, 30).time(), BERLIN)
    assert gap is not None and gap.astimezone(UTC) == datetime(2026, 3, 29, 1, 30, tzinfo=UTC)


def test_review_and_cutoff_fire_at_local_time_across_the_dst_change() -> None:
    loaded = parse_config(BASE_CONFIG.replace("Asia/Shanghai", "Europe/Berlin"))
    jobs = [j for j in plan(loaded) if j.name in ("review", "cutoff")]
    fired = fire_times(jobs, datetime(2026, 10, 24, 0, 0, tzinfo=BERLIN), datetime(2026, 10, 26, 0, 0, tzinfo=BERLIN))
    local = [(t.astimezone(BERLIN).strftime("%m-%d %H:%M"), name) for t, name in fired]
    assert local == [("10-24 22:30", "review"), ("10-24 23:00", "cutoff"),
                     ("10-25 22:30", "review"), ("10-25 23:00", "cutoff")]


def test_ack_while_the_daemon_runs_is_recorded_with_who_and_when(tmp_path: Path) -> None:
    loaded = config()
    state = tmp_path / "state"
    daemon = Daemon(loaded, state, use_scheduler=False)
    daemon.start()
    try:
        assert daemon.pipeline is not None
        daemon.inbox.put(daemon_batch(sale("000122", 12800, at(14, 3))))
        daemon.inbox.put(daemon_batch(sale("000123", 12800, at(14, 4))))
        wait_until(lambda: committed_alerts(daemon) >= 1, "the DUP-001 alert")
        reader = Journal(state / "settleguard.sqlite3")  # our own connection: the pipeline's is its own
        alert_id = reader.alerts()[0].id
        reader.close()
        proc = subprocess.run([sys.executable, "-m", "agent.cli", "ack", alert_id[:12], "--legit", "--by", "王店长",
                               "--note", "customer bought two", "--state", str(state)],
                              capture_output=True, text=True, timeout=30)
        assert proc.returncode == 0, proc.stderr
        assert "dismissed" in proc.stdout
    finally:
        daemon.stop()
    j = Journal(state / "settleguard.sqlite3")
    entries = j.alert_log(alert_id)
    j.close()
    # The socket's peer (this test's own user) is recorded, with the name given beside it.
    from agent.service.control import local_actor

    assert [(e["state"], e["actor"]) for e in entries] == [("open", "settleguard"),
                                                            ("dismissed", local_actor("王店长"))]
    assert entries[-1]["note"] == "customer bought two"


def daemon_batch(txn: object) -> object:
    from agent.messages import EventBatch

    return EventBatch("terminal", (txn,), datetime.now(UTC))  # type: ignore[arg-type]


def test_ack_without_a_daemon_writes_the_journal_directly(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    duplicate(h)
    alert_id = h.opened()[0].alert.id
    h.journal.close()
    cfg = tmp_path / "settleguard.toml"
    cfg.write_text(BASE_CONFIG, encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "agent.cli", "ack", alert_id, "--voided", "--by", "cashier",
                           "--state", str(tmp_path), "--config", str(cfg)], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert "voided" in proc.stdout


def test_an_escalated_finding_is_reminded_after_the_follow_up_days(tmp_path: Path) -> None:
    h = Harness(tmp_path, channels=("robot",))
    duplicate(h)
    h.clock.set(at(23, 0).astimezone(UTC))
    h.pipeline.process([Command("cutoff")])
    h.clock.set(at(23, 0, day=28).astimezone(UTC))
    h.pipeline.process([Command("reminders")])
    assert not [c for c in h.changes if isinstance(c, AlertChange) and c.notice == "reminder"]
    h.clock.set(at(23, 1, day=29).astimezone(UTC))
    h.pipeline.process([Command("reminders")])
    reminders = [c for c in h.changes if isinstance(c, AlertChange) and c.notice == "reminder"]
    assert len(reminders) == 1 and reminders[0].alert.state == "escalated"
