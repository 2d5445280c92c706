"""``settleguard template suggest`` / ``template test`` (issue 18): a template from a sample, no regexes."""

from __future__ import annotations

import tomllib
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from agent.cli import main
from agent.sim.wire_escpos import slip_lines
from drivers.events import Event, Order, ReceiptText, Transaction
from drivers.protocols.escpos import encode_text_receipt
from drivers.receipts import load_templates, parse_template, read_receipt
from drivers.receipts.suggest import suggest
from tests.templates_support import SALE, SALES_RECEIPT, SHANGHAI, VOID
from tests.test_templates_layouts import ISSUE_SLIP

DATA = Path(__file__).parent / "data" / "escpos"


def _suggested(capture: Path, capsys: pytest.CaptureFixture[str]) -> tuple[str, object]:
    assert main(["template", "suggest", "--tz", "Asia/Shanghai", str(capture)]) == 0
    out = capsys.readouterr().out
    return out, parse_template(tomllib.loads(out), "suggested")


def _events(receipts: list[ReceiptText], templates: list) -> list[Event]:  # type: ignore[type-arg]
    return [e for r in receipts for e in read_receipt(r, templates, tz=SHANGHAI)[0]]


def _receipts(capture: Path) -> list[ReceiptText]:
    from agent.cli.template import read_capture
    return read_capture(str(capture), SHANGHAI)


def _slip_stream() -> list[list[str]]:
    """A day of the simulated terminal's slips: sales, a void, a refund, a reprint, three copies uncut."""
    refund = replace(SALE, kind="refund", voucher_no="000125", rrn="925498334780", amount_minor=999,
                     entry_mode="contactless", time=SALE.time + timedelta(hours=2) if SALE.time else None)
    other = replace(SALE, voucher_no="000126", amount_minor=5, card="6222021234567894", entry_mode="swipe",
                    auth_code="A1B2C3", operator="03")
    copies = [line for copy in ("商户存根", "银行存根", "持卡人存根") for line in slip_lines(other, copy=copy)]
    return [slip_lines(SALE), slip_lines(VOID), slip_lines(refund), slip_lines(SALE, reprint=True), copies]


def test_suggest_on_the_terminals_slips_reads_the_same_events_as_the_bundled_template(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capture = tmp_path / "slips.bin"
    capture.write_bytes(b"".join(encode_text_receipt(r) for r in _slip_stream()))
    out, template = _suggested(capture, capsys)
    assert 'kind = "sales_slip"' in out
    receipts = _receipts(capture)
    bundled = _events(receipts, load_templates())
    assert len([e for e in bundled if isinstance(e, Transaction)]) == 7
    assert _events(receipts, [template]) == bundled
    assert out.count("# receipt ") == 7            # what it read, per slip, shown to the installer


def test_suggest_on_a_sales_receipt_layout_of_our_own_reads_the_same_orders(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    second = [line.replace("202611270042", "202611270043").replace("17.80", "106.00")
              .replace("50.00", "106.00").replace("32.20", "0.00").replace("现金", "微信支付")
              .replace("14:02:55", "14:31:07") for line in SALES_RECEIPT]
    capture = tmp_path / "till.bin"
    capture.write_bytes(encode_text_receipt(SALES_RECEIPT) + encode_text_receipt(second))
    out, template = _suggested(capture, capsys)
    assert 'kind = "sales_receipt"' in out
    receipts = _receipts(capture)
    bundled = _events(receipts, load_templates())
    assert [type(e) for e in bundled] == [Order, Order]
    assert _events(receipts, [template]) == bundled


def test_suggest_on_the_issues_gbk_slip_reads_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capture = tmp_path / "gbk.bin"
    capture.write_bytes(encode_text_receipt(ISSUE_SLIP, encoding="gbk"))
    _, template = _suggested(capture, capsys)
    receipts = _receipts(capture)
    assert _events(receipts, [template]) == _events(receipts, load_templates())


@pytest.mark.parametrize(("stream", "order_no", "total", "when"), [
    ("receipt-with-logo.bin", None, 1425, None),
    ("preview-tools-receipt.bin", "12345", 4149, datetime(2025, 11, 9, 14, 30, tzinfo=SHANGHAI)),
])
def test_suggest_on_the_shared_receipt_streams_reads_their_totals(
        stream: str, order_no: str | None, total: int, when: datetime | None,
        capsys: pytest.CaptureFixture[str]) -> None:
    _, template = _suggested(DATA / stream, capsys)
    (order,) = _events(_receipts(DATA / stream), [template])
    assert isinstance(order, Order)
    assert (order.order_no, order.total_minor, order.currency, order.time) == (order_no, total, "USD", when)


def test_suggest_from_text_with_form_feeds(tmp_path: Path) -> None:
    proposal = suggest([SALES_RECEIPT])
    template = parse_template(tomllib.loads(proposal.toml), "suggested")
    assert template.kind == "sales_receipt" and {r.name for r in template.fields} >= {"order_no", "total", "paid"}
    capture = tmp_path / "till.txt"
    capture.write_text("\n".join(SALES_RECEIPT) + "\n\f\n" + "\n".join(SALES_RECEIPT), encoding="utf-8")
    assert len(_receipts(capture)) == 2


def test_template_test_shows_events_and_says_why_a_receipt_was_not_read(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bundled = Path(__file__).parents[1] / "config" / "templates" / "unionpay.toml"
    no_amount = [line for line in slip_lines(SALE) if not line.startswith("金额")]
    capture = tmp_path / "slips.bin"
    capture.write_bytes(encode_text_receipt(slip_lines(SALE)) + encode_text_receipt(no_amount))
    assert main(["template", "test", "--tz", "Asia/Shanghai", str(bundled), str(capture)]) == 0
    captured = capsys.readouterr()
    assert captured.out.count('"type": "transaction"') == 1
    assert "unionpay fits but amount is missing" in captured.err


def test_template_test_on_a_capture_it_cannot_read_exits_65(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    bundled = Path(__file__).parents[1] / "config" / "templates" / "unionpay.toml"
    assert main(["template", "test", str(bundled), str(DATA / "receipt-with-logo.bin")]) == 65
    assert "not this layout" in capsys.readouterr().err
    assert main(["template", "suggest", str(tmp_path / "missing.bin")]) == 65
