"""The benchmark inputs named in issue 9, built once from test data and the simulator."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from functools import cache
from zoneinfo import ZoneInfo

from agent.sim.day import SimEvent, build_day
from agent.sim.terminal import encode_day
from bench.common import TESTDATA
from drivers.protocols.zvt import frame_serial

SHANGHAI = ZoneInfo("Asia/Shanghai")
FIRST_DAY = date(2026, 1, 5)
# The receive time handed to decoders fed a stream of their own (throughput benchmarks): within the
# simulated month, as a live line's receive time is within seconds of the terminal's clock.
RECEIVED = datetime(2026, 1, 20, 12, 0, tzinfo=UTC)


def sim_end(days: int) -> datetime:
    """When a capture of ``days`` simulated days ended: the reference replay places its year-less times
    back from (agent/replay.py: a capture's own timeline), as a file's mtime is for a real capture."""
    return datetime.combine(FIRST_DAY + timedelta(days=days), datetime.min.time(), SHANGHAI).astimezone(UTC)

ZVT_STATUS_FILE = "zvt/ecrterm_040f_status_girocard_40eur.hex"
ESCPOS_RECEIPT_FILE = "escpos/receipt-with-logo.bin"


def zvt_status_apdu() -> bytes:
    return bytes.fromhex((TESTDATA / ZVT_STATUS_FILE).read_text())


@cache
def zvt_apdu_stream(copies: int = 20_000) -> bytes:
    """The status-information APDU back to back, as the TCP transport carries it."""
    return zvt_status_apdu() * copies


@cache
def zvt_serial_stream(copies: int = 20_000) -> bytes:
    """The same APDU DLE-framed with CRC, as the RS-232 transport carries it."""
    return frame_serial(zvt_status_apdu()) * copies


@cache
def escpos_stream(copies: int = 100) -> bytes:
    """receipt-with-logo.bin (9,579 bytes) repeated: 957,900 bytes, as in the issue."""
    return (TESTDATA / ESCPOS_RECEIPT_FILE).read_bytes() * copies


def _one_day(index: int, per_day: int) -> list[SimEvent]:
    """One day with its own batch number: vouchers restart every day, so days must not share a batch."""
    events = build_day("clean", seed=index + 1, day=FIRST_DAY + timedelta(days=index), tz=SHANGHAI,
                       count=per_day)
    batch = f"{index + 1:06d}"
    return [replace(e, event=replace(e.event, batch_no=batch)) for e in events]


@cache
def sim_days(days: int, per_day: int = 300) -> tuple[list[SimEvent], ...]:
    return tuple(_one_day(i, per_day) for i in range(days))


@cache
def sim_stream(protocol: str, days: int = 30, per_day: int = 300) -> bytes:
    """``days`` simulated shop days (``per_day`` sales plus reprints and a settlement each) on the wire."""
    return b"".join(encode_day(protocol, day) for day in sim_days(days, per_day))
