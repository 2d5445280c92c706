"""Issue 15: every alert has a short code people can read off a phone and type; answers carry who and why."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest

from agent.alerts.book import AmbiguousAlert, AnswerRefused, NoSuchAlert
from agent.alerts.lifecycle import AlertState, IllegalTransition
from agent.messages import Command
from agent.model import CODE_ALPHABET, CODE_LENGTH
from tests.helpers import SHANGHAI, Harness, sale

T0 = datetime(2026, 11, 27, 14, 0, tzinfo=SHANGHAI)


def duplicates(h: Harness, n: int) -> list[str]:
    """n DUP-001 alerts (each a pair of equal charges on its own card); their ids, oldest first."""
    for i in range(n):
        card = f"622576******{1000 + i:04d}"
        at = T0 + timedelta(minutes=3 * i)
        h.feed(sale(f"{2 * i:06d}", 1000 + i, at, card=card), sale(f"{2 * i + 1:06d}", 1000 + i,
                                                                  at + timedelta(seconds=30), card=card))
    return [a.id for a in h.journal.alerts(limit=None)]


def test_codes_are_short_unambiguous_unique_among_active_alerts_and_stable(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    ids = duplicates(h, 40)
    alerts = h.journal.alerts(limit=None)
    codes = [a.code for a in alerts]
    assert len(ids) == 40 and len(set(codes)) == 40
    assert all(len(c) == CODE_LENGTH and set(c) <= set(CODE_ALPHABET) for c in codes)
    assert not set(CODE_ALPHABET) & set("0O1IL2Z5S8BUV")   # nothing a tired eye confuses
    first = alerts[0]
    reply = h.command("ack", id=first.code, answer="legit", by="小王", note="客人确实买了两份")
    assert reply["ok"] is True and reply["alert"]["code"] == first.code     # the same code across revisions
    stored = h.journal.get_alert(first.id)
    assert stored is not None and stored.code == first.code and stored.state == AlertState.DISMISSED


def test_find_takes_a_code_in_any_case_a_full_id_or_a_unique_prefix(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    (alert_id,) = duplicates(h, 1)
    alert = h.journal.get_alert(alert_id)
    assert alert is not None
    book = h.pipeline.alerts
    assert book.find(alert.code).id == alert_id
    assert book.find(alert.code.lower()).id == alert_id
    assert book.find(alert_id).id == alert_id
    assert book.find(alert_id[:16].lower()).id == alert_id
    with pytest.raises(NoSuchAlert):
        book.find("QQQQ" if alert.code != "QQQQ" else "WWWW")


def test_an_ambiguous_prefix_lists_every_candidate_with_its_code(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    ids = duplicates(h, 3)
    # Alerts minutes apart share the high part of their ids' time field.
    common = next(ids[0][:n] for n in range(26, 0, -1) if all(i.startswith(ids[0][:n]) for i in ids))
    assert len(common) >= 4
    with pytest.raises(AmbiguousAlert) as ambiguous:
        h.pipeline.alerts.find(common)
    for a in h.journal.alerts():
        assert a.code in str(ambiguous.value) and a.id in str(ambiguous.value)
    reply = h.command("ack", id=common, answer="voided", by="小王")
    assert reply == {"ok": False, "error": str(ambiguous.value), "reason": "ambiguous"}
    assert {a.state for a in h.journal.alerts()} == {AlertState.OPEN}


def test_a_code_freed_by_a_finished_alert_never_names_it_while_another_active_alert_has_it(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    first, second = duplicates(h, 2)
    a = h.journal.get_alert(first)
    assert a is not None
    h.command("ack", id=a.code, answer="legit", by="店长", note="genuine")
    # Hand the finished alert's code to the active one (as a later alert may receive it): the active wins.
    h.journal.conn.execute("UPDATE alerts SET code=? WHERE id=?", (a.code, second))
    assert h.pipeline.alerts.find(a.code).id == second


def test_legit_needs_a_reason_and_a_manager_when_configured(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    (alert_id,) = duplicates(h, 1)
    book = h.pipeline.alerts
    for note in (None, "", "   "):
        with h.journal.transaction(), pytest.raises(AnswerRefused, match="reason"):
            book.answer(alert_id, "legit", h.clock.now(), by="小王", note=note, role="cashier")
    book.legit_needs = "manager"
    with h.journal.transaction(), pytest.raises(AnswerRefused, match="manager"):
        book.answer(alert_id, "legit", h.clock.now(), by="小王", note="客人确实买了两份", role="cashier")
    with h.journal.transaction():
        done = book.answer(alert_id, "legit", h.clock.now(), by="王店长", note="客人确实买了两份", role="manager")
    assert done.state == AlertState.DISMISSED
    assert done.answer == {"answer": "legit", "by": "王店长", "role": "manager", "note": "客人确实买了两份",
                           "at": h.clock.now().astimezone(SHANGHAI).isoformat()}
    # The answer belongs to its revision only: the alert log keeps who and why, the next revision none.
    assert h.journal.alert_log(alert_id)[-1] == {"revision": 2, "state": "dismissed", "at": h.journal.alert_log(
        alert_id)[-1]["at"], "actor": "王店长", "note": "客人确实买了两份"}


def test_refunded_is_only_after_settlement_and_needs_a_manager_when_legit_does(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    (alert_id,) = duplicates(h, 1)
    book = h.pipeline.alerts
    with h.journal.transaction(), pytest.raises(IllegalTransition, match="answer voided"):
        book.answer(alert_id, "refunded", h.clock.now(), by="小王", note=None, role="manager")
    h.clock.set(T0.replace(hour=23))
    h.pipeline.process([Command("cutoff")])
    book.legit_needs = "manager"
    with h.journal.transaction(), pytest.raises(AnswerRefused, match="manager"):
        book.answer(alert_id, "refunded", h.clock.now(), by="小王", note=None, role="cashier")
    with h.journal.transaction():
        assert book.answer(alert_id, "refunded", h.clock.now(), by="李店长", note=None,
                           role="manager").state == AlertState.REFUNDED
