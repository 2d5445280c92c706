"""Issue 18: a slip seen but not understood says so — counted per template and field, named by doctor (with a
card-safe excerpt and the missing field), in the metrics, and told once to the installer's channel.

Slips are ReceiptText events carrying the decoder's verdict (``unread``, ``unread_template``,
``unread_field``), fed through the real pipeline on a real journal (tests/helpers.py Harness).
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from agent.messages import EventBatch
from agent.service.doctor import failed, run_checks
from agent.service.metrics import Snapshot, read_journal, render
from agent.store.queries import open_read_only
from agent.store.schema import journal_path
from drivers.events import ReceiptText, Transaction
from tests.helpers import BASE_CONFIG, SHANGHAI, Harness, config, sale

ROBOT = '\n[[channel]]\nname = "installer"\ntype = "wecom"\nkey = "k-1"\nurl = "http://127.0.0.1:9/send"\n'
PRINTER = '\n[[source]]\nname = "printer"\nprotocol = "escpos"\nfile = "/dev/null"\n'
PAN = "6225760012345679"   # Luhn-valid: must never reach doctor, metrics or a message whole
START = datetime(2026, 11, 25, 10, 0, tzinfo=SHANGHAI)


def slip(n: int, *, unread: str = "no_template", template: str | None = None, field: str | None = None) -> ReceiptText:
    """A 签购单 in a layout nobody wrote a template for (the amount after a currency code and a colon)."""
    return ReceiptText(source="escpos", time=None, lines=(
        "银联POS签购单", f"商户名称：好味小馆 凭证号 {n:06d}", f"卡号：{PAN}", "金额 RMB: 128.00", "交易类型：消费"),
        unread=unread, unread_template=template, unread_field=field)


def device_rows(state: Path) -> list[dict[str, Any]]:
    with open_read_only(journal_path(state)) as reader:
        return [json.loads(r["payload"]) for r in reader.outbox_rows("installer") if r["kind"] == "device"]


def harness(tmp_path: Path) -> Harness:
    text = BASE_CONFIG + ROBOT + PRINTER
    (tmp_path / "settleguard.toml").write_text(text, encoding="utf-8")
    return Harness(tmp_path, config(ROBOT + PRINTER), channels=("installer",), start=START)


def test_a_stream_of_slips_in_an_unknown_layout_is_named_by_doctor_and_told_once(tmp_path: Path) -> None:
    h = harness(tmp_path)
    for n in range(1, 8):
        h.clock.advance(600)
        h.feed(slip(n), source="printer")
    for n in range(8, 11):
        h.clock.advance(600)
        h.feed(slip(n, unread="missing_field", template="cn_pos_slip", field="amount_minor"), source="printer")
    h.feed(sale("000900", 4200, h.clock.now()))            # an understood transaction changes nothing here

    rows = device_rows(tmp_path)
    assert [(r["problem"], r["reason"], r["template"], r["field"], r["count"]) for r in rows] == [
        ("unread_receipt", "no_template", None, None, 1),
        ("unread_receipt", "missing_field", "cn_pos_slip", "amount_minor", 1)]
    assert "没有模板能读懂" in rows[0]["lines"][0] and "amount_minor" in rows[1]["lines"][0]
    assert h.pipeline.counts["unread_receipts"] == 10

    checks = run_checks(tmp_path / "settleguard.toml", tmp_path, clock=h.clock)
    named = {c.name: c for c in failed(checks)}
    layout, template = named["receipt layout"], named["template cn_pos_slip"]
    assert "7 slip(s) from printer" in layout.detail and "template suggest" in (layout.fix or "")
    assert "misses the required field amount_minor" in template.detail and "3 slip(s)" in template.detail
    assert "金额 RMB: 128.00" in layout.detail                  # the excerpt shows what the layout looks like
    assert "622576******5679" in layout.detail

    metrics = render(Snapshot(sources=(), journal=read_journal(journal_path(tmp_path), h.clock.now()),
                              delivery_failures={}))
    assert 'settleguard_receipts_unread_total{template="",field="",reason="no_template"} 7' in metrics
    assert ('settleguard_receipts_unread_total{template="cn_pos_slip",field="amount_minor",'
            'reason="missing_field"} 3') in metrics

    everything = json.dumps(rows, ensure_ascii=False) + metrics + " ".join(c.detail for c in checks)
    assert PAN not in everything


def test_the_installer_hears_again_the_next_day_while_it_goes_on(tmp_path: Path) -> None:
    h = harness(tmp_path)
    h.feed(slip(1), source="printer")
    h.feed(slip(2), source="printer")
    assert len(device_rows(tmp_path)) == 1
    h.clock.advance(timedelta(days=1).total_seconds())
    h.feed(slip(3), source="printer")
    h.feed(slip(4), source="printer")
    rows = device_rows(tmp_path)
    assert [r["count"] for r in rows] == [1, 3]    # one a day, saying how many so far


def test_a_rolled_back_item_takes_its_count_with_it(tmp_path: Path) -> None:
    """The count lives in the journal, in the item's savepoint: a batch that fails is not counted twice."""
    h = harness(tmp_path)
    bad = Transaction(source="jsonl", kind="sale", result="approved", amount_minor=100, time=h.clock.now(),
                      terminal_id="T", batch_no="1", voucher_no="1", currency="CNY")
    original = h.pipeline._handle_transaction

    def explode(*args: Any, **kwargs: Any) -> int:
        raise RuntimeError("boom")

    h.pipeline._handle_transaction = explode  # type: ignore[method-assign]
    # One batch: the slip, then a transaction that fails; tried whole, then salvaged, and quarantined.
    h.pipeline.process([EventBatch("printer", (slip(1), bad), h.clock.now())])
    h.pipeline._handle_transaction = original  # type: ignore[method-assign]
    with open_read_only(journal_path(tmp_path)) as reader:
        assert reader.meta_value("unread") is None and reader.quarantine_total() == 2
    assert device_rows(tmp_path) == [] and h.pipeline.counts["unread_receipts"] == 0
    h.feed(slip(2), source="printer")      # the next one is counted once and told once
    with open_read_only(journal_path(tmp_path)) as reader:
        state = json.loads(reader.meta_value("unread") or "{}")
    assert [v["count"] for v in state["items"].values()] == [1]
    assert len(device_rows(tmp_path)) == 1


def test_doctor_says_nothing_of_slips_when_every_slip_was_understood(tmp_path: Path) -> None:
    h = harness(tmp_path)
    h.feed(ReceiptText(source="escpos", time=None, lines=("银联POS签购单", "金额：128.00")),
           sale("000001", 12800, h.clock.now()))
    names = {c.name for c in run_checks(tmp_path / "settleguard.toml", tmp_path, clock=h.clock)}
    assert not any(n.startswith(("receipt", "template")) for n in names)
    assert device_rows(tmp_path) == []
