"""ZVT framing: serial DLE/CRC frames, bare APDUs, length anomalies, resync, chunking and random bytes."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drivers.events import Transaction
from drivers.protocols import build_decoder, sniff
from drivers.protocols.zvt import (
    ZvtDecoder,
    crc_kermit,
    frame_serial,
)
from drivers.protocols.zvt.framing import _crc_kermit_etx
from tests.zvt_support import (
    BERLIN,
    FRAME_VECTORS,
    RAW_STREAM,
    REAL_APDUS,
    RECEIVED,
    SERIAL_FRAMES,
    SERIAL_STREAM,
    _status_with_crc_byte,
    decode,
    feed_in_pieces,
    kinds,
    vector,
)


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


def test_frame_serial_sends_a_crc_byte_of_0x10_unstuffed() -> None:
    """The ZVT RS232 block is DLE STX <APDU, DLE doubled> DLE ETX <CRC-L> <CRC-H>: the two CRC bytes follow
    DLE ETX as they are (ecrterm reads exactly two; see frame_serial's docstring for the sources)."""
    apdu = _status_with_crc_byte(0x10)
    crc = crc_kermit(apdu + b"\x03")
    assert 0x10 in (crc & 0xFF, crc >> 8)
    framed = frame_serial(apdu)
    assert framed == b"\x10\x02" + apdu.replace(b"\x10", b"\x10\x10") + b"\x10\x03" + bytes((crc & 0xFF, crc >> 8))
    # Read as ecrterm's serial reader does: unstuff up to DLE ETX, then exactly two CRC bytes. The frame is
    # used up exactly and the CRC checks; with a stuffed CRC byte this reader would leave one byte over.
    data, i = bytearray(), 2
    while True:
        if framed[i] == 0x10:
            if framed[i + 1] == 0x03:
                break
            i += 1
        data.append(framed[i])
        i += 1
    assert bytes(data) == apdu
    assert framed[i + 2:i + 4] == bytes((crc & 0xFF, crc >> 8)) and len(framed) == i + 4


@pytest.mark.parametrize("stuff_crc", [True, False])
def test_crc_byte_equal_to_dle_is_accepted_stuffed_or_not(stuff_crc: bool) -> None:
    apdu = _status_with_crc_byte(0x10)
    framed = frame_serial(apdu)                 # the specification's form: CRC bytes as they are
    if stuff_crc:                               # a lenient sender's form: a CRC byte 0x10 doubled
        etx = framed.rindex(b"\x10\x03", 0, len(framed) - 2)
        crc = crc_kermit(apdu + b"\x03")
        framed = framed[:etx + 2] + bytes((crc & 0xFF, crc >> 8)).replace(b"\x10", b"\x10\x10")
        assert framed.count(b"\x10") > frame_serial(apdu).count(b"\x10")
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
    assert isinstance(decoder.inner, ZvtDecoder)
    assert sniff(vector("ecrterm_frame_040f_status_info")) == "zvt"
    assert sniff(vector("ecrterm_040f_status_girocard_40eur")) == "zvt"
    (txn,) = decoder.feed(vector("ecrterm_frame_040f_status_info"), RECEIVED)
    assert isinstance(txn, Transaction) and txn.source == "terminal"


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


@settings(max_examples=300, deadline=None)
@given(apdu=st.binary(max_size=300))
def test_crc_over_apdu_and_etx_matches_the_reference_crc(apdu: bytes) -> None:
    assert _crc_kermit_etx(apdu) == crc_kermit(apdu + b"\x03")
