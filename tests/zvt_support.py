"""What the ZVT tests share: the vectors, small decode helpers, reference streams."""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from drivers.events import Event, ReceiptText, Transaction
from drivers.protocols.zvt import (
    ZvtDecoder,
    crc_kermit,
    encode_status,
    frame_serial,
)

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


FRAME_VECTORS = sorted(n for n in all_vectors() if "_frame" in n)


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


SERIAL_FRAMES = [frame_serial(a) for a in REAL_APDUS]


STATUS_APDUS = [apdu for apdu in REAL_APDUS if apdu[:2] == b"\x04\x0f"]


def _data_of(apdu: bytes) -> bytes:
    return apdu[5:] if apdu[2] == 0xFF else apdu[3:]
