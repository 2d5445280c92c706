"""The printer tap: ESC/POS bytes -> receipt text (drivers/protocols/escpos.py)."""

from __future__ import annotations

import io
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from escpos.printer import Dummy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from drivers.events import ReceiptText
from drivers.pan import contains_full_pan
from drivers.protocols import build_decoder
from drivers.protocols.escpos import (
    MAX_LINE_CHARS,
    MAX_PENDING,
    MAX_QR_BYTES,
    MAX_RECEIPT_LINES,
    EscposDecoder,
    EscposEventDecoder,
    encode_text_receipt,
)

DATA = Path(__file__).parent / "data" / "escpos"
STREAMS = sorted(DATA.glob("*.bin"))
SHANGHAI = ZoneInfo("Asia/Shanghai")
RECEIVED = datetime(2026, 11, 27, 14, 5, tzinfo=SHANGHAI)


def decode(data: bytes, **options: object) -> tuple[list[ReceiptText], EscposDecoder]:
    decoder = EscposDecoder(**options)  # type: ignore[arg-type]
    events = decoder.feed(data, RECEIVED) + decoder.flush(RECEIVED)
    receipts = [e for e in events if isinstance(e, ReceiptText)]
    assert len(receipts) == len(events)
    return receipts, decoder


def decode_chunked(data: bytes, cuts: list[int]) -> list[ReceiptText]:
    decoder = EscposDecoder()
    out = []
    last = 0
    for cut in sorted(set(cuts)):
        out += decoder.feed(data[last:cut], RECEIVED)
        last = cut
    out += decoder.feed(data[last:], RECEIVED)
    out += decoder.flush(RECEIVED)
    return out  # type: ignore[return-value]


# ---------------------------------------------------------------------- real streams

def test_receipt_with_logo_text_matches_esc2text_output_exactly() -> None:
    receipts, decoder = decode((DATA / "receipt-with-logo.bin").read_bytes())
    expected = (DATA / "receipt-with-logo.expected.txt").read_text(encoding="utf-8")
    assert len(receipts) == 1
    assert "\n".join(receipts[0].lines) + "\n" == expected
    assert decoder.stats.counters["images_skipped"] == 1        # the GS ( L logo
    assert decoder.stats.bytes_skipped == 0


def test_chinese_text_after_fs_ampersand_decodes_as_gbk() -> None:
    data = bytes.fromhex((DATA / "chinese-textchinese.hex").read_text())
    receipts, _ = decode(data)
    expected = (DATA / "chinese-textchinese.expected.txt").read_text(encoding="utf-8")
    assert "\n".join(receipts[0].lines) + "\n" == expected


@pytest.mark.parametrize("path", STREAMS, ids=lambda p: p.name)
def test_every_real_stream_decodes_without_skipping_garbage(path: Path) -> None:
    receipts, decoder = decode(path.read_bytes())
    assert receipts, "every sample prints some text"
    assert decoder.pending_bytes == 0
    # library-generated streams are well formed: nothing is garbage, no command unknown
    assert decoder.stats.bytes_skipped == 0
    assert "unknown_commands" not in decoder.stats.counters


def test_raster_and_graphics_images_are_counted_not_printed_as_text() -> None:
    _, bit_image = decode((DATA / "bit-image.bin").read_bytes())
    _, graphics = decode((DATA / "graphics.bin").read_bytes())
    # README: Tux at normal, double width, double height and both sizes
    assert bit_image.stats.counters["images_skipped"] == 4
    assert graphics.stats.counters["images_skipped"] == 4


def test_barcodes_and_pdf417_are_skipped_and_counted() -> None:
    receipts, barcode = decode((DATA / "barcode.bin").read_bytes())
    assert barcode.stats.counters["barcodes_skipped"] >= 9        # at least one of each symbology
    assert not any(line == "ABC" for r in receipts for line in r.lines)  # barcode data is not text
    _, pdf = decode((DATA / "pdf417-code.bin").read_bytes())
    assert pdf.stats.counters["barcodes_skipped"] > 0
    assert "qr_codes" not in pdf.stats.counters


def test_qr_contents_are_kept_including_binary_data() -> None:
    receipts, decoder = decode((DATA / "qr-code.bin").read_bytes())
    qr = receipts[0].qr
    assert qr[0] == "Testing 123"
    assert "0123456789012345678901234567890123456789" in qr
    assert "\x00" * 40 in qr
    assert decoder.stats.counters["qr_codes"] == len(qr)
    assert receipts[0].lines[0] == "QR code demo"


def test_user_defined_glyph_definitions_are_skipped_whole() -> None:
    receipts, decoder = decode((DATA / "unifont-print-buffer.bin").read_bytes())
    assert decoder.stats.counters["glyphs_skipped"] == 7
    # the glyph bitmaps never leak into the text; the printable selectors do
    assert all(len(line) <= 8 for line in receipts[0].lines)


def test_each_cut_in_the_demo_ends_a_receipt() -> None:
    receipts, decoder = decode((DATA / "demo.bin").read_bytes())
    assert receipts[0].lines == ("Hello world",)
    assert receipts[1].lines == ("ABC", "DEF", "GHI")          # ESC d and ESC e end lines
    assert decoder.stats.counters["qr_codes"] == 3
    assert len(receipts) == 11                                   # 14 cuts, 3 of them after no text


def test_python_escpos_minimal_sample() -> None:
    receipts, _ = decode((DATA / "preview-tools-minimal.bin").read_bytes())
    assert receipts[0].lines == ("Hello, World!", "This is a test.")


def test_western_printer_uses_the_esc_t_code_page_switched_mid_line() -> None:
    receipts, _ = decode((DATA / "character-encodings.bin").read_bytes(), chinese_default=False)
    lines = receipts[0].lines
    assert "Quizdeltagerne spiste jordbær med fløde, mens cirkusklovnen Wolther spillede på xylofon." in lines
    assert "Falsches Üben von Xylophonmusik quält jeden größeren Zwerg." in lines
    assert "В чащах юга жил бы цитрус? Да, но фальшивый экземпляр!" in lines


def test_python_escpos_esc_t_0_does_not_turn_a_chinese_printer_into_cp437() -> None:
    receipts, _ = decode(b"\x1b@\x1bt\x00" + "签购单".encode("gb18030") + b"\n")
    assert receipts[0].lines == ("签购单",)


def test_after_fs_dot_the_esc_t_page_decodes_high_bytes() -> None:
    data = b"\x1b@\x1c.\x1bt\x10caf\xe9\n\x1c&" + "咖啡".encode("gb18030") + b"\n"
    receipts, _ = decode(data)
    assert receipts[0].lines == ("café", "咖啡")


def test_gb18030_four_byte_characters_survive() -> None:
    text = "𠀀 ☃ €"
    receipts, _ = decode(encode_text_receipt([text]))
    assert receipts[0].lines == (text,)


# ---------------------------------------------------------------------- synthetic receipts (python-escpos)

def _tiny_logo() -> Image.Image:
    image = Image.new("1", (64, 24), 1)
    for x in range(0, 64, 3):
        image.putpixel((x, x % 24), 0)
    return image


def python_escpos_receipt() -> tuple[bytes, list[str]]:
    """A GBK receipt made by python-escpos using every kind of command we must skip."""
    printer = Dummy()
    printer.hw("INIT")
    printer._raw(b"\x1c&")                                  # Chinese mode
    printer.image(_tiny_logo())                              # GS v 0 raster
    printer.image(_tiny_logo(), impl="bitImageColumn")       # ESC * columns
    printer.image(_tiny_logo(), impl="graphics")             # GS ( L
    printer.set(align="center", bold=True, double_height=True, double_width=True)
    printer._raw("好味道餐饮 静安店\n".encode("gb18030"))
    printer.set(normal_textsize=True, underline=1, font="b", invert=True, flip=False)
    printer._raw("POS签购单\n".encode("gb18030"))
    printer.set_with_default()
    printer.line_spacing(40)
    printer._raw("商户编号：104152253311021\n".encode("gb18030"))
    printer.barcode("6901234567892", "EAN13", function_type="A")
    printer.barcode("{BSG123", "CODE128", function_type="B")
    printer.qr("https://pay.example.cn/r?o=4200001234202611271234567890", native=True, size=4)
    printer._raw(b"\x1b!\x30")                               # ESC ! double size
    printer._raw("金额：RMB 1,280.00\n".encode("gb18030"))
    printer.control("HT")                                   # ESC D tab stops
    printer._raw(b"\ttab\n")
    printer.print_and_feed(2)
    printer.cashdraw(2)
    printer.buzzer(2, 1)
    printer._raw("谢谢惠顾\n".encode("gb18030"))
    printer.cut()
    expected = ["好味道餐饮 静安店", "POS签购单", "商户编号：104152253311021", "金额：RMB 1,280.00",
                "\ttab", "", "谢谢惠顾"]
    return printer.output, expected


def test_python_escpos_gbk_receipt_text_comes_out_exactly() -> None:
    data, expected = python_escpos_receipt()
    receipts, decoder = decode(data)
    assert len(receipts) == 1
    assert list(receipts[0].lines) == expected
    assert receipts[0].qr == ("https://pay.example.cn/r?o=4200001234202611271234567890",)
    counters = decoder.stats.counters
    assert counters["images_skipped"] == 3
    assert counters["barcodes_skipped"] == 2
    assert counters["qr_codes"] == 1
    assert decoder.stats.bytes_skipped == 0


def test_python_escpos_image_qr_is_an_image_not_a_qr() -> None:
    printer = Dummy()
    printer.qr("not kept", native=False)
    printer.text("after\n")
    receipts, decoder = decode(printer.output)
    assert receipts[0].lines == ("after",)
    assert receipts[0].qr == ()
    assert decoder.stats.counters["images_skipped"] == 1


def test_encode_text_receipt_round_trips() -> None:
    lines = ["POS签购单", "金额(AMOUNT)：RMB 12.80", "", "持卡人存根"]
    receipts, _ = decode(encode_text_receipt(lines) + encode_text_receipt(["second"], cut=False))
    assert [r.lines for r in receipts] == [tuple(lines), ("second",)]
    assert encode_text_receipt(["x"]) == b"\x1b@\x1c&x\n\x1dVB\x00"
    with pytest.raises(ValueError, match="control character"):
        encode_text_receipt(["bad\x1bline"])


# ---------------------------------------------------------------------- boundaries and garbage

def test_esc_at_after_text_starts_a_new_receipt_but_not_before_text() -> None:
    receipts, _ = decode(b"\x1b@\x1b@one\n\x1b@two\n")
    assert [r.lines for r in receipts] == [("one",), ("two",)]


def test_flush_is_the_idle_timeout_boundary_and_stamps_the_receive_time() -> None:
    decoder = EscposDecoder()
    assert decoder.feed(b"half a receipt\nand a partial line", RECEIVED) == []
    [receipt] = decoder.flush(RECEIVED)
    assert isinstance(receipt, ReceiptText)
    assert receipt.lines == ("half a receipt", "and a partial line")
    assert receipt.time == RECEIVED
    assert decoder.flush(RECEIVED) == []


def test_receipt_time_falls_back_to_reference_then_none() -> None:
    reference = datetime(2026, 1, 2, 3, 4, tzinfo=SHANGHAI)
    [with_reference] = EscposDecoder(reference=reference).feed(b"x\n\x1dV\x00")
    [without] = EscposDecoder().feed(b"x\n\x1dV\x00")
    assert isinstance(with_reference, ReceiptText) and isinstance(without, ReceiptText)
    assert with_reference.time == reference
    assert without.time is None


def test_unknown_command_is_skipped_without_eating_the_text_after_it() -> None:
    receipts, decoder = decode(b"\x1byHello\n\x1d\xffWorld\n")
    assert receipts[0].lines == ("Hello", "\ufffdWorld")
    assert decoder.stats.counters["unknown_commands"] == 2
    assert decoder.stats.bytes_skipped == 3     # "ESC y" pair, then only GS before a high byte


def test_can_cancels_the_line_buffer() -> None:
    receipts, _ = decode(b"wrong amount\x18right amount\n")
    assert receipts[0].lines == ("right amount",)


def test_a_multibyte_character_cut_by_a_command_does_not_swallow_the_next_text() -> None:
    receipts, _ = decode(b"A\xca\x1bE\x01BC\n")
    assert receipts[0].lines == ("A\ufffdBC",)


def test_a_raster_claiming_100_mb_is_skipped_by_counting_never_buffered() -> None:
    decoder = EscposDecoder()
    width, height = 0xFFFF, 1600                          # 104,856,000 bytes of raster
    decoder.feed(b"before\n\x1dv0\x00" + width.to_bytes(2, "little") + height.to_bytes(2, "little"))
    chunk = bytes(1 << 20)
    total = width * height
    while total > len(chunk):
        decoder.feed(chunk)
        total -= len(chunk)
        assert decoder.pending_bytes == 0
    [receipt] = decoder.feed(chunk[:total] + b"after\n\x1dV\x00")
    assert isinstance(receipt, ReceiptText)
    assert receipt.lines == ("before", "after")
    assert decoder.stats.counters["images_skipped"] == 1


def test_an_overlong_line_is_split_and_receipt_lines_are_capped() -> None:
    receipts, decoder = decode(b"x" * (MAX_LINE_CHARS * 2 + 5) + b"\n")
    assert [len(x) for x in receipts[0].lines] == [MAX_LINE_CHARS, MAX_LINE_CHARS, 5]
    receipts, decoder = decode(b"line\n" * (MAX_RECEIPT_LINES + 10))
    assert len(receipts[0].lines) == MAX_RECEIPT_LINES
    assert decoder.stats.counters["lines_dropped"] == 10


def test_an_oversized_qr_is_skipped_not_kept() -> None:
    size = MAX_QR_BYTES + 1 + 3
    data = b"\x1d(k" + size.to_bytes(2, "little") + b"1P0" + b"A" * (size - 3) + b"text\n"
    receipts, decoder = decode(data)
    assert receipts[0].lines == ("text",)
    assert receipts[0].qr == ()
    assert decoder.stats.counters["qr_too_long"] == 1


def test_a_clear_pan_in_receipt_text_or_qr_is_masked() -> None:
    pan = "6225760000006697"
    assert contains_full_pan(pan)
    data = b"\x1b@CARD " + pan.encode() + b"\n" + b"\x1d(k\x17\x001P0PAN=" + pan.encode() + b"\n"
    receipts, _ = decode(data)
    assert receipts[0].lines[0] == "CARD 622576******6697"
    assert not any(contains_full_pan(x) for x in receipts[0].lines + receipts[0].qr)


def test_registered_as_the_escpos_protocol() -> None:
    decoder = build_decoder("escpos", tz=SHANGHAI, source="printer")
    assert isinstance(decoder.inner, EscposEventDecoder)
    [receipt] = decoder.feed(b"hello\n\x1dV\x00", RECEIVED)
    assert receipt.source == "printer"
    assert decoder.stats.counters["unmatched_receipts"] == 1


def test_throughput_is_well_above_the_peer_decoder() -> None:
    import time

    data = (DATA / "receipt-with-logo.bin").read_bytes() * 100
    decoder = EscposDecoder()
    start = time.perf_counter()
    for offset in range(0, len(data), 4096):
        decoder.feed(data[offset:offset + 4096])
    elapsed = time.perf_counter() - start
    assert decoder.stats.frames == 100
    assert len(data) / elapsed > 3.5e6


# ---------------------------------------------------------------------- properties

REAL = {p.name: p.read_bytes() for p in STREAMS}
SYNTHETIC = python_escpos_receipt()[0]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(sorted(REAL)), data=st.data())
def test_any_split_of_a_real_stream_gives_the_same_receipts(name: str, data: st.DataObject) -> None:
    stream = REAL[name]
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=12))
    assert decode_chunked(stream, cuts) == decode_chunked(stream, [])


@settings(max_examples=60, deadline=None)
@given(cuts=st.lists(st.integers(0, len(SYNTHETIC)), max_size=20))
def test_any_split_of_a_python_escpos_receipt_gives_the_same_receipt(cuts: list[int]) -> None:
    assert decode_chunked(SYNTHETIC, cuts) == decode_chunked(SYNTHETIC, [])


def test_byte_by_byte_feeding_gives_the_same_receipts() -> None:
    stream = REAL["receipt-with-logo.bin"] + SYNTHETIC + REAL["qr-code.bin"]
    assert decode_chunked(stream, list(range(len(stream)))) == decode_chunked(stream, [])


_ESCPOS_ALPHABET = st.sampled_from([0x1B, 0x1D, 0x1C, 0x10, 0x0A, 0x00, 0x28, 0x6B, 0x76, 0x30, 0x56,
                                    0x26, 0x2A, 0x40, 0x74, 0x2E, 0xCA, 0xBE, 0x81, 0x31, 0x50, 0xFF, 0x41])


@settings(max_examples=150, deadline=None)
@given(chunks=st.lists(st.one_of(st.binary(max_size=64),
                                 st.lists(_ESCPOS_ALPHABET, max_size=64).map(bytes)), max_size=12))
def test_random_bytes_never_raise_and_buffers_stay_bounded(chunks: list[bytes]) -> None:
    decoder = EscposEventDecoder(tz=SHANGHAI)
    for chunk in chunks:
        decoder.feed(chunk, RECEIVED)
        assert decoder.printer.pending_bytes <= MAX_PENDING
        assert decoder.printer.buffered_chars <= MAX_RECEIPT_LINES * MAX_LINE_CHARS + MAX_LINE_CHARS
        assert len(decoder.printer._qr_buf) <= MAX_QR_BYTES
    decoder.flush(RECEIVED)
    assert decoder.stats.bytes_in == sum(len(c) for c in chunks)


@settings(max_examples=60, deadline=None)
@given(stream=st.lists(_ESCPOS_ALPHABET, max_size=200).map(bytes),
       cuts=st.lists(st.integers(0, 200), max_size=8))
def test_any_split_of_random_command_soup_gives_the_same_receipts(stream: bytes, cuts: list[int]) -> None:
    cuts = [c for c in cuts if c <= len(stream)]
    assert decode_chunked(stream, cuts) == decode_chunked(stream, [])


def test_seven_byte_reads_like_a_slow_serial_port_give_the_same_receipt() -> None:
    data, expected = python_escpos_receipt()
    source = io.BytesIO(data)
    decoder = EscposDecoder()
    out = []
    while block := source.read(7):
        out += decoder.feed(block, RECEIVED)
    assert [list(r.lines) for r in out] == [expected]  # type: ignore[union-attr]
