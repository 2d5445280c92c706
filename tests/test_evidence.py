"""The evidence bundle's record of messages comes from the store: every channel, in the order written."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from agent.messages import AlertChange, Command
from agent.store.schema import utc_text
from tests.helpers import SHANGHAI, Harness, sale


def at(hh: int, mm: int) -> datetime:
    return datetime(2026, 11, 27, hh, mm, tzinfo=SHANGHAI)


CUTOFF = "2026-11-27T15:00:00.000000Z"


def test_the_bundle_lists_the_messages_written_for_its_alert_and_no_other(tmp_path: Path) -> None:
    h = Harness(tmp_path, channels=("hook", "robot"))
    h.pipeline.alerts.evidence_dir = tmp_path / "evidence"
    h.feed(sale("000122", 12800, at(14, 3)), sale("000123", 12800, at(14, 4)))
    h.feed(sale("000300", 4200, at(15, 0), card="436742******1234"),
           sale("000301", 4200, at(15, 1), card="436742******1234"))
    h.clock.set(at(23, 0).astimezone(UTC))
    h.pipeline.process([Command("cutoff")])
    escalated = [c.alert for c in h.changes if isinstance(c, AlertChange) and c.notice == "escalated"]
    assert len(escalated) == 2
    for alert in escalated:
        evidence = json.loads((Path(alert.evidence["bundle"]) / "evidence.json").read_text(encoding="utf-8"))
        assert [(m["channel"], m["kind"], m["state"], m["attempts"], m["last_error"])
                for m in evidence["messages"]] == [("hook", "opened", "pending", 0, None),
                                                   ("robot", "opened", "pending", 0, None),
                                                   ("hook", "escalated", "pending", 0, None),
                                                   ("robot", "escalated", "pending", 0, None)]
        opened = utc_text(alert.created)
        assert [m["created"] for m in evidence["messages"]] == [opened, opened, CUTOFF, CUTOFF]
