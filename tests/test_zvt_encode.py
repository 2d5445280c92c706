"""ZVT encoders round-trip through the decoder."""

from __future__ import annotations

from datetime import datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.protocols.zvt import (
    encode_status,
    frame_serial,
    parse_bmps,
)
from tests.zvt_support import (
    BERLIN,
    only_transaction,
)


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
