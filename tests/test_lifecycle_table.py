"""The alert lifecycle table, every cell; and the deliberate change: after settlement a refund, not a void."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

from agent.alerts.book import AnswerRefused
from agent.alerts.lifecycle import (
    ACTIVE_STATES,
    AWAITING_VOID,
    FINAL_STATES,
    RESOLVED_STATES,
    TRANSITIONS,
    WHO,
    Actor,
    AlertState,
    Cause,
    IllegalTransition,
    NoticeKind,
    allows,
    announces,
    batch_closed_cause,
    next_state,
    states_allowing,
    wire_cause,
)
from agent.messages import AlertChange, Command
from tests.helpers import BASE_CONFIG, SHANGHAI, Harness, sale

OPEN, VOIDED, DISMISSED, ESCALATED, EXPIRED = (AlertState.OPEN, AlertState.VOIDED, AlertState.DISMISSED,
                                                AlertState.ESCALATED, AlertState.EXPIRED)
VOID_PRINTED, VOID_CLAIMED, REFUNDED = AlertState.VOID_PRINTED, AlertState.VOID_CLAIMED, AlertState.REFUNDED
# Written out by hand, cell by cell, so a change to the table in the code has to be made here too.
EXPECTED: dict[tuple[AlertState, Cause], AlertState | None] = {
    (OPEN, Cause.WIRE_VOID): VOIDED, (ESCALATED, Cause.WIRE_VOID): None,
    (OPEN, Cause.WIRE_REVERSAL): VOIDED, (ESCALATED, Cause.WIRE_REVERSAL): VOIDED,
    (OPEN, Cause.WIRE_REFUND): REFUNDED, (ESCALATED, Cause.WIRE_REFUND): REFUNDED,
    (OPEN, Cause.STAFF_VOIDED): VOIDED, (ESCALATED, Cause.STAFF_VOIDED): None,
    (OPEN, Cause.STAFF_VOID_CLAIMED): VOID_CLAIMED, (ESCALATED, Cause.STAFF_VOID_CLAIMED): None,
    (OPEN, Cause.STAFF_REFUNDED): None, (ESCALATED, Cause.STAFF_REFUNDED): REFUNDED,
    (OPEN, Cause.STAFF_APP_REFUNDED): REFUNDED, (ESCALATED, Cause.STAFF_APP_REFUNDED): REFUNDED,
    (VOID_PRINTED, Cause.STAFF_APP_REFUNDED): REFUNDED, (VOID_CLAIMED, Cause.STAFF_APP_REFUNDED): REFUNDED,
    (OPEN, Cause.STAFF_LEGIT): DISMISSED, (ESCALATED, Cause.STAFF_LEGIT): DISMISSED,
    (OPEN, Cause.SETTLEMENT): ESCALATED, (ESCALATED, Cause.SETTLEMENT): None,
    (OPEN, Cause.CUTOFF): ESCALATED, (ESCALATED, Cause.CUTOFF): None,
    (OPEN, Cause.EXPIRY): EXPIRED, (ESCALATED, Cause.EXPIRY): None,
    (OPEN, Cause.PRINTED_VOID): VOID_PRINTED, (ESCALATED, Cause.PRINTED_VOID): None,
    # A printed, unconfirmed void: as from open, except that another slip changes nothing.
    (VOID_PRINTED, Cause.WIRE_VOID): VOIDED, (VOID_PRINTED, Cause.WIRE_REVERSAL): VOIDED,
    (VOID_PRINTED, Cause.WIRE_REFUND): REFUNDED, (VOID_PRINTED, Cause.PRINTED_VOID): None,
    (VOID_PRINTED, Cause.STAFF_VOIDED): VOIDED, (VOID_PRINTED, Cause.STAFF_VOID_CLAIMED): VOID_CLAIMED,
    (VOID_PRINTED, Cause.STAFF_REFUNDED): None, (VOID_PRINTED, Cause.STAFF_LEGIT): DISMISSED,
    (VOID_PRINTED, Cause.SETTLEMENT): ESCALATED, (VOID_PRINTED, Cause.CUTOFF): ESCALATED,
    (VOID_PRINTED, Cause.EXPIRY): EXPIRED,
    # A person's claimed void: the terminal confirms it; a slip or a second claim adds nothing.
    (VOID_CLAIMED, Cause.WIRE_VOID): VOIDED, (VOID_CLAIMED, Cause.WIRE_REVERSAL): VOIDED,
    (VOID_CLAIMED, Cause.WIRE_REFUND): REFUNDED, (VOID_CLAIMED, Cause.PRINTED_VOID): None,
    (VOID_CLAIMED, Cause.STAFF_VOIDED): VOIDED, (VOID_CLAIMED, Cause.STAFF_VOID_CLAIMED): None,
    (VOID_CLAIMED, Cause.STAFF_REFUNDED): None, (VOID_CLAIMED, Cause.STAFF_LEGIT): DISMISSED,
    (VOID_CLAIMED, Cause.SETTLEMENT): ESCALATED, (VOID_CLAIMED, Cause.CUTOFF): ESCALATED,
    (VOID_CLAIMED, Cause.EXPIRY): EXPIRED,
    **{(state, cause): None for state in (VOIDED, REFUNDED, DISMISSED, EXPIRED) for cause in Cause},
}
CELLS = [(state, cause) for state in AlertState for cause in Cause]


def test_the_expected_table_covers_every_state_and_cause() -> None:
    assert set(EXPECTED) == set(CELLS)
    assert set(TRANSITIONS) == set(AlertState)
    assert set(WHO) == set(Cause)


@pytest.mark.parametrize(("state", "cause"), CELLS, ids=[f"{s}-{c}" for s, c in CELLS])
def test_every_cell_of_the_table(state: AlertState, cause: Cause) -> None:
    expected = EXPECTED[(state, cause)]
    assert allows(state, cause) is (expected is not None)
    if expected is not None:
        assert next_state(state, cause) is expected
        assert state in states_allowing(cause)
        return
    with pytest.raises(IllegalTransition) as refused:
        next_state(state, cause, alert_id="01JX")
    assert refused.value.state is state and refused.value.cause is cause
    assert "alert 01JX" in str(refused.value)
    assert state not in states_allowing(cause)


def test_who_may_cause_what() -> None:
    assert {c for c, who in WHO.items() if who is Actor.TERMINAL} == {
        Cause.WIRE_VOID, Cause.WIRE_REVERSAL, Cause.WIRE_REFUND}
    assert {c for c, who in WHO.items() if who is Actor.PRINTER} == {Cause.PRINTED_VOID}
    assert {c for c, who in WHO.items() if who is Actor.STAFF} == {
        Cause.STAFF_VOIDED, Cause.STAFF_VOID_CLAIMED, Cause.STAFF_REFUNDED, Cause.STAFF_APP_REFUNDED,
        Cause.STAFF_LEGIT}
    assert {c for c, who in WHO.items() if who is Actor.SETTLEGUARD} == {
        Cause.SETTLEMENT, Cause.CUTOFF, Cause.EXPIRY}


def test_the_state_sets_follow_from_the_table() -> None:
    assert {OPEN, ESCALATED, VOID_PRINTED, VOID_CLAIMED} == ACTIVE_STATES
    assert {VOIDED, REFUNDED, DISMISSED, EXPIRED} == FINAL_STATES
    assert {VOIDED, REFUNDED, DISMISSED} == RESOLVED_STATES
    assert {OPEN, VOID_PRINTED, VOID_CLAIMED} == AWAITING_VOID
    assert [s.value for s in AlertState] == ["open", "voided", "dismissed", "escalated", "expired",
                                              "void_printed", "void_claimed", "refunded"]  # the JSON's


def test_refusals_say_why_and_what_to_do_instead() -> None:
    with pytest.raises(IllegalTransition, match="already voided"):
        next_state(VOIDED, Cause.STAFF_LEGIT)
    with pytest.raises(IllegalTransition, match="refund it on the terminal") as refused:
        next_state(ESCALATED, Cause.STAFF_VOIDED)
    assert "answer refunded" in str(refused.value)


def test_each_state_announces_its_own_notice_and_causes_come_from_the_wire_and_the_batch() -> None:
    assert [announces(s) for s in AlertState] == [
        NoticeKind.OPENED, NoticeKind.VOIDED, NoticeKind.DISMISSED, NoticeKind.ESCALATED, NoticeKind.EXPIRED,
        NoticeKind.VOID_PRINTED, NoticeKind.VOID_CLAIMED, NoticeKind.REFUNDED]
    assert wire_cause("void") is Cause.WIRE_VOID
    assert wire_cause("reversal") is Cause.WIRE_REVERSAL
    assert wire_cause("refund") is Cause.WIRE_REFUND
    assert batch_closed_cause("void", by_cutoff=True) is Cause.CUTOFF
    assert batch_closed_cause("void", by_cutoff=False) is Cause.SETTLEMENT
    assert batch_closed_cause("check", by_cutoff=True) is batch_closed_cause(None, by_cutoff=False) is Cause.EXPIRY


# -- end to end: the pipeline and ack ---------------------------------------------------------------

def at(hh: int, mm: int, day: int = 27) -> datetime:
    return datetime(2026, 11, day, hh, mm, tzinfo=SHANGHAI)


def escalated(tmp_path: Path) -> tuple[Harness, str]:
    """A duplicate charge nobody voided before the 23:00 cutoff: escalated to refund."""
    h = Harness(tmp_path)
    h.feed(sale("000122", 12800, at(14, 3)), sale("000123", 12800, at(14, 4)))
    h.clock.set(at(23, 0))
    h.pipeline.process([Command("cutoff")])
    alert = h.journal.alerts()[0]
    assert alert.state == AlertState.ESCALATED
    return h, alert.id


def test_staff_answering_voided_after_settlement_is_told_to_refund(tmp_path: Path) -> None:
    h, alert_id = escalated(tmp_path)
    reply = h.command("ack", id=alert_id, answer="voided", by="cashier")
    assert reply["ok"] is False and "refund" in reply["error"]
    assert h.journal.alerts()[0].state == AlertState.ESCALATED
    assert [e["state"] for e in h.journal.alert_log(alert_id)] == ["open", "escalated"]  # nothing recorded


def test_a_refund_on_the_wire_resolves_an_escalated_alert_and_a_void_does_not(tmp_path: Path) -> None:
    h, alert_id = escalated(tmp_path)
    h.clock.set(at(10, 0, day=28))
    # Tomorrow's batch reuses voucher numbers: a void of "000123" there is some other charge.
    h.feed(sale("000007", 12800, at(10, 0, day=28), kind="void", original="000123", batch="000129"))
    assert h.journal.alerts()[0].state == AlertState.ESCALATED
    h.feed(sale("000008", 12800, at(10, 5, day=28), kind="refund", original="000123", batch="000129"))
    alert = h.journal.alerts()[0]
    assert alert.state == AlertState.REFUNDED and alert.revision == 3
    assert [(e["state"], e["actor"]) for e in h.journal.alert_log(alert_id)][-1] == ("refunded", "terminal")
    assert [c.notice for c in h.changes if isinstance(c, AlertChange)] == ["opened", "escalated", "refunded"]
    assert h.pipeline.counts["alerts_resolved"] == 1


def test_staff_answering_refunded_resolves_an_escalated_alert(tmp_path: Path) -> None:
    h, alert_id = escalated(tmp_path)
    reply = h.command("ack", id=alert_id, answer="refunded", by="王店长", note="refunded at the acquirer")
    assert reply["ok"] is True and reply["alert"]["state"] == "refunded"
    assert reply["alert"]["answer"] == {"answer": "refunded", "by": "王店长", "role": "manager",
                                        "note": "refunded at the acquirer",
                                        "at": h.clock.now().astimezone(SHANGHAI).isoformat()}
    rows = h.journal.conn.execute("SELECT kind FROM outbox WHERE alert_id=? ORDER BY id", (alert_id,)).fetchall()
    assert [r[0] for r in rows] == ["opened", "escalated", "refunded"]


def test_an_answer_the_table_does_not_know_and_an_unknown_alert_are_refused(tmp_path: Path) -> None:
    h, alert_id = escalated(tmp_path)
    assert h.command("ack", id=alert_id, answer="lost")["ok"] is False
    assert h.command("ack", id="NOPE", answer="legit", note="fine") == {
        "ok": False, "error": "no alert NOPE", "reason": "not_found"}


def test_staff_may_give_only_the_staff_answers(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.feed(sale("000122", 12800, at(14, 3)), sale("000123", 12800, at(14, 4)))
    alert_id = h.opened()[0].alert.id
    for answer in ("wire_refund", "cutoff", "expiry", "staff_legit"):
        with h.journal.transaction(), pytest.raises(AnswerRefused, match="answer must be one of"):
            h.pipeline.alerts.answer(alert_id, answer, h.clock.now(), by="cashier", note="x")
    assert h.journal.alerts()[0].state == AlertState.OPEN


def test_offline_ack_voided_on_an_escalated_alert_fails_with_the_refund_advice(tmp_path: Path) -> None:
    h, alert_id = escalated(tmp_path)
    h.journal.close()
    cfg = tmp_path / "settleguard.toml"
    cfg.write_text(BASE_CONFIG, encoding="utf-8")
    base = [sys.executable, "-m", "agent.cli", "ack", alert_id, "--by", "cashier", "--state", str(tmp_path),
            "--config", str(cfg)]
    refused = subprocess.run([*base, "--voided"], capture_output=True, text=True, timeout=30)
    assert refused.returncode != 0 and "refund" in refused.stderr
    done = subprocess.run([*base, "--refunded"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert "is now refunded" in done.stdout
    from agent.store.journal import Journal

    j = Journal(tmp_path / "settleguard.sqlite3")
    try:
        log = [(e["state"], e["actor"]) for e in j.alert_log(alert_id)]
    finally:
        j.close()
    from agent.service.control import local_actor

    assert log == [("open", "settleguard"), ("escalated", "settleguard"), ("refunded", local_actor("cashier"))]
