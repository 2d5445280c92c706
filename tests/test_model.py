"""The event JSON is a public contract (ARCHITECTURE.md, "Event JSON"): schema, key order, nulls never omitted."""

from __future__ import annotations

import json
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from agent.model import Alert, Suggestion, identity_key
from drivers.events import EventError, Settlement, Transaction, event_from_json, event_to_json

# The example line of ARCHITECTURE.md, "Event JSON", with one value picked where the doc lists the alternatives.
EVENT_JSON_EXAMPLE = (
    '{"type": "transaction", "source": "cn_ecr", "kind": "void", "result": "approved", '
    '"terminal_id": "15221155", "merchant_id": "104152253311021", "batch_no": "130911", '
    '"voucher_no": "000006", "receipt_no": null, "trace_no": "000066", "rrn": "925498334778", '
    '"auth_code": "123456", "original_voucher_no": "000005", "original_rrn": null, "amount_minor": 20, '
    '"currency": "CNY", "card": "622576******6691", "card_type": "UnionPay", "entry_mode": "chip", '
    '"time": "2026-09-11T15:43:52+08:00", "operator": "01"}'
)
SETTLEMENT_EXAMPLE = (
    '{"type": "settlement", "source": "cn_ecr", "terminal_id": "15221155", "merchant_id": "104152253311021", '
    '"batch_no": "130911", "time": "2026-09-11T23:00:05+08:00", "count": 42, "total_minor": 1234500, '
    '"currency": "CNY", "balanced": true}'
)


def test_design_example_line_round_trips_exactly() -> None:
    assert event_to_json(event_from_json(EVENT_JSON_EXAMPLE)) == EVENT_JSON_EXAMPLE


def test_settlement_example_round_trips_exactly() -> None:
    assert event_to_json(event_from_json(SETTLEMENT_EXAMPLE)) == SETTLEMENT_EXAMPLE


def test_absent_values_are_null_never_omitted() -> None:
    txn = Transaction(source="jsonl", kind="sale", result="approved", amount_minor=100, time=None)
    obj = json.loads(event_to_json(txn))
    assert next(iter(obj)) == "type"
    assert len(obj) == 21 and obj["rrn"] is None and obj["time"] is None


@pytest.mark.parametrize("bad, message", [
    ('"amount_minor": 20,', '"amount_minor": 20.5,'),
    ('"amount_minor": 20,', '"amount_minor": -20,'),
    ('"kind": "void"', '"kind": "chargeback"'),
    ('"time": "2026-09-11T15:43:52+08:00"', '"time": "2026-09-11T15:43:52"'),
    ('"operator": "01"}', '"operator": "01", "pan": "6225760000006691"}'),
])
def test_schema_violations_are_refused(bad: str, message: str) -> None:
    with pytest.raises(EventError):
        event_from_json(EVENT_JSON_EXAMPLE.replace(bad, message))


def test_money_is_integer_minor_units_only() -> None:
    with pytest.raises(EventError):
        Transaction(source="x", kind="sale", result="approved", amount_minor=12.8, time=None)  # type: ignore[arg-type]


def test_identity_key_prefers_batch_and_voucher_then_receipt_then_rrn() -> None:
    t = event_from_json(EVENT_JSON_EXAMPLE)
    assert isinstance(t, Transaction)
    assert identity_key(t) == "v:15221155:130911:000006"
    assert identity_key(t.with_(batch_no=None, receipt_no="0042")) == "r:15221155:0042"
    assert identity_key(t.with_(batch_no=None)) == "n:925498334778"
    assert identity_key(t.with_(batch_no=None, rrn=None)) is None


def test_alert_json_follows_design_shape() -> None:
    t = event_from_json(EVENT_JSON_EXAMPLE)
    assert isinstance(t, Transaction)
    now = datetime(2026, 11, 27, 14, 5, tzinfo=ZoneInfo("Asia/Shanghai"))
    alert = Alert(id="01JX", revision=1, rule="DUP-001", rule_version="1", severity="high", state="open",
                  reason="r", reason_zh="中", evidence={"value": 95, "threshold": 600}, transactions=(t,),
                  suggestion=Suggestion("void", "000006", 20, "撤销", "void", now), created=now, updated=now)
    d = alert.to_dict()
    assert list(d)[:9] == ["type", "id", "code", "revision", "rule", "rule_version", "severity", "certainty",
                           "state"]
    assert d["transactions"][0] == json.loads(EVENT_JSON_EXAMPLE)
    assert Alert.from_dict(d).to_dict() == d


def test_settlement_requires_aware_time() -> None:
    with pytest.raises(EventError):
        Settlement(source="x", time=datetime(2026, 1, 1))


@pytest.mark.parametrize("text", ["INF", "-Infinity", "NaN", "sNaN"])
def test_an_amount_that_is_not_a_number_is_a_clear_error_not_a_crash(text: str) -> None:
    """Decimal reads these, and int() of them raised OverflowError/ValueError past the config's checks."""
    from agent.units import UnitError, parse_money

    with pytest.raises(UnitError, match="not an amount"):
        parse_money(text)
