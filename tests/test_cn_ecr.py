"""The UnionPay-style ECR ("MIS") decoder, on the two frames captured from a real terminal.

The captured frames had their card number masked *after* the LRC was
computed, so their stored LRC is wrong (README: off by XOR 0x0F). The tests
show both sides: the decoder rejects them as they are, decodes them fully
once the LRC is recomputed, and decodes them as-is with ``verify_lrc=False``.
"""

from __future__ import annotations

import csv
import re
from datetime import datetime, timedelta
from functools import reduce
from itertools import pairwise
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drivers.events import Settlement, Transaction, event_to_json
from drivers.pan import contains_full_pan, luhn_valid
from drivers.protocols import build_decoder, sniff
from drivers.protocols.cn_ecr import (
    DEFAULT_TYPE_MAP,
    Amount,
    CnEcrDecoder,
    EcrResult,
    SchemeTotals,
    TlvError,
    encode_bcd,
    encode_frame,
    encode_response,
    encode_tlv,
    entry_mode,
    lrc,
    parse_amount_field,
    parse_body,
    parse_df_tlv,
)
from drivers.timeutil import infer_datetime

DATA = Path(__file__).parent / "data" / "cn-ecr"
SHANGHAI = ZoneInfo("Asia/Shanghai")
# The sale's DF69 QR voucher number starts 2519091115..., i.e. 2019-09-11:
# receive the frames a few minutes after the terminal printed them.
RECEIVED = datetime(2019, 9, 11, 15, 45, tzinfo=SHANGHAI)


def _load(name: str) -> bytes:
    return bytes.fromhex((DATA / name).read_text())


VOID_AS_CAPTURED = _load("ingposcom_l164_void_response_frame.hex")
SALE_AS_CAPTURED = _load("ingposcom_l165_sale_response_frame.hex")


def _xor(data: bytes) -> int:
    return reduce(lambda a, b: a ^ b, data, 0)


def _with_lrc_fixed(frame: bytes) -> bytes:
    """Recompute the LRC over LEN..ETX (the vendor's rule) and patch the last byte."""
    return frame[:-1] + bytes((_xor(frame[1:-1]),))


VOID = _with_lrc_fixed(VOID_AS_CAPTURED)
SALE = _with_lrc_fixed(SALE_AS_CAPTURED)

EXPECTED_SALE = Transaction(
    source="cn_ecr", kind="sale", result="approved", amount_minor=20, currency="CNY",
    time=datetime(2019, 9, 11, 15, 42, 13, tzinfo=SHANGHAI),
    terminal_id="15221155", merchant_id="104152253311021", batch_no="130911",
    voucher_no="000005", trace_no="000065", original_voucher_no=None, receipt_no=None,
    rrn="925498334778", original_rrn=None, auth_code=None,   # DF1B is six spaces
    card="************84", card_type="银联卡", entry_mode=None, operator="811615",
)
EXPECTED_VOID = EXPECTED_SALE.with_(
    kind="void", voucher_no="000006", trace_no="000066", original_voucher_no="000005",
    time=datetime(2019, 9, 11, 15, 43, 52, tzinfo=SHANGHAI),
)


def _decoder(**options: object) -> CnEcrDecoder:
    return CnEcrDecoder(tz=SHANGHAI, **options)  # type: ignore[arg-type]


def _decode_all(stream: bytes, **options: object) -> tuple[list[object], CnEcrDecoder]:
    d = _decoder(**options)
    events: list[object] = [*d.feed(stream, RECEIVED), *d.flush(RECEIVED)]
    return events, d


def _frame(*tlvs: tuple[int, bytes], **frame_options: object) -> bytes:
    return encode_frame(b"".join(encode_tlv(t, v) for t, v in tlvs), **frame_options)  # type: ignore[arg-type]


def _response(tran_code: str, inner: list[tuple[int, bytes]], code: bytes = b"00",
              packet_type: str = "02") -> bytes:
    """A response built tag by tag (independently of encode_response)."""
    container = b"".join(encode_tlv(t, v) for t, v in inner)
    return _frame((0xDF01, bytes.fromhex(packet_type)), (0xDF02, bytes.fromhex(tran_code)),
                  (0xDF04, b"\x12\x34"), (0xDF06, container), (0xDF07, code))


def _luhn_pan(prefix: str) -> str:
    for check in "0123456789":
        if luhn_valid(prefix + check):
            return prefix + check
    raise AssertionError("unreachable")


# --------------------------------------------------------------------------
# The captured frames
# --------------------------------------------------------------------------

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
    assert isinstance(d, CnEcrDecoder)
    assert d.feed(SALE_AS_CAPTURED, RECEIVED) == [EXPECTED_SALE]
    assert sniff(VOID) == "cn_ecr"
    assert sniff(b"\x06" + SALE) == "cn_ecr"


# --------------------------------------------------------------------------
# Time
# --------------------------------------------------------------------------

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


# --------------------------------------------------------------------------
# Mapping to events
# --------------------------------------------------------------------------

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


# --------------------------------------------------------------------------
# Encoding helpers (the simulator's side)
# --------------------------------------------------------------------------

ROUND_TRIP_CASES = [
    parse_body(VOID[3:-2]),
    parse_body(SALE[3:-2]),
    EcrResult(packet_type="02", tran_code="47", random="7777", response_code="00",
              amount=Amount(128_000, True, "CNY"), trace_no="000123", voucher_no="000124",
              original_trace_no="000100", batch_no="000001", terminal_id="T1", merchant_id="M1",
              rrn="123456789012", auth_code="A1B2C3", date_mmdd="1231", time_hhmmss="235959",
              card="622576******6691", card_type_code="01", card_name="借记卡", entry_mode_code="0051",
              operator="01"),
    EcrResult(packet_type="02", tran_code="51", random="0000", response_code="Y1",
              debit_amount_minor=5, debit_count=999_999, credit_amount_minor=0, credit_count=0,
              scheme_totals=(SchemeTotals("jcb", 1, 2, 3, 4),)),
]


@pytest.mark.parametrize("result", ROUND_TRIP_CASES)
@pytest.mark.parametrize(("lrc_init", "covers"), [(0x00, "len_to_etx"), (0x7F, "body_to_etx"),
                                                  (0x7F, "stx_to_etx")])
def test_encode_response_round_trips_through_the_decoder(result: EcrResult, lrc_init: int,
                                                        covers: str) -> None:
    frame = encode_response(result, lrc_init=lrc_init, lrc_covers=covers, ack=True)  # type: ignore[arg-type]
    assert frame[0] == 0x06 and frame[1] == 0x02
    assert parse_body(frame[4:-2]) == result
    events, d = _decode_all(frame, lrc_init=lrc_init, lrc_covers=covers)
    assert len(events) == 1 and d.stats.bad_frames == 0


def test_encoded_sale_matches_the_captured_bytes() -> None:
    assert encode_response(parse_body(SALE[3:-2])).count(b"RMB  0.20") == 1
    void = encode_response(parse_body(VOID[3:-2]))
    body_len = int(void[1:3].hex())
    assert len(void) == body_len + 5 and void[-2] == 0x03 and void[-1] == _xor(void[1:-1])


def test_lrc_variant_of_another_vendor_is_rejected_unless_configured() -> None:
    frame = encode_response(ROUND_TRIP_CASES[2], lrc_init=0x7F)
    assert _decode_all(frame)[1].stats.bad_frames == 1
    assert len(_decode_all(frame, lrc_init=0x7F)[0]) == 1


def test_long_tlv_length_forms() -> None:
    assert parse_df_tlv(b"\xdf\x06\x81\x02ab\xdf\x07\x82\x00\x01c") == [(0xDF06, b"ab"), (0xDF07, b"c")]
    assert encode_tlv(0xDF45, b"x" * 200)[:4] == b"\xdf\x45\x81\xc8"
    assert encode_tlv(0xDF45, b"x" * 300)[:5] == b"\xdf\x45\x82\x01\x2c"
    for broken in (b"\xdf\x06\x83\x00\x00\x01", b"\x9f\x06\x01a", b"\xdf\x06\x05abc", b"\xdf\x06"):
        with pytest.raises(TlvError):
            parse_df_tlv(broken)


# --------------------------------------------------------------------------
# Framing: garbage, resync, caps
# --------------------------------------------------------------------------

def test_garbage_before_between_and_after_frames_is_skipped_and_counted() -> None:
    junk1, junk2, junk3 = b"\xff\x00hello\x02\x99", b"\x02\x00\x05\xdf", b"\x02\x02"
    events, d = _decode_all(junk1 + SALE + junk2 + VOID + junk3)
    assert events == [EXPECTED_SALE, EXPECTED_VOID]
    assert d.stats.bytes_skipped == len(junk1) + len(junk2) + len(junk3)
    assert d.buffered == 0


def test_length_beyond_max_body_is_garbage_and_the_hunt_resumes() -> None:
    events, d = _decode_all(b"\x02\x99\x99\xdf\x01" + SALE, max_body=1024)
    assert events == [EXPECTED_SALE] and d.stats.bytes_skipped == 5
    # A frame bigger than the configured cap is not a frame at all.
    events, d = _decode_all(SALE, max_body=200)
    assert events == [] and d.stats.bytes_skipped == len(SALE)
    assert d.stats.bad_frames == 1 and d.stats.counters == {}


def test_corrupted_length_cannot_swallow_the_next_frame() -> None:
    longer = VOID[:1] + b"\x04\x00" + VOID[3:]      # claims 400 bytes: would reach into the sale
    shorter = VOID[:1] + b"\x01\x00" + VOID[3:]     # claims 100 bytes: ends inside a TLV
    for bad in (longer, shorter):
        d = _decoder()
        events = d.feed(bad + SALE, RECEIVED)
        assert events == [EXPECTED_SALE]
        assert d.stats.bad_frames >= 1 and d.buffered == 0


def test_frame_with_bad_lrc_is_skipped_whole_and_the_next_one_survives() -> None:
    bad = VOID[:-1] + bytes((VOID[-1] ^ 0x01,))
    events, d = _decode_all(bad + SALE)
    assert events == [EXPECTED_SALE]
    assert (d.stats.bad_frames, d.stats.bytes_skipped) == (1, len(bad))


def test_broken_container_is_a_bad_frame_not_an_exception() -> None:
    frame = _frame((0xDF01, b"\x02"), (0xDF02, b"\x45"), (0xDF06, b"\xdf\x03\x09RMB"), (0xDF07, b"00"))
    events, d = _decode_all(frame)
    assert events == [] and d.stats.bad_frames == 1 and d.stats.frames == 0
    assert d.stats.last_error is not None and "DF06" in d.stats.last_error


def test_truncated_frame_waits_then_counts_as_lost_at_end_of_input() -> None:
    d = _decoder()
    assert d.feed(SALE[:-10], RECEIVED) == []
    assert d.buffered == len(SALE) - 10
    assert d.flush(RECEIVED) == []
    assert d.buffered == 0
    assert d.stats.bad_frames == 1 and d.stats.bytes_skipped == len(SALE) - 10


def test_flush_finds_a_whole_frame_hidden_behind_a_stuck_candidate() -> None:
    # A stray STX + plausible length + DF tag whose TLV reaches past what has arrived:
    # only the end of input proves it wrong; the real frame behind it must not be lost.
    stuck = b"\x02\x09\x00\xdf\x01\x82\x03\x00"
    d = _decoder()
    assert d.feed(stuck + SALE, RECEIVED) == []
    assert d.flush(RECEIVED) == [EXPECTED_SALE]
    assert d.stats.bytes_skipped == len(stuck)


def test_bad_options_are_refused_at_construction() -> None:
    for options in ({"lrc_covers": "all"}, {"lrc_init": 256}, {"max_body": 0}, {"max_body": 10_000},
                    {"type_map": {"45": "purchase"}}, {"reference": datetime(2024, 1, 1)}):
        with pytest.raises(ValueError):
            _decoder(**options)


# --------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------

SETTLE = encode_response(ROUND_TRIP_CASES[3])
REFUND = encode_response(ROUND_TRIP_CASES[2])
STREAM = (b"\x00junk\x02\x05" + b"\x06" + SALE + b"\x15" + VOID_AS_CAPTURED + VOID + b"\x02\x01\x00\xdf"
          + REFUND + b"\xff" * 7 + SETTLE + SALE[:50])
PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _stats_tuple(d: CnEcrDecoder) -> tuple[object, ...]:
    s = d.stats
    return (s.bytes_in, s.bytes_skipped, s.frames, s.bad_frames, s.events, s.ignored_frames, s.last_error,
            s.counters)


def _chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    edges = [0, *points, len(data)]
    return [data[a:b] for a, b in pairwise(edges)]


REFERENCE_EVENTS, REFERENCE_DECODER = _decode_all(STREAM)


def test_reference_stream_decodes_what_it_should() -> None:
    kinds = [getattr(e, "kind", "settlement") for e in REFERENCE_EVENTS]
    assert kinds == ["sale", "void", "refund", "settlement"]
    # The captured void (LRC), the frame-shaped junk before the refund, the cut-off sale.
    assert REFERENCE_DECODER.stats.bad_frames == 3


@PROPERTY
@given(cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=40))
def test_any_split_of_the_stream_gives_the_same_events_and_counts(cuts: list[int]) -> None:
    d = _decoder()
    events = []
    for chunk in _chunked(STREAM, cuts):
        events += d.feed(chunk, RECEIVED)
        assert d.buffered <= d.max_frame
    events += d.flush(RECEIVED)
    assert events == REFERENCE_EVENTS
    assert _stats_tuple(d) == _stats_tuple(REFERENCE_DECODER)


@PROPERTY
@given(data=st.binary(max_size=3000), cuts=st.lists(st.integers(min_value=0, max_value=3000), max_size=20),
       max_body=st.sampled_from([16, 300, 1024]), verify=st.booleans())
def test_random_bytes_never_raise_and_never_overfill_the_buffer(data: bytes, cuts: list[int], max_body: int,
                                                                 verify: bool) -> None:
    d = _decoder(max_body=max_body, verify_lrc=verify)
    for chunk in _chunked(data, cuts):
        d.feed(chunk, RECEIVED)
        assert d.buffered <= d.max_frame == max_body + 5
    d.flush(RECEIVED)
    assert d.buffered == 0
    assert d.stats.bytes_in == len(data)


@PROPERTY
@given(data=st.lists(st.sampled_from([b"\x02", b"\xdf", b"\x03", b"\x02\x02\x80", b"\x81", b"\x82\x01",
                                      SALE[:40], VOID[100:160]]), max_size=60))
def test_frame_shaped_noise_never_raises(data: list[bytes]) -> None:
    d = _decoder(verify_lrc=False)
    for chunk in data:
        d.feed(chunk, RECEIVED)
        assert d.buffered <= d.max_frame
    d.flush(RECEIVED)
    assert d.buffered == 0


@PROPERTY
@given(garbage=st.lists(st.binary(max_size=40), min_size=3, max_size=3))
def test_garbage_between_frames_loses_nothing_but_the_garbage(garbage: list[bytes]) -> None:
    # Noise that ends in a partial candidate can only be proved wrong by the next bytes,
    # so every piece is followed by a frame; the frames are what must survive.
    stream = garbage[0] + SALE + garbage[1] + VOID + garbage[2] + REFUND
    events, d = _decode_all(stream)
    kinds = [getattr(e, "kind", None) for e in events]
    assert kinds == ["sale", "void", "refund"]
    assert events[:2] == [EXPECTED_SALE, EXPECTED_VOID]
    protocol_bytes = d.stats.counters.get("ack", 0) + d.stats.counters.get("nak", 0)
    assert d.stats.bytes_skipped + protocol_bytes == sum(map(len, garbage))


@PROPERTY
@given(position=st.integers(min_value=1, max_value=len(VOID) - 1), value=st.integers(0, 255),
       verify=st.booleans())
def test_one_corrupted_byte_costs_at_most_its_own_frame(position: int, value: int, verify: bool) -> None:
    if VOID[position] == value:
        value ^= 0xFF
    corrupted = VOID[:position] + bytes((value,)) + VOID[position + 1:]
    events, _ = _decode_all(corrupted + SALE, verify_lrc=verify)
    assert events[-1] == EXPECTED_SALE
    if verify:
        assert events == [EXPECTED_SALE]


@PROPERTY
@given(length=st.integers(min_value=1, max_value=1024), verify=st.booleans())
def test_any_wrong_length_cannot_swallow_the_next_frame(length: int, verify: bool) -> None:
    if length == len(VOID) - 5:
        length += 1
    bad = VOID[:1] + encode_bcd(f"{length:04d}", 2) + VOID[3:]
    events, _ = _decode_all(bad + SALE, verify_lrc=verify)
    assert events == [EXPECTED_SALE]


# --------------------------------------------------------------------------
# The decoder's own field reading agrees with parse_body
# --------------------------------------------------------------------------
# The decoder does not build an EcrResult per frame: it reads only the
# fields an event carries. The oracle below maps parse_body's result the way
# the class docstring says, so the two paths cannot drift apart unnoticed.

def _expected_event(r: EcrResult, received: datetime | None) -> Transaction | Settlement | None:
    if r.packet_type in ("00", "01"):
        return None
    target = DEFAULT_TYPE_MAP.get(r.tran_code or "")
    if target is None or target == "ignore":
        return None
    approved = r.response_code in ("00", "Y1", "Y2", "Y3")
    when = None
    if received is not None and r.date_mmdd is not None and r.time_hhmmss is not None:
        d, t = r.date_mmdd, r.time_hhmmss
        when = infer_datetime(int(d[:2]), int(d[2:]), int(t[:2]), int(t[2:4]), int(t[4:]),
                              tz=SHANGHAI, received=received)
    currency = (r.amount.currency if r.amount else None) or "CNY"
    if target == "settlement":
        if not approved:
            return None
        rows = [(r.debit_amount_minor, r.debit_count, r.credit_amount_minor, r.credit_count)]
        if all(v is None for v in rows[0]):
            rows = [(s.debit_amount_minor, s.debit_count, s.credit_amount_minor, s.credit_count)
                    for s in r.scheme_totals]
        count = sum((dc or 0) + (cc or 0) for _, dc, _, cc in rows) if rows else None
        total = sum((da or 0) - (ca or 0) for da, _, ca, _ in rows) if rows else None
        return Settlement(source="cn_ecr", time=when, terminal_id=r.terminal_id, merchant_id=r.merchant_id,
                          batch_no=r.batch_no, count=count, total_minor=total, currency=currency, balanced=None)
    if r.amount is None and target != "balance":
        return None
    return Transaction(
        source="cn_ecr", kind=target, result="approved" if approved else "declined",
        amount_minor=0 if target == "balance" or r.amount is None else r.amount.minor, time=when,
        terminal_id=r.terminal_id, merchant_id=r.merchant_id, batch_no=r.batch_no, voucher_no=r.voucher_no,
        trace_no=r.trace_no, rrn=r.rrn, auth_code=r.auth_code, original_voucher_no=r.original_voucher_no,
        currency=currency, card=r.card, card_type=r.card_name or r.card_type_code,
        entry_mode=entry_mode(r.entry_mode_code), operator=r.operator,
    )


_PAN = _luhn_pan("622848918843608")
_digits = st.integers(min_value=0, max_value=999_999).map(lambda n: f"{n:06d}")
_results = st.builds(
    EcrResult,
    packet_type=st.sampled_from(["02", "02", "02", "00", "01", "03"]),
    tran_code=st.sampled_from([*DEFAULT_TYPE_MAP, "99", None]),
    random=st.just("0000"),
    response_code=st.sampled_from(["00", "Y1", "51", "00000002", None]),
    amount=st.none() | st.builds(Amount, st.integers(0, 10**9), st.booleans(), st.sampled_from(["CNY", "HKD"])),
    trace_no=st.none() | _digits, voucher_no=st.none() | _digits, batch_no=st.none() | _digits,
    original_voucher_no=st.none() | _digits,
    terminal_id=st.sampled_from([None, "15221155", "T2"]),
    merchant_id=st.sampled_from([None, "104152253311021", "M"]),
    rrn=st.sampled_from([None, "925498334778"]), auth_code=st.sampled_from([None, "123456"]),
    date_mmdd=st.sampled_from([None, "0911", "0229", "1231", "0101"]),
    time_hhmmss=st.sampled_from([None, "154213", "000000", "235959"]),
    # The full number reaches the wire here on purpose: the decoder must mask it.
    card=st.sampled_from([None, _PAN, "622576******6691"]),
    card_type_code=st.sampled_from([None, "01", "11"]),
    card_name=st.sampled_from([None, "银联卡", "借记卡", f"卡 {_PAN}"]),
    entry_mode_code=st.sampled_from([None, "0051", "0021", "0000"]),
    operator=st.sampled_from([None, "01", "811615", _PAN]),
    debit_amount_minor=st.none() | st.integers(0, 10**9), debit_count=st.none() | st.integers(0, 999),
    scheme_totals=st.sampled_from([(), (SchemeTotals("visa", 100, 1, 20, 1),)]),
)


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


def _reachable_bytes(root: object) -> list[bytes]:
    """Every str (UTF-8 encoded) and bytes reachable from ``root`` through attributes, dicts and sequences."""
    found: list[bytes] = []
    seen: set[int] = set()
    stack = [root]
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, str):
            found.append(obj.encode())
        elif isinstance(obj, (bytes, bytearray)):
            found.append(bytes(obj))
        elif isinstance(obj, dict):
            stack.extend(obj.keys())
            stack.extend(obj.values())
        elif isinstance(obj, (list, tuple, set, frozenset)):
            stack.extend(obj)
        elif hasattr(obj, "__dict__") and type(obj).__module__.startswith("drivers"):
            stack.extend(vars(obj).values())
    return found


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


# --------------------------------------------------------------------------
# Framing on long streams, LRC and TLV fast paths
# --------------------------------------------------------------------------

LONG_STREAM = b"".join(
    b"\x06" + encode_response(r) + junk
    for r, junk in zip(ROUND_TRIP_CASES * 10, [b"", b"\xff\x02", b"\x02\x00\x05\xdf", b"\x15"] * 10, strict=True)
) + SALE + VOID_AS_CAPTURED + VOID


@pytest.mark.parametrize("chunk", [1, 7, 64, 1029, 1030, 4096, len(LONG_STREAM)])
def test_serial_reads_of_any_size_give_what_one_big_read_gives(chunk: int) -> None:
    whole, reference = _decode_all(LONG_STREAM)
    d = _decoder()
    events: list[object] = []
    for i in range(0, len(LONG_STREAM), chunk):
        events += d.feed(LONG_STREAM[i:i + chunk], RECEIVED)
        assert d.buffered < d.max_frame
    events += d.flush(RECEIVED)
    assert events == whole and len(whole) == 42
    assert _stats_tuple(d) == _stats_tuple(reference)


@PROPERTY
@given(cuts=st.lists(st.integers(min_value=0, max_value=20_000), max_size=12),
       max_body=st.sampled_from([200, 300, 1024]))
def test_a_few_large_reads_split_anywhere_change_nothing(cuts: list[int], max_body: int) -> None:
    whole, reference = _decode_all(LONG_STREAM, max_body=max_body)
    d = _decoder(max_body=max_body)
    events: list[object] = []
    for chunk in _chunked(LONG_STREAM, cuts):
        events += d.feed(chunk, RECEIVED)
        assert d.buffered <= d.max_frame
    events += d.flush(RECEIVED)
    assert events == whole
    assert _stats_tuple(d) == _stats_tuple(reference)


@PROPERTY
@given(data=st.binary(max_size=5000), init=st.integers(0, 255))
def test_lrc_is_the_xor_of_every_byte(data: bytes, init: int) -> None:
    assert lrc(data, init) == _xor(data) ^ init
    assert lrc(memoryview(data), init) == lrc(bytearray(data), init) == lrc(data, init)


def test_lrc_of_a_long_span_needs_masks_beyond_the_table() -> None:
    data = bytes(range(256)) * 40 + b"\x5a"
    assert lrc(data, 0x7F) == _xor(data) ^ 0x7F == 0x5A ^ 0x7F


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


def test_a_good_frame_ends_the_shadow_of_the_broken_candidate_before_it() -> None:
    # The corrupted length claims 999 bytes, so the broken candidate's shadow reaches far past
    # the sale; once the sale decodes, an ACK after it is line traffic again, not lost bytes.
    broken = VOID[:1] + b"\x09\x99" + VOID[3:]
    events, d = _decode_all(broken + SALE + b"\x06" + b"\x02\x09\x99\xdf\x01\x01" + b"\x03" * 5 + VOID)
    assert events == [EXPECTED_SALE, EXPECTED_VOID]
    assert d.stats.counters == {"ack": 1}
    assert d.stats.bad_frames == 2
    assert d.stats.bytes_skipped == len(broken) + 11
