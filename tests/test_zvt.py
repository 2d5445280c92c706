"""ZVT decoder: real terminal bytes (tests/data/zvt), framing, mapping, robustness."""

from __future__ import annotations

import csv
from collections import Counter
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drivers.events import Event, ReceiptText, Settlement, Transaction
from drivers.pan import contains_full_pan
from drivers.protocols import build_decoder, sniff
from drivers.protocols.zvt import (
    MAX_LAYOUT_BMPS,
    MAX_LAYOUTS,
    POSITIVE_ACK,
    ZvtDecoder,
    crc_kermit,
    encode_apdu,
    encode_end_of_day,
    encode_print_lines,
    encode_reversal_command,
    encode_status,
    frame_serial,
    parse_bmps,
)
from drivers.protocols.zvt.apdu import _pan_from_bcd
from drivers.protocols.zvt.framing import _crc_kermit_etx

DATA = Path(__file__).parent / "data" / "zvt"
BERLIN = ZoneInfo("Europe/Berlin")
RECEIVED = datetime(2026, 11, 27, 12, 0, 0, tzinfo=BERLIN)


def vector(name: str) -> bytes:
    return bytes.fromhex((DATA / f"{name}.hex").read_text())


def decode(data: bytes, **options: object) -> tuple[list[Event], ZvtDecoder]:
    decoder = ZvtDecoder(tz=BERLIN, **options)  # type: ignore[arg-type]
    events = decoder.feed(data, RECEIVED) + decoder.flush(RECEIVED)
    return events, decoder


def only_transaction(data: bytes, **options: object) -> Transaction:
    events, _ = decode(data, **options)
    assert len(events) == 1 and isinstance(events[0], Transaction), events
    return events[0]


def only_receipt(data: bytes, **options: object) -> ReceiptText:
    events, _ = decode(data, **options)
    receipts = [e for e in events if isinstance(e, ReceiptText)]
    assert len(receipts) == 1, events
    return receipts[0]


def kinds(events: list[Event]) -> tuple[int, int, int]:
    c = Counter(type(e).__name__ for e in events)
    return c["Transaction"], c["Settlement"], c["ReceiptText"]


# --------------------------------------------------------------------------
# Every vector: no exception, bounded buffer, and the expected events.
# (transactions, settlements, receipts) with default options.
EXPECTED_EVENTS: dict[str, tuple[int, int, int]] = {
    "ecrterm_040f_status_girocard_40eur": (1, 0, 0),
    "ecrterm_040f_status_visa_0_01eur": (1, 0, 0),
    "ecrterm_040f_status_visa_10eur_tlv": (1, 0, 0),
    "ecrterm_frame_040f_status_info": (1, 0, 0),
    "portalum_040f_abort_timeout_truncated": (1, 0, 0),   # declined; used at end of input
    "portalum_040f_payment_debit_mastercard_20_40": (1, 0, 0),
    "portalum_040f_payment_debit_mastercard_20_40_b": (1, 0, 0),
    "portalum_040f_reversal_original_trace_606": (1, 0, 0),
    "portalum_040f_tlv_mastercard_chip_pin": (1, 0, 0),
    "ecrterm_06d1_print_line_kassenschnitt": (0, 0, 1),
    "ecrterm_06d1_text_cp437": (0, 0, 1),
    "ecrterm_06d1_text_latin1": (0, 0, 1),
    "ecrterm_06d1_text_zvt7bit": (0, 0, 1),
    "ecrterm_06d3_print_text_block_kundenbeleg": (0, 0, 1),
    "ecrterm_frame_06d1_print_line": (0, 0, 1),
    "ecrterm_frame_ecr_printline": (0, 0, 1),
    "portalum_06d1_corrupt_len_too_small": (0, 0, 1),     # LEN believed: a cut line, see its own test
    "portalum_06d1_stream_kassenschnitt": (0, 0, 1),
    "portalum_06d1_stream_receipts_tlv_1f07": (0, 0, 2),
    "portalum_06d3_admin_receipt_end_of_day_no_tx": (0, 0, 1),
    "portalum_06d3_cardholder_receipt": (0, 0, 1),
    "portalum_06d3_end_of_day_closure_receipt": (0, 0, 1),
    "portalum_06d3_merchant_receipt": (0, 0, 1),
}


def all_vectors() -> list[str]:
    return sorted(p.stem for p in DATA.glob("*.hex"))


def test_every_listed_vector_is_present_and_tested() -> None:
    with (DATA / "vectors.tsv").open(encoding="utf-8") as fh:
        listed = {row["file"].removesuffix(".hex") for row in csv.DictReader(fh, delimiter="\t")}
    assert listed == set(all_vectors())
    assert len(listed) == 93
    assert set(EXPECTED_EVENTS) <= listed


@pytest.mark.parametrize("name", all_vectors())
def test_vector_decodes_without_error_and_with_expected_events(name: str) -> None:
    data = vector(name)
    decoder = ZvtDecoder(tz=BERLIN)
    events = decoder.feed(data, RECEIVED)
    assert decoder.buffered <= decoder.max_buffer
    events += decoder.flush(RECEIVED)
    assert decoder.buffered == 0
    assert kinds(events) == EXPECTED_EVENTS.get(name, (0, 0, 0))
    for event in events:
        assert not contains_full_pan(str(event.to_dict()))
    s = decoder.stats
    assert s.bytes_in == len(data)
    assert s.events == len(events)


@pytest.mark.parametrize("name", all_vectors())
def test_vector_byte_by_byte_gives_the_same_events(name: str) -> None:
    data = vector(name)
    whole, _ = decode(data)
    decoder = ZvtDecoder(tz=BERLIN)
    pieces: list[Event] = []
    for i in range(len(data)):
        pieces += decoder.feed(data[i:i + 1], RECEIVED)
    pieces += decoder.flush(RECEIVED)
    assert pieces == whole


# --------------------------------------------------------------------------
# Status information 04 0F -> Transaction, values the sources assert.

def test_girocard_40_eur_status_becomes_an_approved_sale() -> None:
    txn = only_transaction(vector("ecrterm_040f_status_girocard_40eur"))
    assert (txn.kind, txn.result, txn.source) == ("sale", "approved", "zvt")
    assert txn.amount_minor == 4000
    assert txn.currency == "EUR"
    assert txn.terminal_id == "60099914"
    assert txn.receipt_no == "0175"
    assert txn.trace_no == "613995"
    assert txn.time == datetime(2026, 4, 25, 9, 38, 48, tzinfo=BERLIN)
    # BMP 22 holds 5966666666 D ... (track-2 style): digits up to the separator, masked.
    assert txn.card == "******6666"


def test_serial_frame_and_bare_apdu_of_the_same_status_decode_identically() -> None:
    framed = only_transaction(vector("ecrterm_frame_040f_status_info"))
    bare = only_transaction(vector("ecrterm_040f_status_girocard_40eur"))
    assert framed == bare


def test_visa_contactless_status_keeps_only_the_masked_card_and_names_the_card() -> None:
    txn = only_transaction(vector("ecrterm_040f_status_visa_0_01eur"))
    assert txn.amount_minor == 1
    assert txn.card == "474843******7743"
    assert txn.card_type == "VISA"
    assert txn.trace_no == "000732"
    assert txn.receipt_no == "0002"
    assert txn.terminal_id == "42003036"
    assert txn.merchant_id == "455600000599"
    assert txn.auth_code == "889150"
    assert txn.time == datetime(2026, 6, 29, 12, 23, 6, tzinfo=BERLIN)


def test_card_technology_tlv_sets_the_entry_mode() -> None:
    nfc = only_transaction(vector("ecrterm_040f_status_visa_10eur_tlv"))
    assert (nfc.amount_minor, nfc.trace_no, nfc.entry_mode) == (1000, "000733", "contactless")
    chip = only_transaction(vector("portalum_040f_tlv_mastercard_chip_pin"))
    assert (chip.amount_minor, chip.terminal_id, chip.card_type, chip.entry_mode) == (
        2040, "00000006", "MASTERCARD", "chip")
    assert chip.time == datetime(2026, 11, 1, 21, 9, 16, tzinfo=BERLIN)


@pytest.mark.parametrize(("name", "trace", "hms", "auth"), [
    ("portalum_040f_payment_debit_mastercard_20_40", "000470", (22, 39, 53), "611804"),
    ("portalum_040f_payment_debit_mastercard_20_40_b", "000463", (21, 4, 43), "978539"),
])
def test_debit_mastercard_payments_match_what_portalum_asserts(
        name: str, trace: str, hms: tuple[int, int, int], auth: str) -> None:
    txn = only_transaction(vector(name))
    assert txn.amount_minor == 2040
    assert txn.currency == "EUR"
    assert txn.card_type == "Debit Mastercard"
    assert txn.terminal_id == "28004869"
    assert txn.card == "************4771"
    assert txn.trace_no == trace
    assert txn.receipt_no == trace[2:]
    assert txn.auth_code == auth
    assert txn.time == datetime(2026, 10, 6, *hms, tzinfo=BERLIN)


def test_status_with_original_trace_is_a_reversal_pointing_at_the_original() -> None:
    txn = only_transaction(vector("portalum_040f_reversal_original_trace_606"))
    assert txn.kind == "reversal"
    assert txn.result == "approved"
    assert txn.original_voucher_no == "000606"
    assert txn.trace_no == "000607"
    assert txn.receipt_no == "0607"
    assert txn.amount_minor == 100
    assert txn.entry_mode == "contactless"
    assert txn.time == datetime(2026, 2, 1, 15, 48, 58, tzinfo=BERLIN)


def test_truncated_declined_status_is_held_back_then_used_at_end_of_input() -> None:
    decoder = ZvtDecoder(tz=BERLIN)
    assert decoder.feed(vector("portalum_040f_abort_timeout_truncated"), RECEIVED) == []
    assert decoder.buffered == 40
    (txn,) = decoder.flush(RECEIVED)
    assert isinstance(txn, Transaction)
    assert (txn.result, txn.amount_minor, txn.currency) == ("declined", 1200, "EUR")
    assert txn.terminal_id == "52500295"
    assert txn.time == datetime(2026, 8, 17, 11, 33, 39, tzinfo=BERLIN)
    assert txn.card is None
    assert decoder.stats.counters["truncated_status_used"] == 1


def test_truncated_apdu_that_does_not_split_into_whole_bmps_is_dropped() -> None:
    events, decoder = decode(vector("portalum_apdu_len_corrupt"))
    assert events == []
    assert decoder.stats.bad_frames == 1
    assert decoder.stats.bytes_skipped == 7


@pytest.mark.parametrize("name", [
    "portalum_040f_abort_by_customer", "portalum_040f_system_error_betrag_falsch",
    "portalum_040f_card_rejected_abgelehnt", "portalum_040f_minimal_result_00",
    "portalum_040f_tlv_mastercard_nfc",
])
def test_status_without_any_amount_is_ignored_and_counted(name: str) -> None:
    events, decoder = decode(vector(name))
    assert events == []
    assert decoder.stats.ignored_frames == 1
    assert decoder.stats.counters["status_without_amount"] == 1


def test_declined_card_takes_its_amount_from_the_authorisation_the_ecr_sent() -> None:
    stream = vector("portalum_0601_payment_10eur_sent") + vector("portalum_flow_card_rejected")
    txn = only_transaction(stream)
    assert (txn.kind, txn.result, txn.amount_minor, txn.terminal_id) == ("sale", "declined", 1000, "29000274")
    assert txn.card_type == "Mastercard"  # BMP 8A 0x06, no card name


def test_reversal_command_turns_the_next_status_into_a_reversal_of_that_receipt() -> None:
    when = datetime(2026, 11, 27, 11, 15, 0, tzinfo=BERLIN)
    status = encode_status(amount_minor=1250, time=when, trace_no=42, receipt_no=43, terminal_id="52500295",
                           card="************4821", card_name="girocard")
    stream = encode_reversal_command(receipt_no=17) + POSITIVE_ACK + status + encode_apdu(0x06, 0x0F)
    txn = only_transaction(stream)
    assert (txn.kind, txn.original_voucher_no, txn.receipt_no) == ("reversal", "0017", "0043")


def test_a_completed_command_does_not_leak_into_the_next_payment() -> None:
    when = datetime(2026, 11, 27, 11, 15, 0, tzinfo=BERLIN)
    status = encode_status(amount_minor=500, time=when, trace_no=1, receipt_no=2, terminal_id=1)
    stream = encode_reversal_command(receipt_no=17) + encode_apdu(0x06, 0x0F) + status
    assert only_transaction(stream).kind == "sale"


# --------------------------------------------------------------------------
# End of day -> Settlement

def test_end_of_day_totals_become_a_settlement() -> None:
    when = datetime(2026, 11, 27, 22, 55, 50, tzinfo=BERLIN)
    apdus = encode_end_of_day(terminal_id="28004869", total_minor=41200, time=when,
                              counts=[(3, 824), (1, 40376)],
                              receipt_lines=["** KASSENSCHNITT **", "Gesamt 4"])
    events, decoder = decode(b"".join(frame_serial(a) + b"\x06" for a in apdus))
    settlement, receipt = events
    assert settlement == Settlement(source="zvt", time=when, terminal_id="28004869", count=4,
                                    total_minor=41200, currency="EUR")
    assert isinstance(receipt, ReceiptText)
    assert receipt.lines == ("** KASSENSCHNITT **", "Gesamt 4")
    assert receipt.terminal_id == "28004869"
    assert decoder.stats.bytes_skipped == 0


def test_end_of_day_total_without_individual_totals_still_settles() -> None:
    when = datetime(2026, 11, 27, 23, 0, 5, tzinfo=BERLIN)
    apdus = encode_end_of_day(terminal_id=6, total_minor=0, time=when)
    (settlement,) = decode(b"".join(apdus))[0]
    assert isinstance(settlement, Settlement)
    assert (settlement.total_minor, settlement.count, settlement.terminal_id) == (0, None, "00000006")


def test_failed_end_of_day_is_not_a_settlement() -> None:
    when = datetime(2026, 11, 27, 23, 0, 5, tzinfo=BERLIN)
    apdus = encode_end_of_day(terminal_id=6, total_minor=100, time=when)
    failed = [a if a[:2] != b"\x04\x0f" else a.replace(b"\x27\x00", b"\x27\x64", 1) for a in apdus]
    events, decoder = decode(b"".join(failed))
    assert events == []
    assert decoder.stats.counters["end_of_day_failed"] == 1


# --------------------------------------------------------------------------
# Print lines and text blocks -> ReceiptText

@pytest.mark.parametrize(("name", "charset"), [
    ("ecrterm_06d1_text_cp437", "cp437"),
    ("ecrterm_06d1_text_latin1", "iso-8859-1"),
    ("ecrterm_06d1_text_zvt7bit", "zvt7bit"),
])
def test_print_line_text_decodes_in_the_configured_character_set(name: str, charset: str) -> None:
    assert only_receipt(vector(name), charset=charset).lines == ("Test ä ö ü ß",)


def test_cp437_is_the_default_character_set() -> None:
    assert only_receipt(vector("ecrterm_06d1_text_cp437")).lines == ("Test ä ö ü ß",)


def test_utf8_print_line_with_its_length_byte_corrected_decodes() -> None:
    raw = vector("ecrterm_06d1_text_utf8")
    # The source vector says LEN 0x21 but carries 17 bytes (see README); as is,
    # it waits for 16 more bytes and is dropped at end of input.
    events, decoder = decode(raw, charset="utf-8")
    assert events == [] and decoder.stats.counters["truncated_apdus"] == 1
    fixed = raw[:2] + bytes((len(raw) - 3,)) + raw[3:]
    assert only_receipt(fixed, charset="utf-8").lines == ("Test ä ö ü ß",)


def test_kassenschnitt_printed_line_by_line_is_one_receipt() -> None:
    events, decoder = decode(vector("portalum_06d1_stream_kassenschnitt"))
    (receipt,) = events
    assert isinstance(receipt, ReceiptText)
    assert decoder.stats.frames == 42  # 41 print lines + completion
    # 41 printed lines minus the blank paper feed (4 blank lines and the empty last line).
    assert len(receipt.lines) == 36
    assert receipt.lines[0] == "** KASSENSCHNITT **"
    assert "Terminal-ID:    28004869" in receipt.lines
    assert receipt.lines[-1] == "========================"
    assert receipt.time == RECEIVED


def test_merchant_and_customer_receipts_split_on_the_last_line_attribute() -> None:
    events, decoder = decode(vector("portalum_06d1_stream_receipts_tlv_1f07"), charset="iso-8859-1")
    merchant, customer = events
    assert isinstance(merchant, ReceiptText) and isinstance(customer, ReceiptText)
    assert decoder.stats.frames == 67
    assert merchant.lines[0] == "** HÄNDLERBELEG **"
    assert customer.lines[0] == "** KUNDENBELEG **"
    assert "Maestro/DMC AT" in merchant.lines and "Maestro/DMC AT" not in customer.lines
    assert "VIELEN DANK" in "\n".join(customer.lines)
    assert any(line.startswith("Nr:") and line.endswith("4821") for line in merchant.lines)
    # The trailing TLV (06 04 1F07 01 xx) is not printed text.
    assert not any("\x1f" in line or "\x06" in line for line in merchant.lines + customer.lines)


def test_cardholder_text_block_decodes_cp437_umlauts() -> None:
    receipt = only_receipt(vector("portalum_06d3_cardholder_receipt"))
    assert receipt.lines[0] == "  Leihstellung von hobex"
    assert receipt.lines[1] == "     für PORTALUM GmbH"
    stripped = [line.strip() for line in receipt.lines]
    assert "KUNDENBELEG" in stripped
    assert "L:************0000" in stripped


def test_merchant_text_block_contains_haendlerbeleg() -> None:
    receipt = only_receipt(vector("portalum_06d3_merchant_receipt"))
    assert receipt.lines[0] == "  Leihstellung von hobex"
    assert "HÄNDLERBELEG" in "\n".join(receipt.lines)


def test_closure_receipt_uses_the_character_set_its_tlv_names() -> None:
    receipt = only_receipt(vector("portalum_06d3_end_of_day_closure_receipt"))
    text = "\n".join(receipt.lines)
    assert receipt.lines[0].strip() == "TSS Telco Sales Services GmbH"
    for expected in ("HÄNDLERBELEG", "Closure", "Terminalsummen sind gleich Hostsummen", "Überprüfung auf",
                     "Bewahren Sie den Beleg zur späteren"):
        assert expected in text


def test_admin_receipt_of_an_empty_end_of_day() -> None:
    receipt = only_receipt(vector("portalum_06d3_admin_receipt_end_of_day_no_tx"))
    assert "Abschluss - keine TX" in receipt.lines
    assert receipt.lines[0] == "02.11.2021         17:05:02"


def test_ecrterm_customer_receipt_text_block() -> None:
    receipt = only_receipt(vector("ecrterm_06d3_print_text_block_kundenbeleg"))
    stripped = [" ".join(line.split()) for line in receipt.lines]
    assert "** Kundenbeleg **" in stripped
    assert "Karten-Nr.: xxxxxxxxxxxx7743" in stripped
    assert "AID59: 809258" in stripped
    assert receipt.lines[0] == ""  # leading blank lines are printed, only the trailing feed is cut


def test_text_block_fed_in_71_byte_reads_emits_only_at_the_end() -> None:
    data = vector("portalum_06d3_cardholder_receipt")
    decoder = ZvtDecoder(tz=BERLIN)
    reads = [data[i:i + 71] for i in range(0, len(data), 71)]
    assert [len(r) for r in reads] == [71] * 9 + [20]
    outputs = [decoder.feed(r, RECEIVED) for r in reads]
    assert all(o == [] for o in outputs[:-1])
    assert len(outputs[-1]) == 1


def test_full_pan_printed_on_a_line_is_masked() -> None:
    apdus = encode_print_lines(["Karte 4111 1111 1111 1111", "Ende"])
    receipt = only_receipt(b"".join(apdus))
    assert receipt.lines[0] == "Karte 411111******1111"
    assert not contains_full_pan("\n".join(receipt.lines))


def test_completion_ends_a_receipt_that_had_no_last_line_flag() -> None:
    lines = encode_apdu(0x06, 0xD1, b"\x00Zeile 1") + encode_apdu(0x06, 0xD1, b"\x00Zeile 2")
    decoder = ZvtDecoder(tz=BERLIN)
    assert decoder.feed(lines, RECEIVED) == []
    (receipt,) = decoder.feed(encode_apdu(0x06, 0x0F), RECEIVED)
    assert isinstance(receipt, ReceiptText) and receipt.lines == ("Zeile 1", "Zeile 2")


# --------------------------------------------------------------------------
# Negative and length-anomaly vectors

def test_print_line_whose_length_runs_past_the_data_waits_then_is_dropped() -> None:
    decoder = ZvtDecoder(tz=BERLIN)
    assert decoder.feed(vector("portalum_06d1_corrupt_len_too_large"), RECEIVED) == []
    assert decoder.buffered == 23
    assert decoder.flush(RECEIVED) == []
    assert decoder.stats.bad_frames == 1


def test_print_line_with_too_small_length_leaves_the_rest_as_skipped_garbage() -> None:
    # A bare stream has no checksum: LEN is believed, the 4 extra bytes are garbage.
    decoder = ZvtDecoder(tz=BERLIN)
    assert decoder.feed(vector("portalum_06d1_corrupt_len_too_small"), RECEIVED) == []
    assert decoder.stats.bytes_skipped == 4


@pytest.mark.parametrize(("name", "skipped"), [
    ("portalum_invalid_010203_negative", 3),
    ("portalum_apdu_corrupt_1e01ff", 3),
    ("portalum_apdu_corrupt_2bytes", 2),
])
def test_bytes_that_are_not_an_apdu_are_skipped_and_counted(name: str, skipped: int) -> None:
    events, decoder = decode(vector(name))
    assert events == []
    assert decoder.stats.bytes_skipped == skipped
    assert decoder.stats.frames == 0


def test_invalid_bitmap_garbage_yields_nothing() -> None:
    events, decoder = decode(vector("ecrterm_invalid_bitmap_negative"))
    assert events == []
    assert decoder.stats.bytes_skipped > 0


def test_ack_followed_by_a_fragment_counts_only_the_fragment() -> None:
    events, decoder = decode(vector("portalum_8000_ack_plus_fragment"))
    assert events == []
    assert (decoder.stats.ignored_frames, decoder.stats.bytes_skipped) == (1, 2)


def test_short_and_extended_length_fields_carry_the_same_one_byte_apdu() -> None:
    short, long = vector("portalum_apdu_len_default"), vector("portalum_apdu_len_ext_1")
    assert short[3:] == long[5:] == b"\x6c"
    for data in (short, long):
        events, decoder = decode(data)
        # Data 6C is no known BMP: parsing stops, the frame itself was well-formed.
        assert events == []
        assert (decoder.stats.frames, decoder.stats.bytes_skipped) == (1, 0)
        assert decoder.stats.counters["bmp_parse_stopped"] == 1


@pytest.mark.parametrize(("name", "declared"), [
    ("portalum_apdu_len_ext_256", 256), ("portalum_apdu_len_ext_max", 65535),
])
def test_extended_length_is_little_endian_and_waits_for_its_data(name: str, declared: int) -> None:
    decoder = ZvtDecoder(tz=BERLIN)
    decoder.feed(vector(name), RECEIVED)
    assert decoder.buffered == 6  # held: the header promises `declared` bytes
    decoder.feed(b"\x00" * (declared - 2), RECEIVED)
    assert decoder.buffered == 6 + declared - 2
    decoder.feed(b"\x00", RECEIVED)
    assert decoder.buffered == 0 and decoder.stats.frames == 1


def test_apdu_longer_than_the_configured_cap_is_treated_as_garbage() -> None:
    decoder = ZvtDecoder(tz=BERLIN, max_apdu=1024)
    decoder.feed(vector("portalum_apdu_len_ext_max") + vector("ecrterm_040f_status_girocard_40eur"), RECEIVED)
    assert decoder.stats.counters["oversized_apdus"] >= 1
    assert decoder.stats.events == 1


# --------------------------------------------------------------------------
# Serial framing

FRAME_VECTORS = sorted(n for n in all_vectors() if "_frame" in n)


@pytest.mark.parametrize("name", FRAME_VECTORS)
def test_serial_frame_crc_verifies_and_reencodes_byte_identically(name: str) -> None:
    frame = vector(name)
    etx = frame.rindex(b"\x10\x03")
    apdu = frame[2:etx].replace(b"\x10\x10", b"\x10")
    crc = crc_kermit(apdu + b"\x03")
    assert frame[etx + 2:] == bytes((crc & 0xFF, crc >> 8))
    assert frame_serial(apdu) == frame
    decoder = ZvtDecoder(tz=BERLIN, transport="serial")
    decoder.feed(frame, RECEIVED)
    assert (decoder.stats.frames, decoder.stats.bad_frames, decoder.stats.bytes_skipped) == (1, 0, 0)


def test_crc_is_kermit() -> None:
    assert crc_kermit(b"123456789") == 0x2189


def test_stuffed_dle_in_the_apdu_is_unstuffed() -> None:
    frame = vector("ecrterm_frame_ecr_zahlung_eccash")
    assert b"\x10\x10" in frame
    decoder = ZvtDecoder(tz=BERLIN)
    decoder.feed(frame, RECEIVED)
    assert decoder.framing == "serial" and decoder.stats.frames == 1


def test_frame_with_a_bad_crc_is_skipped_whole_and_the_next_one_survives() -> None:
    good = vector("ecrterm_frame_040f_status_info")
    bad = bytearray(good)
    bad[20] ^= 0x01  # one bit flipped inside the APDU
    events, decoder = decode(bytes(bad) + b"\x06" + good)
    assert len(events) == 1
    assert decoder.stats.bad_frames == 1
    assert decoder.stats.counters["crc_errors"] == 1


def _status_with_crc_byte(value: int) -> bytes:
    """A real-looking status APDU whose serial CRC contains ``value``."""
    when = datetime(2026, 11, 27, 10, 0, 0, tzinfo=BERLIN)
    for trace in range(1, 100000):
        apdu = encode_status(amount_minor=990, time=when, trace_no=trace, receipt_no=trace % 10000,
                             terminal_id="28004869")
        crc = crc_kermit(apdu + b"\x03")
        if value in (crc & 0xFF, crc >> 8):
            return apdu
    raise AssertionError("no trace number gives that CRC byte")


@pytest.mark.parametrize("stuff_crc", [True, False])
def test_crc_byte_equal_to_dle_is_accepted_stuffed_or_not(stuff_crc: bool) -> None:
    apdu = _status_with_crc_byte(0x10)
    framed = frame_serial(apdu)
    if not stuff_crc:
        etx = framed.rindex(b"\x10\x03")
        crc = crc_kermit(apdu + b"\x03")
        framed = framed[:etx + 2] + bytes((crc & 0xFF, crc >> 8))
    follower = vector("ecrterm_frame_040f_status_info")
    events, decoder = decode(framed + follower)
    assert [e.amount_minor for e in events if isinstance(e, Transaction)] == [990, 4000]
    assert decoder.stats.bad_frames == 0 and decoder.stats.bytes_skipped == 0


def test_ack_and_nak_between_frames_are_not_garbage() -> None:
    frame = vector("ecrterm_frame_040f_status_info")
    events, decoder = decode(b"\x06" + frame + b"\x06\x15" + frame + b"\x06")
    assert len(events) == 2
    assert decoder.stats.bytes_skipped == 0


def test_garbage_dle_stx_before_a_frame_does_not_swallow_it() -> None:
    frame = vector("ecrterm_frame_040f_status_info")
    events, decoder = decode(b"\x10\x02\xaa\x10" + frame)
    assert len(events) == 1
    assert decoder.stats.bad_frames >= 1


def test_frame_cut_off_by_a_new_dle_stx_is_dropped() -> None:
    frame = vector("ecrterm_frame_040f_status_info")
    events, decoder = decode(frame[:30] + frame)
    assert len(events) == 1
    assert decoder.stats.bad_frames == 1
    assert decoder.stats.bytes_skipped == 30


def test_tcp_transport_never_switches_to_serial_framing() -> None:
    # DLE STX, DLE ETX and the CRC are garbage to a bare-APDU stream; the APDU
    # inside (no 0x10 in it) is still found by resynchronisation.
    events, decoder = decode(vector("ecrterm_frame_040f_status_info"), transport="tcp")
    assert decoder.framing == "tcp"
    assert len(events) == 1 and decoder.stats.bytes_skipped == 6


def test_serial_transport_skips_bare_apdus() -> None:
    events, decoder = decode(vector("ecrterm_040f_status_girocard_40eur"), transport="serial")
    assert events == [] and decoder.stats.bytes_skipped == 58


def test_registry_and_sniffer_know_zvt() -> None:
    decoder = build_decoder("zvt", tz=BERLIN, source="terminal")
    assert isinstance(decoder, ZvtDecoder)
    assert sniff(vector("ecrterm_frame_040f_status_info")) == "zvt"
    assert sniff(vector("ecrterm_040f_status_girocard_40eur")) == "zvt"
    (txn,) = decoder.feed(vector("ecrterm_frame_040f_status_info"), RECEIVED)
    assert isinstance(txn, Transaction) and txn.source == "terminal"


# --------------------------------------------------------------------------
# Time placement

def test_without_received_time_the_reference_places_the_year() -> None:
    decoder = ZvtDecoder(tz=BERLIN, reference=datetime(2019, 5, 1, tzinfo=BERLIN))
    (txn,) = decoder.feed(vector("ecrterm_040f_status_girocard_40eur"))
    assert isinstance(txn, Transaction)
    assert txn.time == datetime(2019, 4, 25, 9, 38, 48, tzinfo=BERLIN)


def test_without_received_time_or_reference_the_time_is_unknown() -> None:
    decoder = ZvtDecoder(tz=BERLIN)
    (txn,) = decoder.feed(vector("ecrterm_040f_status_girocard_40eur"))
    assert isinstance(txn, Transaction) and txn.time is None


def test_new_years_eve_status_read_on_new_years_day_lands_in_the_old_year() -> None:
    apdu = encode_status(amount_minor=100, time=datetime(2026, 12, 31, 23, 59, 0), trace_no=1, receipt_no=1,
                         terminal_id=1)
    decoder = ZvtDecoder(tz=BERLIN)
    (txn,) = decoder.feed(apdu, datetime(2027, 1, 1, 0, 1, tzinfo=BERLIN))
    assert isinstance(txn, Transaction)
    assert txn.time == datetime(2026, 12, 31, 23, 59, 0, tzinfo=BERLIN)


# --------------------------------------------------------------------------
# Encoders round-trip

@settings(max_examples=60, deadline=None)
@given(amount=st.integers(0, 999_999_999_999), trace=st.integers(0, 999_999), receipt=st.integers(0, 9999),
       tid=st.integers(0, 99_999_999), minute=st.integers(0, 59), second=st.integers(0, 59),
       last4=st.integers(0, 9999), reversal=st.booleans(), currency=st.sampled_from(["EUR", "CNY", "USD"]),
       serial=st.booleans())
def test_encoded_status_decodes_to_the_same_fields(
        amount: int, trace: int, receipt: int, tid: int, minute: int, second: int, last4: int, reversal: bool,
        currency: str, serial: bool) -> None:
    when = datetime(2026, 11, 27, 10, minute, second, tzinfo=BERLIN)
    card = f"541333******{last4:04d}"
    apdu = encode_status(amount_minor=amount, time=when, trace_no=trace, receipt_no=receipt, terminal_id=tid,
                         card=card, card_name="Debit Mastercard", currency=currency,
                         original_trace_no=trace - 1 if reversal and trace else None)
    txn = only_transaction(frame_serial(apdu) if serial else apdu)
    assert txn.amount_minor == amount
    assert txn.trace_no == f"{trace:06d}"
    assert txn.receipt_no == f"{receipt:04d}"
    assert txn.terminal_id == f"{tid:08d}"
    assert txn.time == when
    assert txn.card == card
    assert txn.card_type == "Debit Mastercard"
    assert txn.currency == currency
    assert txn.kind == ("reversal" if reversal and trace else "sale")


def test_encoded_status_parses_into_the_expected_bmps() -> None:
    apdu = encode_status(amount_minor=4000, time=datetime(2026, 4, 25, 9, 38, 48), trace_no=613995,
                         receipt_no=175, terminal_id=60099914, card="672559******1234")
    bmps = parse_bmps(apdu, 3)
    assert bmps.complete
    assert set(bmps.fields) == {0x27, 0x04, 0x0B, 0x0C, 0x0D, 0x22, 0x29, 0x49, 0x87}
    assert bmps.fields[0x22] == bytes.fromhex("672559eeeeee1234")


def test_a_full_pan_given_to_the_encoder_never_comes_out_of_the_decoder() -> None:
    apdu = encode_status(amount_minor=1, time=datetime(2026, 1, 2, 3, 4, 5), trace_no=1, receipt_no=1,
                         terminal_id=1, card="4111111111111111")
    assert only_transaction(apdu).card == "411111******1111"


# --------------------------------------------------------------------------
# Properties: chunking, random bytes, garbage between frames

def split_apdus(stream: bytes) -> list[bytes]:
    """Cut a concatenation of bare APDUs at their length fields."""
    out: list[bytes] = []
    pos = 0
    while pos < len(stream):
        head, length = (5, int.from_bytes(stream[pos + 3:pos + 5], "little")) if stream[pos + 2] == 0xFF \
            else (3, stream[pos + 2])
        out.append(stream[pos:pos + head + length])
        pos += head + length
    return out


REAL_APDUS = [apdu for n in (
    "ecrterm_040f_status_girocard_40eur", "portalum_040f_reversal_original_trace_606",
    "ecrterm_040f_status_visa_10eur_tlv", "portalum_06d1_stream_kassenschnitt",
    "portalum_06d3_admin_receipt_end_of_day_no_tx", "portalum_8000_ack", "portalum_0601_payment_10eur_sent",
    "portalum_flow_card_rejected", "ecrterm_04ff_intermediate_insert_card", "portalum_060f_completion_empty",
) for apdu in split_apdus(vector(n))]
SERIAL_STREAM = (b"".join(frame_serial(a) + b"\x06" for a in REAL_APDUS)
                 + vector("ecrterm_frame_040f_status_info"))
RAW_STREAM = b"".join(REAL_APDUS)


def feed_in_pieces(data: bytes, cuts: list[int], **options: object) -> tuple[list[Event], ZvtDecoder]:
    decoder = ZvtDecoder(tz=BERLIN, **options)  # type: ignore[arg-type]
    events: list[Event] = []
    last = 0
    for cut in [*sorted(set(cuts)), len(data)]:
        events += decoder.feed(data[last:cut], RECEIVED)
        assert decoder.buffered <= decoder.max_buffer
        last = cut
    return events + decoder.flush(RECEIVED), decoder


@pytest.mark.parametrize(("stream", "transport"), [
    (SERIAL_STREAM, "auto"), (SERIAL_STREAM, "serial"), (RAW_STREAM, "auto"), (RAW_STREAM, "tcp"),
])
def test_reference_streams_decode_fully(stream: bytes, transport: str) -> None:
    events, decoder = decode(stream, transport=transport)
    # girocard, reversal, visa, the declined 10 EUR (amount from the 06 01 before it),
    # and on the serial stream one more girocard frame; kassenschnitt + admin receipt.
    assert kinds(events) == ((5, 0, 2) if stream is SERIAL_STREAM else (4, 0, 2))
    assert decoder.stats.bytes_skipped == 0 and decoder.stats.bad_frames == 0


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), serial=st.booleans())
def test_any_split_of_a_stream_gives_the_same_events(data: st.DataObject, serial: bool) -> None:
    stream = SERIAL_STREAM if serial else RAW_STREAM
    whole, reference = decode(stream)
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=40))
    pieces, decoder = feed_in_pieces(stream, cuts)
    assert pieces == whole
    assert decoder.stats == reference.stats


@settings(max_examples=150, deadline=None)
@given(blob=st.binary(max_size=600), cuts=st.lists(st.integers(0, 600), max_size=8),
       transport=st.sampled_from(["auto", "serial", "tcp"]))
def test_random_bytes_never_raise_and_never_overfill_the_buffer(blob: bytes, cuts: list[int],
                                                               transport: str) -> None:
    decoder = ZvtDecoder(tz=BERLIN, transport=transport, max_apdu=256)  # type: ignore[arg-type]
    last = 0
    for cut in [*sorted(c for c in set(cuts) if c <= len(blob)), len(blob)]:
        decoder.feed(blob[last:cut], RECEIVED)
        assert decoder.buffered <= decoder.max_buffer
        last = cut
    decoder.flush(RECEIVED)
    assert decoder.buffered == 0


@settings(max_examples=60, deadline=None)
@given(blob=st.binary(min_size=1, max_size=5000))
def test_repeated_random_bytes_stay_under_a_small_cap(blob: bytes) -> None:
    decoder = ZvtDecoder(tz=BERLIN, max_apdu=64)
    for _ in range(20):
        decoder.feed(blob, RECEIVED)
        assert decoder.buffered <= decoder.max_buffer <= 2 * (64 + 5) + 8


SERIAL_FRAMES = [frame_serial(a) for a in REAL_APDUS]


@settings(max_examples=80, deadline=None)
@given(garbage=st.lists(st.binary(max_size=40), min_size=len(SERIAL_FRAMES) + 1,
                        max_size=len(SERIAL_FRAMES) + 1))
def test_garbage_between_serial_frames_loses_no_frame(garbage: list[bytes]) -> None:
    clean, _ = decode(b"".join(SERIAL_FRAMES))
    noisy = b"".join(g + f for g, f in zip(garbage, SERIAL_FRAMES, strict=False)) + garbage[-1]
    events, decoder = decode(noisy, transport="serial")
    assert events == clean
    assert decoder.stats.bytes_skipped <= sum(len(g) for g in garbage)


@settings(max_examples=80, deadline=None)
@given(garbage=st.lists(st.binary(max_size=40).filter(
    lambda b: not set(b) & {0x04, 0x05, 0x06, 0x08, 0x80, 0x84, 0x10, 0x15}),
    min_size=len(REAL_APDUS) + 1, max_size=len(REAL_APDUS) + 1))
def test_garbage_between_bare_apdus_is_skipped_exactly(garbage: list[bytes]) -> None:
    clean, _ = decode(RAW_STREAM)
    noisy = b"".join(g + a for g, a in zip(garbage, REAL_APDUS, strict=False)) + garbage[-1]
    events, decoder = decode(noisy)
    assert events == clean
    assert decoder.stats.bytes_skipped == sum(len(g) for g in garbage)


def test_joining_a_serial_line_mid_frame_never_invents_a_transaction() -> None:
    # The daemon may start while a frame is on the wire; with transport="serial"
    # the partial frame is garbage and the next DLE STX resynchronises.
    stream = b"".join(f + b"\x06" for f in SERIAL_FRAMES)
    clean = [e for e in decode(stream)[0] if isinstance(e, Transaction)]
    for cut in range(1, len(stream), 3):
        events, decoder = decode(stream[cut:], transport="serial")
        txns = [e for e in events if isinstance(e, Transaction)]
        assert txns == clean[len(clean) - len(txns):], cut
        assert decoder.stats.events == len(events)


# --------------------------------------------------------------------------
# Fast paths (issue 3/9) must agree with the plain walk they shortcut

STATUS_APDUS = [apdu for apdu in REAL_APDUS if apdu[:2] == b"\x04\x0f"]


def _data_of(apdu: bytes) -> bytes:
    return apdu[5:] if apdu[2] == 0xFF else apdu[3:]


def test_the_status_stream_has_apdus_of_several_shapes() -> None:
    # Guards the layout tests below: they need real, different status APDUs.
    assert len(STATUS_APDUS) >= 3
    assert any(b"\x06" in _data_of(a) for a in STATUS_APDUS)  # one carries a TLV container


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_a_remembered_status_layout_splits_any_apdu_exactly_like_the_plain_walk(data: st.DataObject) -> None:
    decoder = ZvtDecoder(tz=BERLIN)
    template = _data_of(data.draw(st.sampled_from(STATUS_APDUS)))
    decoder._split_status(template)  # learns the layout for this length
    # Same length, some bytes changed: values only, or tag/length bytes too.
    mutated = bytearray(template)
    for index, value in data.draw(st.lists(st.tuples(st.integers(0, len(template) - 1), st.integers(0, 255)),
                                           max_size=4)):
        mutated[index] = value
    apdu = bytes(mutated)
    plain = parse_bmps(apdu)
    fields, tlv, complete = decoder._split_status(apdu)
    assert (fields, tuple(tlv), complete) == (plain.fields, plain.tlv, plain.complete)
    assert list(fields) == list(plain.fields)


def test_a_status_with_a_new_shape_is_walked_and_remembered() -> None:
    girocard = _data_of(vector("ecrterm_040f_status_girocard_40eur"))
    # Same length, but BMP 22's LLVAR length says one byte longer: a different walk.
    pan_at = girocard.index(b"\x22\xf1\xf1") + 1
    other = girocard[:pan_at] + b"\xf1\xf2" + girocard[pan_at + 2:]
    decoder = ZvtDecoder(tz=BERLIN)
    first = decoder._split_status(girocard)
    second = decoder._split_status(other)
    assert first[0][0x22] != second[0][0x22]
    assert second[0] == parse_bmps(other).fields


def test_remembered_layouts_are_capped() -> None:
    decoder = ZvtDecoder(tz=BERLIN)
    for amount in range(100):
        card = "672559" + "*" * (amount % 9) + "1234"
        apdu = encode_status(amount_minor=amount, time=RECEIVED, trace_no=amount, receipt_no=amount,
                             terminal_id=1, card=card, card_name="x" * amount)
        decoder.feed(apdu, RECEIVED)
    assert decoder.stats.events == 100
    assert 0 < len(decoder._layouts) <= MAX_LAYOUTS


def test_a_status_of_very_many_bmps_is_decoded_but_not_remembered() -> None:
    apdu = encode_status(amount_minor=100, time=RECEIVED, trace_no=1, receipt_no=1, terminal_id=1)
    padded = encode_apdu(0x04, 0x0F, _data_of(apdu) + b"\x19\x00" * MAX_LAYOUT_BMPS)
    events, decoder = decode(padded)
    assert [e.amount_minor for e in events if isinstance(e, Transaction)] == [100]
    assert decoder._layouts == {}


def test_thousands_of_identical_statuses_decode_like_the_first() -> None:
    apdu = vector("ecrterm_040f_status_girocard_40eur")
    first = only_transaction(apdu)
    events, decoder = decode(apdu * 2000)
    assert events == [first] * 2000
    assert decoder.stats.frames == decoder.stats.events == 2000


@settings(max_examples=300, deadline=None)
@given(apdu=st.binary(max_size=300))
def test_crc_over_apdu_and_etx_matches_the_reference_crc(apdu: bytes) -> None:
    assert _crc_kermit_etx(apdu) == crc_kermit(apdu + b"\x03")


@pytest.mark.parametrize(("nibbles", "card"), [
    ("672559eeeeee0000", "672559******0000"),      # E = masked digit
    ("6725596666666600021f", "672559*********0021"),  # F pads an odd length
    ("4111111111111111d2512f", "411111******1111"),  # D separates track-2 style data
    ("67255966aabbcc0000", "672559********0000"),  # A..C are masked too
    ("ffffff", None),
])
def test_card_nibbles_become_a_masked_pan(nibbles: str, card: str | None) -> None:
    assert _pan_from_bcd(bytes.fromhex(nibbles)) == card


def test_unknown_currency_is_counted_and_left_null() -> None:
    apdu = encode_status(amount_minor=100, time=RECEIVED, trace_no=1, receipt_no=1, terminal_id=1)
    at = apdu.index(b"\x49\x09\x78") + 1
    (txn,), decoder = decode(apdu[:at] + b"\x09\x99" + apdu[at + 2:])
    assert isinstance(txn, Transaction) and txn.currency is None and txn.amount_minor == 100
    assert decoder.stats.counters["unknown_currency"] == 1
