"""A capture file as a byte source."""

from __future__ import annotations

import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.clock import ManualClock
from drivers.transports import DeviceGone, EndOfStream, FileSource, Supervisor
from tests.transport_support import (
    DATA,
    FAST,
    RECEIPT_WITH_LOGO,
    WAIT,
    Recorder,
)


def test_capture_file_is_read_once_then_the_reader_ends_with_a_flush() -> None:
    fixed = datetime(2026, 11, 27, 14, 3, tzinfo=UTC)
    rec = Recorder()
    source = FileSource(DATA / "receipt-with-logo.bin", chunk_size=1000)
    sup = Supervisor(source, rec.on_bytes, rec.on_state, clock=ManualClock(fixed), **FAST)
    sup.start()
    sup.join(WAIT)
    assert not sup.is_alive(), "a finished file ends the reader without stop()"
    assert rec.state_names == ["opening", "open", "ended"]
    assert rec.jobs == [RECEIPT_WITH_LOGO]
    assert all(len(d) <= 1000 for d, _, _ in rec.chunks)
    assert {r for _, r, _ in rec.chunks} == {fixed}


def test_missing_capture_file_is_device_gone_not_a_crash(tmp_path: Path) -> None:
    source = FileSource(tmp_path / "nope.bin")
    with pytest.raises(DeviceGone, match=r"nope\.bin"):
        source.open()


@settings(max_examples=40, deadline=None)
@given(data=st.binary(max_size=3000), chunk_size=st.integers(1, 700))
def test_capture_file_reads_back_unchanged_in_chunks_no_larger_than_asked(
        data: bytes, chunk_size: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "capture.bin")
        with open(path, "wb") as fh:
            fh.write(data)
        source = FileSource(path, chunk_size=chunk_size)
        source.open()
        got = bytearray()
        try:
            while True:
                try:
                    chunk = source.read(0.0)
                except EndOfStream:
                    break
                assert 0 < len(chunk) <= chunk_size
                got += chunk
        finally:
            source.close()
        assert bytes(got) == data
