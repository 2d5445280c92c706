"""UnionPay-style ECR encoders (the simulator side) round-trip through the decoder."""

from __future__ import annotations

import pytest

from drivers.protocols.cn_ecr import (
    EcrResult,
    TlvError,
    encode_response,
    encode_tlv,
    parse_body,
    parse_df_tlv,
)
from tests.cn_ecr_support import (
    ROUND_TRIP_CASES,
    SALE,
    VOID,
    _decode_all,
    _xor,
)


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
