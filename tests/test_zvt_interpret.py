"""ZVT meaning: every vector, status -> Transaction, end of day -> Settlement, receipts, time, layout fast paths."""

from __future__ import annotations

import csv
from datetime import datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.events import Event, ReceiptText, Settlement, Transaction
from drivers.pan import contains_full_pan
from drivers.protocols.zvt import (
    MAX_LAYOUT_BMPS,
    MAX_LAYOUTS,
    POSITIVE_ACK,
    ZvtDecoder,
    encode_apdu,
    encode_end_of_day,
    encode_print_lines,
    encode_reversal_command,
    encode_status,
    frame_serial,
    parse_bmps,
)
from drivers.protocols.zvt.apdu import _pan_from_bcd
from tests.zvt_support import (
    BERLIN,
    DATA,
    EXPECTED_EVENTS,
    RECEIVED,
    STATUS_APDUS,
    _data_of,
    all_vectors,
    decode,
    kinds,
    only_receipt,
    only_transaction,
    vector,
)


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
