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
    for text in ("!! 请撤销", "23:00 前撤销 RMB 1,280.00（14:03，凭证号 000123）", "卡号 622576******6691"):
        assert text.encode("gb18030") in data, text
    assert "请撤销".encode("gb18030") == b"\xc7\xeb\xb3\xb7\xcf\xfa"
    assert b"void" not in data.lower()      # no English on a printer nobody asked to print it
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
        "!! 请撤销",
        "23:00 前撤销 RMB 1,280.00（14:03，凭证号 000123）",
        "重复扣款：同一张卡 622576******6691 两次扣款（凭证号 000122、000123）",
        "编号 K7QD 风险高",
        "卡号 622576******6691",
        "处理后回复 settleguard ack K7QD",
        "好味道餐饮 静安店 11-27 14:05",
    ]


def test_a_verify_slip_says_what_to_check_and_no_void_and_english_only_when_asked(tmp_path: Path) -> None:
    out = tmp_path / "lp0"
    channel = PrinterChannel("p", printer={"kind": "file", "path": str(out)}, tz=SH, languages=("zh", "en"))
    channel.send(notice("opened", (alert(certainty="verify", action="check"),)), message_id="m", now=NOW,
                 sender=RecordingSender())
    text = out.read_bytes().decode("gb18030", errors="replace")
    assert "!! 请核对 / PLEASE CHECK" in text and "如属正常交易，无需处理" in text
    assert "撤销" not in text and "void" not in text.lower()
