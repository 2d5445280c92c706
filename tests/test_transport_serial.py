"""The serial transport against real devices: pty pairs, socket:// and loop:// URLs, the simulator's writer."""

from __future__ import annotations

import itertools
import os
import select
import socket
from datetime import UTC
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.transports import DeviceGone, SerialSource, SerialWriter
from tests.helpers import wait_until
from tests.transport_support import (
    MINIMAL,
    RECEIPT,
    RECEIPT_WITH_LOGO,
    WAIT,
    CountingRandom,
    Pty,
    Recorder,
    repoint,
    running,
)


def test_bytes_the_terminal_writes_arrive_through_the_supervisor_with_utc_receive_times(
        ptys: list[Pty]) -> None:
    pty = Pty()
    ptys.append(pty)
    rec = Recorder()
    with running(SerialSource(pty.path, baudrate=9600), rec):
        rec.wait_state("open")
        for start in range(0, len(RECEIPT_WITH_LOGO), 1000):
            pty.write(RECEIPT_WITH_LOGO[start:start + 1000])
        rec.wait_for(lambda: rec.data == RECEIPT_WITH_LOGO, "the whole stream")
    assert all(r.tzinfo is not None and r.utcoffset() == UTC.utcoffset(None) for _, r, _ in rec.chunks)
    assert rec.state_names == ["opening", "open", "closed"]


def test_unplugged_adapter_is_reported_once_and_reopened_behind_the_same_by_id_symlink(
        tmp_path: Path, ptys: list[Pty]) -> None:
    first = Pty()
    ptys.append(first)
    link = tmp_path / "usb-FTDI_FT232R_USB_UART_A5XK3RJT-if00-port0"
    os.symlink(first.path, link)
    rec = Recorder()
    source = SerialSource(str(link))
    with running(source, rec) as sup:
        rec.wait_state("open")
        first.write(b"\x02half a frame")
        rec.wait_for(lambda: rec.data == b"\x02half a frame", "bytes before the unplug")

        first.unplug()
        rec.wait_state("gone")
        # What was pending is failed: the decoder gets a boundary so it flushes the half frame.
        rec.wait_for(lambda: rec.chunks[-1][2], "a boundary after the unplug")
        assert rec.jobs == [b"\x02half a frame"]

        second = Pty()
        ptys.append(second)
        repoint(link, second.path)
        rec.wait_state("open", times=2)
        after = [b"\x02sale 000123\x03", b"\x02void 000123\x03", RECEIPT]
        for piece in after:
            second.write(piece)
        expected = b"\x02half a frame" + b"".join(after)
        rec.wait_for(lambda: rec.data == expected, "every chunk after the replug")
        assert sup.reconnects == 1
        assert os.path.realpath(second.path) in source.describe()
    assert rec.state_names == ["opening", "open", "gone", "open", "closed"]


def test_adapter_missing_at_start_is_waited_for_and_reported_once_despite_many_retries(
        tmp_path: Path, ptys: list[Pty]) -> None:
    link = tmp_path / "usb-Prolific_PL2303-if00-port0"
    os.symlink(tmp_path / "not-plugged-in", link)
    rec = Recorder()
    rng = CountingRandom()
    with running(SerialSource(str(link)), rec, rng=rng) as sup:
        rec.wait_state("waiting")
        rec.wait_for(lambda: rng.draws >= 3, "several retries")
        pty = Pty()
        ptys.append(pty)
        repoint(link, pty.path)
        rec.wait_state("open")
        pty.write(b"hello")
        rec.wait_for(lambda: rec.data == b"hello", "data after the adapter appeared")
        assert sup.reconnects == 0
    assert rec.state_names == ["opening", "waiting", "open", "closed"]
    assert "not-plugged-in" in rec.states[1][1] or "No such file" in rec.states[1][1]


def test_hung_up_tty_is_told_apart_from_a_quiet_one_and_read_raises_device_gone(ptys: list[Pty]) -> None:
    pty = Pty()
    ptys.append(pty)
    source = SerialSource(pty.path)
    source.open()
    try:
        assert source.read(0.02) == b""
        assert not source.hung_up(), "a quiet line is not an unplugged one"
        pty.write(b"x")
        select.select([source._port.fd], [], [], WAIT)
        assert not source.hung_up(), "pending data is not a hang-up"
        assert source.read(WAIT) == b"x"
        pty.unplug()
        assert source.hung_up()
        with pytest.raises(DeviceGone, match="serial"):
            source.read(0.05)
    finally:
        source.close()


def test_a_second_reader_cannot_open_a_port_that_is_already_in_use(ptys: list[Pty]) -> None:
    pty = Pty()
    ptys.append(pty)
    first, second = SerialSource(pty.path), SerialSource(pty.path)
    first.open()
    try:
        with pytest.raises(DeviceGone):
            second.open()
    finally:
        first.close()


def test_bad_port_url_is_a_configuration_error_at_once_not_a_device_to_wait_for() -> None:
    with pytest.raises(ValueError):
        SerialSource("bogus://somewhere")


@settings(max_examples=15, deadline=None)
@given(data=st.binary(min_size=1, max_size=1500), cuts=st.lists(st.integers(0, 1500), max_size=12),
       max_chunk=st.integers(1, 300))
def test_any_split_of_the_terminals_writes_reads_back_the_same_bytes_in_capped_chunks(
        data: bytes, cuts: list[int], max_chunk: int) -> None:
    pty = Pty()
    source = SerialSource(pty.path, max_chunk=max_chunk)
    source.open()
    try:
        bounds = sorted({0, len(data), *(c for c in cuts if c < len(data))})
        for a, b in itertools.pairwise(bounds):
            pty.write(data[a:b])
        got = bytearray()

        def read_all() -> bool:
            chunk = source.read(0.05)
            assert len(chunk) <= max_chunk
            got.extend(chunk)
            return len(got) >= len(data)

        wait_until(read_all, f"all {len(data)} bytes read", timeout=WAIT, pace=0)
        assert bytes(got) == data
    finally:
        source.close()
        pty.unplug()


def test_simulator_writer_puts_bytes_on_the_line_for_the_terminal_side(ptys: list[Pty]) -> None:
    pty = Pty()
    ptys.append(pty)
    with SerialWriter(pty.path, baudrate=9600) as writer:
        writer.write(RECEIPT)
        got = bytearray()
        while len(got) < len(RECEIPT) and select.select([pty.master], [], [], WAIT)[0]:
            got += os.read(pty.master, 4096)
        assert bytes(got) == RECEIPT
    with pytest.raises(DeviceGone):
        SerialWriter(pty.path + "-missing")


# -- socket:// and loop:// -----------------------------------------------------------------------------

def test_serial_over_tcp_url_reconnects_when_the_converter_drops_the_connection() -> None:
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(WAIT)
    port = server.getsockname()[1]
    rec = Recorder()
    try:
        with running(SerialSource(f"socket://127.0.0.1:{port}"), rec) as sup:
            conn, _ = server.accept()
            rec.wait_state("open")
            conn.sendall(b"\x10\x02first\x10\x03")
            rec.wait_for(lambda: rec.data == b"\x10\x02first\x10\x03", "bytes over TCP")
            conn.close()
            rec.wait_state("gone")
            conn2, _ = server.accept()
            rec.wait_state("open", times=2)
            conn2.sendall(b"second")
            rec.wait_for(lambda: rec.data.endswith(b"second"), "bytes after the reconnect")
            conn2.close()
            assert sup.reconnects >= 1
    finally:
        server.close()
    assert rec.jobs[0] == b"\x10\x02first\x10\x03"


def test_a_converter_that_hangs_up_after_every_connect_is_retried_with_growing_backoff() -> None:
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(WAIT)
    port = server.getsockname()[1]
    rng = CountingRandom()
    rec = Recorder()
    try:
        with running(SerialSource(f"socket://127.0.0.1:{port}"), rec, rng=rng, backoff_base=0.002,
                     backoff_cap=1.0):
            for _ in range(3):  # pyserial's socket close() sleeps 0.3 s, so keep this short
                conn, _ = server.accept()
                conn.close()
            rec.wait_for(lambda: rng.draws >= 3, "three retries")
    finally:
        server.close()
    assert rng.ceilings[:3] == [0.002, 0.004, 0.008]


def test_loop_url_reads_back_what_was_written() -> None:
    rec = Recorder()
    source = SerialSource("loop://")
    with running(source, rec):
        rec.wait_state("open")
        source.write(MINIMAL)
        rec.wait_for(lambda: rec.data == MINIMAL, "looped-back bytes")
