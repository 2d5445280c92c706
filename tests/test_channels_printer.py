"""The cashier's slip on the receipt printer: GB18030 text, retries, and our own decoder reading it back."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.delivery.channels.base import (
    Outcome,
)
from agent.delivery.channels.printer import PrinterChannel, PrinterSettings
from agent.model import ReceiptText
from drivers.pan import contains_full_pan
from tests.channels_support import (
    NOW,
    SH,
    RecordingSender,
    alert,
    notice,
)

# ---------------------------------------------------------------------------- printer slip


def test_printer_slip_is_gb18030_text_and_ends_with_a_cut(tmp_path: Path) -> None:
    out = tmp_path / "lp0"
    channel = PrinterChannel("till-printer", printer={"kind": "file", "path": str(out)}, tz=SH)
    outcome = channel.send(notice(), message_id="m", now=NOW, sender=RecordingSender())
    assert outcome == Outcome.ok("printed 1 slip(s)")
    data = out.read_bytes()
    assert data.startswith(b"\x1b@\x1c&")
    for text in ("!! 可疑交易 / SUSPICIOUS", "重复扣款 Duplicate charge", "凭证号 voucher 000123",
                 "RMB 1,280.00  14:03", "卡号 card 622576******6691", "请撤销 void before 23:00"):
        assert text.encode("gb18030") in data, text
    assert "可疑交易".encode("gb18030") == b"\xbf\xc9\xd2\xc9\xbd\xbb\xd2\xd7"
    assert data.rstrip(b"\x00\x01").endswith(b"\x1dV")    # GS V: cut
    assert not contains_full_pan(data.decode("gb18030", errors="replace"))


def test_a_missing_printer_is_retried_and_a_resolution_is_not_printed(tmp_path: Path) -> None:
    missing = PrinterChannel("p", printer={"kind": "file", "path": str(tmp_path / "no" / "such" / "lp0")})
    outcome = missing.send(notice(), message_id="m", now=NOW, sender=RecordingSender())
    assert outcome.status == "retry" and outcome.retry_after == 30.0
    out = tmp_path / "lp0"
    quiet = PrinterChannel("p", printer={"kind": "file", "path": str(out)})
    assert quiet.send(notice("voided", (alert(state="voided"),)), message_id="m", now=NOW,
                      sender=RecordingSender()).status == "ok"
    assert not out.exists()


def test_printer_settings_name_the_missing_field() -> None:
    with pytest.raises(ValueError, match=r"printer\.host is required"):
        PrinterSettings.from_mapping({"kind": "network"})
    with pytest.raises(ValueError, match=r"printer\.kind must be one of"):
        PrinterSettings.from_mapping({"kind": "bluetooth"})
    with pytest.raises(ValueError, match="unknown key"):
        PrinterSettings.from_mapping({"kind": "file", "path": "/dev/usb/lp0", "colour": "red"})
    usb = PrinterSettings.from_mapping({"kind": "usb", "vendor": "0416", "product": 0x5011})
    assert (usb.vendor, usb.product) == (0x0416, 0x5011)


def test_our_own_escpos_decoder_reads_the_slip_back(tmp_path: Path) -> None:
    from drivers.protocols.escpos import EscposDecoder  # imported here: another engineer's module

    out = tmp_path / "lp0"
    PrinterChannel("p", printer={"kind": "file", "path": str(out)}, tz=SH).send(
        notice(), message_id="m", now=NOW, sender=RecordingSender())
    decoder = EscposDecoder(tz=SH, source="escpos")
    receipts = decoder.feed(out.read_bytes(), NOW) + decoder.flush(NOW)
    assert len(receipts) == 1 and isinstance(receipts[0], ReceiptText)
    assert [line.strip() for line in receipts[0].lines] == [
        "!! 可疑交易 / SUSPICIOUS",
        "重复扣款 Duplicate charge",
        "风险 高 high (DUP-001)",
        "凭证号 voucher 000123",
        "RMB 1,280.00  14:03",
        "卡号 card 622576******6691",
        "请撤销 void before 23:00",
        "好味道餐饮 静安店 11-27 14:05",
    ]
