"""UnionPay-style ECR framing: LRC, garbage and resync, caps, chunking, random bytes, long streams."""

from __future__ import annotations

from datetime import datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.protocols.cn_ecr import (
    encode_bcd,
    lrc,
)
from tests.cn_ecr_support import (
    EXPECTED_SALE,
    EXPECTED_VOID,
    LONG_STREAM,
    PROPERTY,
    RECEIVED,
    REFERENCE_DECODER,
    REFERENCE_EVENTS,
    REFUND,
    SALE,
    STREAM,
    VOID,
    _chunked,
    _decode_all,
    _decoder,
    _frame,
    _stats_tuple,
    _xor,
)


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


def test_a_good_frame_ends_the_shadow_of_the_broken_candidate_before_it() -> None:
    # The corrupted length claims 999 bytes, so the broken candidate's shadow reaches far past
    # the sale; once the sale decodes, an ACK after it is line traffic again, not lost bytes.
    broken = VOID[:1] + b"\x09\x99" + VOID[3:]
    events, d = _decode_all(broken + SALE + b"\x06" + b"\x02\x09\x99\xdf\x01\x01" + b"\x03" * 5 + VOID)
    assert events == [EXPECTED_SALE, EXPECTED_VOID]
    assert d.stats.counters == {"ack": 1}
    assert d.stats.bad_frames == 2
    assert d.stats.bytes_skipped == len(broken) + 11
