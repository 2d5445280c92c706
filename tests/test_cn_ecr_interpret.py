"""UnionPay-style ECR meaning: the captured frames, time, mapping to events, agreement with parse_body,
card-number hygiene."""

from __future__ import annotations

import csv
import re
from datetime import datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.events import Settlement, Transaction, event_to_json
from drivers.pan import contains_full_pan
from drivers.protocols import build_decoder, sniff
from drivers.protocols.cn_ecr import (
    DEFAULT_TYPE_MAP,
    Amount,
    CnEcrDecoder,
    EcrResult,
    SchemeTotals,
    TlvError,
    encode_bcd,
    encode_response,
    entry_mode,
    lrc,
    parse_amount_field,
    parse_body,
    parse_df_tlv,
)
from tests.cn_ecr_support import (
    _PAN,
    DATA,
    EXPECTED_SALE,
    EXPECTED_VOID,
    PROPERTY,
    RECEIVED,
    SALE,
    SALE_AS_CAPTURED,
    SHANGHAI,
    VOID,
    VOID_AS_CAPTURED,
    _decode_all,
    _decoder,
    _expected_event,
    _frame,
    _luhn_pan,
    _reachable_bytes,
    _response,
    _results,
    _xor,
)


def test_captured_frames_have_the_lrc_the_readme_reports() -> None:
    assert (VOID_AS_CAPTURED[-1], _xor(VOID_AS_CAPTURED[1:-1])) == (0x5D, 0x52)
    assert (SALE_AS_CAPTURED[-1], _xor(SALE_AS_CAPTURED[1:-1])) == (0x43, 0x4C)
    assert lrc(VOID_AS_CAPTURED[1:-1]) == 0x52
    assert lrc(SALE_AS_CAPTURED[1:-1]) == 0x4C


def test_captured_frames_masked_after_checksum_are_rejected_whole_and_counted() -> None:
    events, d = _decode_all(VOID_AS_CAPTURED + SALE_AS_CAPTURED)
    assert events == []
    assert d.stats.bad_frames == 2
    assert d.stats.frames == 0
    assert d.stats.bytes_skipped == len(VOID_AS_CAPTURED) + len(SALE_AS_CAPTURED)
    assert d.stats.last_error is not None and "LRC" in d.stats.last_error
    assert "stored 43, computed 4c" in d.stats.last_error


def test_void_with_recomputed_lrc_decodes_every_captured_value() -> None:
    events, d = _decode_all(VOID)
    assert events == [EXPECTED_VOID]
    assert (d.stats.frames, d.stats.events, d.stats.bad_frames, d.stats.bytes_skipped) == (1, 1, 0, 0)


def test_sale_with_recomputed_lrc_decodes_every_captured_value() -> None:
    events, d = _decode_all(SALE)
    assert events == [EXPECTED_SALE]
    assert (d.stats.frames, d.stats.events, d.stats.bad_frames, d.stats.bytes_skipped) == (1, 1, 0, 0)


def test_verify_lrc_off_decodes_captured_frames_as_they_are() -> None:
    events, d = _decode_all(SALE_AS_CAPTURED + VOID_AS_CAPTURED, verify_lrc=False)
    assert events == [EXPECTED_SALE, EXPECTED_VOID]
    assert d.stats.bad_frames == 0


def test_the_void_points_at_the_sale_it_reverses() -> None:
    sale, void = _decode_all(SALE + VOID)[0]
    assert isinstance(sale, Transaction) and isinstance(void, Transaction)
    assert void.original_voucher_no == sale.voucher_no == "000005"
    assert (void.terminal_id, void.batch_no, void.amount_minor) == (sale.terminal_id, sale.batch_no, 20)
    assert void.time is not None and sale.time is not None and void.time - sale.time == timedelta(seconds=99)


def test_receipt_fields_without_an_event_slot_are_decoded_too() -> None:
    void = parse_body(VOID[3:-2])
    sale = parse_body(SALE[3:-2])
    assert void.merchant_name == sale.merchant_name == "乌兰浩特市维多利超市有限"
    assert void.merchant_name_en == "WDL"
    assert void.card_name == "银联卡"
    assert (void.desk_no, void.operator) == ("0019", "811615")
    assert (void.packet_type, void.tran_code, void.random, void.response_code) == ("02", "46", "4313", "00")
    assert (sale.tran_code, sale.random) == ("45", "2954")
    assert void.amount == Amount(20, True, "CNY")
    assert sale.amount == Amount(20, False, "CNY")
    assert (void.date_mmdd, void.time_hhmmss, sale.time_hhmmss) == ("0911", "154352", "154213")
    assert (void.entry_mode_code, sale.entry_mode_code) == ("0000", "0040")
    assert void.card_type_code == "11"
    assert (void.order_no, sale.order_no) == (None, "25190911565349358181")


def test_asserted_values_match_the_vectors_file() -> None:
    with (DATA / "vectors.tsv").open(newline="", encoding="utf-8") as fh:
        rows = {row["file"]: row["description"] for row in csv.DictReader(fh, delimiter="\t")}
    void_text = rows["ingposcom_l164_void_response_frame.hex"]
    sale_text = rows["ingposcom_l165_sale_response_frame.hex"]
    for value in ('"130911"', '"15221155"', '"104152253311021"', '"811615    "', "乌兰浩特市维多利超市有限"):
        assert value in void_text
    assert "same DF46/DF47/DF11/DF12/DF13/DF44/DF45 as l164" in sale_text
    for text in (void_text, sale_text):
        for value in ('"925498334778"', '"0911"', '"    银联卡"', '"************84"', "DF07 \"00\""):
            assert value in text
    assert '"RMB -0.20"' in void_text and "DF0A 00 00 66" in void_text and "DF10 00 00 06" in void_text
    assert "DF18 00 00 05" in void_text and '"154352"' in void_text and "LRC 5d" in void_text
    assert '"RMB  0.20"' in sale_text and "DF0A 00 00 65" in sale_text and "DF10 00 00 05" in sale_text
    assert '"154213"' in sale_text and "LRC 43" in sale_text
    assert len(VOID_AS_CAPTURED) == 267 and len(SALE_AS_CAPTURED) == 285


def test_ack_before_the_frame_is_protocol_not_garbage() -> None:
    events, d = _decode_all(b"\x06" + SALE + b"\x06\x15" + VOID)
    assert events == [EXPECTED_SALE, EXPECTED_VOID]
    assert d.stats.bytes_skipped == 0
    assert d.stats.counters == {"ack": 2, "nak": 1}


def test_registry_builds_this_decoder_and_sniff_recognises_the_frames() -> None:
    d = build_decoder("cn_ecr", tz=SHANGHAI, options={"verify_lrc": False})
    assert isinstance(d.inner, CnEcrDecoder)
    assert d.feed(SALE_AS_CAPTURED, RECEIVED) == [EXPECTED_SALE]
    assert sniff(VOID) == "cn_ecr"
    assert sniff(b"\x06" + SALE) == "cn_ecr"


def test_year_comes_from_the_receive_time() -> None:
    d = _decoder()
    (event,) = d.feed(SALE, datetime(2026, 9, 12, 9, 0, tzinfo=SHANGHAI))
    assert event.time == datetime(2026, 9, 11, 15, 42, 13, tzinfo=SHANGHAI)


def test_without_receive_time_the_reference_option_places_the_timestamp() -> None:
    d = _decoder(reference=datetime(2024, 10, 1, tzinfo=SHANGHAI))
    (event,) = d.feed(SALE)
    assert event.time == datetime(2024, 9, 11, 15, 42, 13, tzinfo=SHANGHAI)


def test_without_receive_time_or_reference_the_time_is_unknown_not_guessed() -> None:
    (event,) = _decoder().feed(SALE)
    assert isinstance(event, Transaction) and event.time is None


def test_an_impossible_terminal_date_gives_no_time_instead_of_an_error() -> None:
    frame = _response("45", [(0xDF03, b"RMB  1.00"), (0xDF1C, b"0230"), (0xDF1D, b"120000")])
    (event,) = _decoder().feed(frame, RECEIVED)
    assert isinstance(event, Transaction) and event.time is None


def test_full_card_number_is_masked_before_the_event_is_built() -> None:
    pan = _luhn_pan("622576000000669")
    frame = _response("45", [(0xDF03, b"RMB 12.00"), (0xDF1E, pan.encode()),
                             (0xDF45, f"测试 {pan}".encode("gb18030"))])
    (event,) = _decoder().feed(frame, RECEIVED)
    assert isinstance(event, Transaction)
    assert event.card == pan[:6] + "*" * (len(pan) - 10) + pan[-4:]
    assert not contains_full_pan(event_to_json(event))
    result = parse_body(frame[3:-2])
    assert not contains_full_pan(repr(result))


def test_declined_response_is_reported_as_declined() -> None:
    frame = _response("45", [(0xDF03, b"RMB 99.00"), (0xDF10, b"\x00\x00\x07")], code=b"51")
    (event,) = _decoder().feed(frame, RECEIVED)
    assert isinstance(event, Transaction)
    assert (event.kind, event.result, event.amount_minor) == ("sale", "declined", 9900)
    assert event.voucher_no == "000007"


@pytest.mark.parametrize("code", [b"00", b"Y1", b"Y2", b"Y3"])
def test_host_and_offline_approval_codes_count_as_approved(code: bytes) -> None:
    (event,) = _decoder().feed(_response("45", [(0xDF03, b"RMB  1.00")], code=code), RECEIVED)
    assert isinstance(event, Transaction) and event.result == "approved"


def test_terminal_error_code_in_bcd_is_a_decline() -> None:
    frame = _response("45", [(0xDF03, b"RMB  1.00")], code=b"\x00\x00\x00\x02")
    assert parse_body(frame[3:-2]).response_code == "00000002"
    (event,) = _decoder().feed(frame, RECEIVED)
    assert isinstance(event, Transaction) and event.result == "declined"


def test_request_from_the_till_carries_no_result_and_is_ignored() -> None:
    request = _frame((0xDF01, b"\x00"), (0xDF02, b"\x45"), (0xDF03, encode_bcd("000000000020", 6)),
                     (0xDF04, b"\x43\x13"))
    events, d = _decode_all(request)
    assert events == []
    assert (d.stats.frames, d.stats.ignored_frames, d.stats.counters) == (1, 1, {"requests": 1})


def test_iso8583_packet_for_the_host_is_never_opened() -> None:
    # DF06 holds an ISO 8583 message here, not TLVs: it must not be parsed (nor fail).
    frame = _frame((0xDF01, b"\x01"), (0xDF02, b"\x45"), (0xDF06, b"\x02\x00\x70\x24\x05\x80"))
    events, d = _decode_all(frame)
    assert events == []
    assert d.stats.bad_frames == 0 and d.stats.counters == {"host_messages": 1}


def test_unmapped_transaction_type_is_counted_not_guessed() -> None:
    events, d = _decode_all(_response("99", [(0xDF03, b"RMB  5.00")]))
    assert events == []
    assert d.stats.counters == {"unmapped_type": 1}
    assert d.stats.last_error is not None and "'99'" in d.stats.last_error


def test_type_map_option_replaces_the_assumed_codes() -> None:
    frame = _response("02", [(0xDF03, b"RMB -3.00"), (0xDF18, b"\x00\x00\x09")])
    assert _decode_all(frame)[0] == []
    (event,) = _decode_all(frame, type_map={"02": "refund"})[0]
    assert isinstance(event, Transaction)
    assert (event.kind, event.amount_minor, event.original_voucher_no) == ("refund", 300, "000009")


def test_default_type_map_keeps_the_two_confirmed_codes() -> None:
    assert DEFAULT_TYPE_MAP["45"] == "sale" and DEFAULT_TYPE_MAP["46"] == "void"
    wanted = {"refund", "preauth", "preauth_complete", "balance", "settlement"}
    assert wanted <= set(DEFAULT_TYPE_MAP.values())


def test_balance_inquiry_moves_no_money() -> None:
    (event,) = _decoder().feed(_response("48", [(0xDF03, b"RMB 8888.00")]), RECEIVED)
    assert isinstance(event, Transaction) and (event.kind, event.amount_minor) == ("balance", 0)


def test_response_without_amount_yields_no_transaction() -> None:
    events, d = _decode_all(_response("45", [(0xDF10, b"\x00\x00\x01")]))
    assert events == [] and d.stats.counters == {"no_amount": 1}


@pytest.mark.parametrize(("df2f", "mode"), [
    (b"\x00\x51", "chip"), (b"\x00\x21", "swipe"), (b"\x00\x71", "contactless"),
    (b"\x09\x81", "contactless"), (b"\x00\x12", "manual"), (b"\x00\x00", None), (b"\x00\x40", None),
])
def test_entry_mode_follows_iso8583_field_22(df2f: bytes, mode: str | None) -> None:
    (event,) = _decoder().feed(_response("45", [(0xDF03, b"RMB  1.00"), (0xDF2F, df2f)]), RECEIVED)
    assert isinstance(event, Transaction) and event.entry_mode == mode
    assert entry_mode(df2f.hex()) == mode


def test_card_type_falls_back_to_the_code_when_no_name_is_sent() -> None:
    (event,) = _decoder().feed(_response("45", [(0xDF03, b"RMB  1.00"), (0xDF21, b"\x02")]), RECEIVED)
    assert isinstance(event, Transaction) and event.card_type == "02"


@pytest.mark.parametrize(("raw", "expected"), [
    (b"RMB -0.20", Amount(20, True, "CNY")),
    (b"RMB  0.20", Amount(20, False, "CNY")),
    (b"RMB 1,280.00", Amount(128000, False, "CNY")),
    (b"RMB 5", Amount(500, False, "CNY")),
    (b"HKD 1.5", Amount(150, False, "HKD")),
    (b"000000012800", Amount(12800, False, None)),
    (b"\x00\x00\x00\x01\x28\x00", Amount(12800, False, None)),
    (b"RMB 0.2O", None),
    (b"\x00\x00\x00\x01\x2a\x00", None),
    (b"", None),
    (b"9999999999999", None),
])
def test_amount_forms(raw: bytes, expected: Amount | None) -> None:
    assert parse_amount_field(raw) == expected


def test_settlement_total_is_sales_minus_returns() -> None:
    frame = encode_response(EcrResult(
        packet_type="02", tran_code="51", random="0001", response_code="00",
        terminal_id="15221155", merchant_id="104152253311021", batch_no="130911",
        date_mmdd="0911", time_hhmmss="230000",
        debit_amount_minor=1_234_500, debit_count=42, credit_amount_minor=20, credit_count=1,
    ))
    (event,) = _decode_all(frame)[0]
    assert event == Settlement(
        source="cn_ecr", time=datetime(2019, 9, 11, 23, 0, tzinfo=SHANGHAI), terminal_id="15221155",
        merchant_id="104152253311021", batch_no="130911", count=43, total_minor=1_234_480,
        currency="CNY", balanced=None,
    )


def test_settlement_without_overall_totals_sums_the_schemes() -> None:
    frame = encode_response(EcrResult(
        packet_type="02", tran_code="51", random="0001", response_code="00", batch_no="000007",
        scheme_totals=(SchemeTotals("unionpay", 10_000, 3, 500, 1),
                       SchemeTotals("visa", 2_000, 1, None, None)),
    ))
    assert bytes.fromhex("df4806") in frame and bytes.fromhex("df5006") in frame
    (event,) = _decode_all(frame)[0]
    assert isinstance(event, Settlement)
    assert (event.count, event.total_minor, event.batch_no, event.time) == (5, 11_500, "000007", None)


def test_refused_settlement_leaves_the_batch_open() -> None:
    frame = encode_response(EcrResult(packet_type="02", tran_code="51", random="0001", response_code="96",
                                      debit_amount_minor=100, debit_count=1))
    events, d = _decode_all(frame)
    assert events == [] and d.stats.counters == {"settlement_declined": 1}


def test_statistics_totals_are_not_a_settlement() -> None:
    frame = encode_response(EcrResult(packet_type="02", tran_code="50", random="0001", response_code="00",
                                      debit_amount_minor=100, debit_count=1))
    events, d = _decode_all(frame)
    assert events == [] and d.stats.counters == {"ignored_type": 1}


@PROPERTY
@given(results=st.lists(_results, min_size=1, max_size=8),
       received=st.sampled_from([RECEIVED, datetime(2027, 1, 1, 0, 30, tzinfo=SHANGHAI), None]))
def test_events_carry_exactly_what_parse_body_reads_from_the_same_frames(
        results: list[EcrResult], received: datetime | None) -> None:
    frames = [encode_response(r) for r in results]
    # One decoder for the whole stream: nothing one frame decoded may leak into the next.
    d = _decoder()
    events = d.feed(b"".join(frames), received)
    expected = [e for e in (_expected_event(parse_body(f[3:-2]), received) for f in frames) if e is not None]
    assert events == expected
    assert not any(contains_full_pan(event_to_json(e)) for e in events)


def test_the_same_field_is_read_afresh_when_the_terminal_changes_it() -> None:
    first = _response("45", [(0xDF03, b"RMB  1.00"), (0xDF47, b"01"), (0xDF2C, "银联卡".encode("gb18030"))])
    second = _response("45", [(0xDF03, b"RMB  2.00"), (0xDF47, b"02"), (0xDF2C, "借记卡".encode("gb18030"))])
    events = _decode_all(first + second + first)[0]
    assert [(e.amount_minor, e.operator, e.card_type) for e in events if isinstance(e, Transaction)] == [
        (100, "01", "银联卡"), (200, "02", "借记卡"), (100, "01", "银联卡")]


def test_decoder_keeps_no_card_number_once_the_frames_are_decoded() -> None:
    pan = _PAN.encode()
    frame = _response("45", [(0xDF03, b"RMB 12.00"), (0xDF1E, pan), (0xDF47, pan),
                             (0xDF2C, b"CARD " + pan), (0xDF12, pan)])
    d = _decoder()
    (event,) = d.feed(frame + SALE, RECEIVED)[:1]
    assert isinstance(event, Transaction) and event.operator is not None and _PAN not in event.operator
    held = _reachable_bytes(d)
    assert any(b"RMB" in raw for raw in held)  # the walk does reach the remembered values
    assert not any(pan in raw for raw in held)


def test_remembered_field_values_stay_bounded_on_a_terminal_that_never_repeats() -> None:
    frames = b"".join(_response("45", [(0xDF03, f"RMB {i}.00".encode()), (0xDF47, f"{i:06d}".encode()),
                                       (0xDF12, f"T{i:07d}".encode()), (0xDF11, f"{i:06d}".encode())])
                      for i in range(700))
    d = _decoder()
    events = d.feed(frames, RECEIVED)
    assert [e.operator for e in events if isinstance(e, Transaction)] == [f"{i:06d}" for i in range(700)]
    sizes = [len(v) for v in vars(d).values() if isinstance(v, dict)]
    assert sizes and max(sizes) <= 256


@PROPERTY
@given(data=st.one_of(st.binary(max_size=40),
                      st.tuples(st.integers(0, len(VOID) - 6), st.integers(0, 255)).map(
                          lambda t: VOID[3:t[0] + 3] + bytes((t[1],)) + VOID[t[0] + 4:-2])))
def test_parse_body_accepts_and_refuses_exactly_what_parse_tlv_does(data: bytes) -> None:
    try:
        pairs = parse_df_tlv(data)
    except TlvError as exc:
        with pytest.raises(TlvError, match=f"^{re.escape(str(exc))}$"):
            parse_body(data)
        return
    top = dict(pairs)
    packet_type = top.get(0xDF01, b"")
    # DF01 says "01" (ISO 8583 for the host, never opened) in BCD or in ASCII.
    for_the_host = packet_type == b"\x01" or packet_type.strip(b" ") == b"01"
    if top.get(0xDF06) is not None and not for_the_host:
        try:
            parse_df_tlv(top[0xDF06])
        except TlvError as exc:
            with pytest.raises(TlvError, match=f"^{re.escape(str(exc))}$"):
                parse_body(data)
            return
    assert isinstance(parse_body(data), EcrResult)
