"""The event boundary (drivers/boundary.py) and the pipeline's per-item robustness, on a real SQLite file."""

from __future__ import annotations

import queue
import sqlite3
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from agent.messages import Command, EventBatch
from agent.rules.engine import RuleEngine
from agent.service.doctor import check_quarantine
from agent.service.metrics import read_journal, render
from agent.store.journal import Journal
from agent.store.queries import open_read_only
from agent.store.schema import MIGRATIONS, SCHEMA_VERSION
from drivers.boundary import MAX_AMOUNT_MINOR, admit, check_event
from drivers.events import ReceiptText, Settlement, Transaction
from drivers.protocols import build_decoder
from tests.helpers import SHANGHAI, Harness, sale

AT = datetime(2026, 11, 27, 14, 0, tzinfo=SHANGHAI)


def at(minute: int) -> datetime:
    return AT + timedelta(minutes=minute)


def bare(event: Any, **fields: Any) -> Any:
    """``event`` with fields set past its constructor's checks, as a buggy decoder could build it."""
    for name, value in fields.items():
        object.__setattr__(event, name, value)
    return event


# -- the limits -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(("fields", "reason"), [
    ({"amount_minor": 2**63}, "amount_minor: outside"),
    ({"amount_minor": MAX_AMOUNT_MINOR + 1}, "amount_minor: outside"),
    ({"amount_minor": True}, "amount_minor: not an integer"),
    ({"time": datetime(9999, 12, 31, 23, tzinfo=timezone(timedelta(hours=-5)))}, "time: year 9999"),
    ({"time": datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=8)))}, "time: year 1"),
    ({"time": datetime(2026, 1, 1)}, "time: no UTC offset"),
    ({"operator": "\ud800"}, "operator: not valid Unicode"),
    ({"voucher_no": "1" * 129}, "voucher_no: longer than 128"),
    ({"terminal_id": "15\x0021155"}, "terminal_id: contains NUL"),
    ({"rrn": 925498334778}, "rrn: not a string"),
    ({"kind": "gift"}, "kind: not one of"),
    ({"result": "maybe"}, "result: not approved"),
    ({"entry_mode": "telepathy"}, "entry_mode: not one of"),
    ({"currency": "yuan"}, "currency: not a three-letter"),
])
def test_a_transaction_outside_the_model_is_refused_with_a_reason(fields: dict[str, Any], reason: str) -> None:
    event, refused = admit(bare(sale("000001", 100, AT), **fields), "terminal")
    assert event is None and refused is not None
    assert refused.reason.startswith(reason), refused.reason
    assert refused.raw.startswith('{"type": "transaction"')
    refused.raw.encode("utf-8")  # always storable, whatever the event held


def test_settlements_and_receipts_have_limits_too() -> None:
    ok = Settlement(source="cn_ecr", time=AT, count=3, total_minor=-1200, currency="CNY", balanced=True)
    assert check_event(ok) is None
    assert check_event(bare(Settlement(source="x", time=AT), count=-1)) == "count: outside 0..10000000 (1 digits)"
    assert (check_event(bare(Settlement(source="x", time=AT), total_minor=10**16)) or "").startswith("total_minor")
    assert check_event(ReceiptText(source="escpos", time=AT, lines=("a",) * 2001)) is not None
    assert check_event(ReceiptText(source="escpos", time=AT, lines=("x" * 4097,))) is not None
    assert check_event(ReceiptText(source="escpos", time=AT, qr=("q",) * 33)) is not None
    assert check_event(ReceiptText(source="escpos", time=AT, lines=("好", "ok"), qr=("https://qr",))) is None


def test_an_amount_that_is_a_card_number_is_not_kept_in_clear_in_the_reason_or_the_raw_form() -> None:
    pan = 6225880137221231  # Luhn-valid, and above the money ceiling
    _, refused = admit(bare(sale("000001", 100, AT), amount_minor=pan), "terminal")
    assert refused is not None
    assert str(pan) not in refused.reason and str(pan) not in refused.raw
    assert "622588******1231" in refused.raw


def test_a_decoder_that_raises_is_rebuilt_and_its_input_quarantined_never_raised() -> None:
    decoder = build_decoder("jsonl", tz=SHANGHAI, source="terminal")
    good = sale("000001", 100, AT).to_dict()
    calls = {"n": 0}
    inner_feed = decoder.inner.feed

    def explode_once(data: bytes, received: datetime | None = None) -> list[Any]:
        calls["n"] += 1
        if calls["n"] == 1:
            raise MemoryError("a decoder bug meeting input nobody foresaw")
        return inner_feed(data, received)

    decoder.inner.feed = explode_once  # type: ignore[method-assign]
    import json
    assert decoder.feed(b'{"half": ', AT) == []
    [refused] = decoder.take_rejected()
    assert refused.stage == "decode" and "MemoryError" in refused.reason
    # The rebuilt decoder holds none of the poison: the next line decodes.
    events = decoder.feed((json.dumps(good) + "\n").encode(), AT)
    assert [e.voucher_no for e in events] == ["000001"]  # type: ignore[union-attr]
    assert decoder.stats.bad_frames == 1 and decoder.stats.counters["decoder_errors"] == 1


# -- the pipeline: one bad item costs only itself -------------------------------------------------------------
def test_bad_commands_and_bad_events_cost_only_themselves_in_one_drain(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.feed(sale("000122", 12800, at(3)), sale("000123", 12800, at(4)))  # DUP-001 opens
    [alert] = h.journal.alerts()
    replies: list[queue.Queue[Any]] = [queue.Queue() for _ in range(3)]
    poison = bare(sale("000125", 100, at(6)), amount_minor=2**63)
    h.clock.set(at(7))
    h.pipeline.process([
        EventBatch("terminal", (sale("000124", 500, at(5)),), at(5)),
        Command("reconfigure", {}, replies[0]),                                   # no configuration: KeyError
        EventBatch("terminal", (poison,), at(6)),
        # Fails half-way: the alert row is updated, then the log row's note cannot be encoded as UTF-8.
        Command("ack", {"id": alert.id, "answer": "legit", "note": "\ud800"}, replies[1]),
        EventBatch("terminal", (sale("000126", 700, at(7)),), at(7)),
        Command("ack", {"id": alert.id, "answer": "legit", "by": "店长", "note": "genuine"}, replies[2]),
    ])
    first, second, third = (r.get_nowait() for r in replies)
    assert first["ok"] is False and "KeyError" in first["error"]
    assert second["ok"] is False and "UnicodeEncodeError" in second["error"]
    assert third["ok"] is True and third["alert"]["state"] == "dismissed"
    vouchers = [r[0] for r in h.journal.conn.execute("SELECT voucher_no FROM transactions ORDER BY id")]
    assert vouchers == ["000122", "000123", "000124", "000126"]
    assert [q["stage"] for q in h.journal.quarantined()] == ["limits"]
    assert h.pipeline.counts["command_errors"] == 2 and h.pipeline.counts["quarantined"] == 1
    assert h.pipeline.journal_error is None  # nothing to retry: the bad items were answered, not held
    # The alert log records exactly one answer: the failed ack left no half-written row behind.
    assert [e["actor"] for e in h.journal.alert_log(alert.id)][1:] == ["店长"]


def test_an_event_that_breaks_a_rule_is_quarantined_and_its_batch_neighbours_kept(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    h = Harness(tmp_path)
    original = RuleEngine.evaluate

    def evaluate(self: RuleEngine, obs: Any, now: datetime) -> Any:
        if obs.view.txn.voucher_no == "000002":
            raise ZeroDivisionError("a rule's arithmetic met a value it never saw")
        return original(self, obs, now)

    # On the class: the pipeline rebuilds its engine after a failed item.
    monkeypatch.setattr(RuleEngine, "evaluate", evaluate)
    receipt = ReceiptText(source="escpos", time=at(2), lines=("凭证号 000002",))
    h.clock.set(at(3))
    h.pipeline.process([EventBatch("printer", (sale("000001", 100, at(1)), receipt, sale("000002", 200, at(2)),
                                                sale("000003", 300, at(3))), at(3))])
    vouchers = [r[0] for r in h.journal.conn.execute("SELECT voucher_no FROM transactions ORDER BY id")]
    assert vouchers == ["000001", "000003"]
    kept = h.journal.quarantined()
    assert {q["stage"] for q in kept} == {"pipeline"} and len(kept) == 2  # the slip goes with its transaction
    assert all("ZeroDivisionError" in q["reason"] for q in kept)


# -- the quarantine table ------------------------------------------------------------------------------------
def test_a_journal_from_before_the_quarantine_is_migrated_with_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "settleguard.sqlite3"
    raw = sqlite3.connect(path)
    raw.executescript(MIGRATIONS[1])
    raw.execute("PRAGMA user_version=1")
    raw.execute("INSERT INTO transactions(key, kind, result, amount_minor, time_utc, data, first_seen, last_seen)"
                " VALUES('n:1', 'sale', 'approved', 100, '2026-11-27T06:00:00.000000Z', '{}',"
                " '2026-11-27T06:00:00.000000Z', '2026-11-27T06:00:00.000000Z')")
    raw.commit()
    raw.close()
    with open_read_only(path) as reader:  # doctor on a journal the daemon has not opened since the upgrade
        assert reader.quarantine_total() == 0 and reader.quarantined() == []
        assert check_quarantine(reader).status == "ok"
    journal = Journal(path)
    assert journal.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION >= 2
    assert journal.count_transactions() == 1
    indexes = {r[0] for r in journal.conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    assert {"quarantine_received", "transactions_card_tail"} <= indexes
    with journal.transaction():
        journal.quarantine(received=datetime(2026, 11, 27, 6, 1, tzinfo=UTC), source="terminal", stage="limits",
                           reason="amount_minor: outside 0..1000000000000 (19 digits)", raw="{}")
    journal.close()
    with open_read_only(path) as reader:
        check = check_quarantine(reader)
    assert check.status == "warn" and "1 input(s) refused" in check.detail and "terminal (limits)" in check.detail
    sample = read_journal(path, datetime(2026, 11, 27, 7, tzinfo=UTC))
    assert sample.quarantined == 1
    from agent.service.metrics import Snapshot
    assert "settleguard_quarantined_total 1\n" in render(Snapshot((), sample, {}))


def test_the_quarantine_keeps_the_newest_rows_and_counts_them_all(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "settleguard.sqlite3", quarantine_cap=500)
    with journal.transaction():
        for i in range(2500):
            journal.quarantine(received=AT, source="terminal", stage="decode", reason=f"line {i}", raw="x")
    assert journal.quarantine_total() == 2500
    rows = journal.conn.execute("SELECT COUNT(*) FROM quarantine").fetchone()[0]
    assert 500 <= rows < 1500 and journal.quarantined(limit=1)[0]["reason"] == "line 2499"
    journal.close()


# -- the binary protocols: a frame's failure is that frame's ------------------------------------------------
def test_cn_ecr_an_over_long_amount_and_a_frame_that_breaks_the_interpreter_cost_only_themselves(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from agent.sim import wire_cn_ecr
    from drivers.protocols.cn_ecr.interpret import CnEcrDecoder

    when = datetime(2026, 11, 27, 14, 0, tzinfo=SHANGHAI)
    frames = [wire_cn_ecr.encode(sale(f"00000{i}", amount, when).with_(trace_no=f"00000{i}"))
              for i, amount in ((1, 100), (2, 10**20), (3, 300), (4, 400))]
    original = CnEcrDecoder._event

    def event(self: CnEcrDecoder, packet_type: Any, top: Any, inner: Any, received: Any) -> Any:
        if inner.get(0xDF10) == bytes.fromhex("000003"):
            raise IndexError("a field layout nobody foresaw")
        return original(self, packet_type, top, inner, received)

    monkeypatch.setattr(CnEcrDecoder, "_event", event)
    decoder = build_decoder("cn_ecr", tz=SHANGHAI, source="ecr")
    events = decoder.feed(b"".join(frames), when)
    assert [e.voucher_no for e in events] == ["000001", "000004"]  # type: ignore[union-attr]
    [refused] = decoder.take_rejected()
    assert refused.stage == "decode" and refused.reason.startswith("frame contents not understood")
    assert "IndexError" in refused.reason and refused.raw  # the frame body as hex
    # The 22-digit amount never becomes an event: the decoder's own digit cap refuses it, counted.
    assert decoder.stats.counters["no_amount"] == 1


def test_zvt_an_apdu_that_breaks_the_interpreter_costs_only_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    from agent.sim import wire_zvt
    from drivers.protocols.zvt.interpret import ZvtDecoder

    when = datetime(2026, 11, 27, 14, 0, tzinfo=SHANGHAI)
    txns = [sale(f"00000{i}", 100 * i, when).with_(receipt_no=f"000{i}") for i in (1, 2, 3)]
    original = ZvtDecoder._status
    calls = {"n": 0}

    def status(self: ZvtDecoder, data: bytes, received: Any, out: list[Any]) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            raise UnicodeDecodeError("cp437", b"\xff", 0, 1, "a text field in an unexpected code page")
        original(self, data, received, out)

    monkeypatch.setattr(ZvtDecoder, "_status", status)
    decoder = build_decoder("zvt", tz=SHANGHAI, source="zvt", options={"transport": "serial"})
    events = decoder.feed(b"".join(wire_zvt.encode(t) for t in txns), when) + decoder.flush(when)
    amounts = [e.amount_minor for e in events if isinstance(e, Transaction)]
    assert amounts == [100, 300]
    [refused] = decoder.take_rejected()
    assert refused.stage == "decode" and "UnicodeDecodeError" in refused.reason
    assert decoder.stats.bad_frames >= 1
