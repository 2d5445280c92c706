"""ZVT (the German ECR <-> payment-terminal protocol), passive decoder: bytes in, events out; never transmits.

* :mod:`.framing` -- bytes -> APDUs: RS-232 DLE/CRC frames, bare TCP APDUs, and auto-detection.
* :mod:`.apdu` -- APDU contents: BMPs, the BER-TLV container, field values.
* :mod:`.interpret` -- APDUs -> events (:class:`ZvtDecoder`), receipts assembled from print lines.
* :mod:`.encode` -- what a terminal sends, for the simulator and round-trip tests.
"""

from __future__ import annotations

from drivers.protocols.zvt.apdu import (
    ALPHA_CURRENCY,
    MAX_LAYOUT_BMPS,
    MAX_LAYOUTS,
    NUMERIC_CURRENCY,
    Bmps,
    decode_text,
    parse_ber_tlv,
    parse_bmps,
)
from drivers.protocols.zvt.encode import (
    POSITIVE_ACK,
    encode_apdu,
    encode_end_of_day,
    encode_print_lines,
    encode_reversal_command,
    encode_status,
)
from drivers.protocols.zvt.framing import MAX_APDU_DATA, Apdu, Transport, ZvtFramer, crc_kermit, frame_serial
from drivers.protocols.zvt.interpret import ZvtDecoder

__all__ = [
    "ALPHA_CURRENCY", "MAX_APDU_DATA", "MAX_LAYOUTS", "MAX_LAYOUT_BMPS", "NUMERIC_CURRENCY", "POSITIVE_ACK", "Apdu",
    "Bmps", "Transport", "ZvtDecoder", "ZvtFramer", "crc_kermit", "decode_text", "encode_apdu", "encode_end_of_day",
    "encode_print_lines", "encode_reversal_command", "encode_status", "frame_serial", "parse_ber_tlv", "parse_bmps",
]
