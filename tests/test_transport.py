"""Byte transports against real devices: pty pairs, local TCP servers, real directories.

Every wait is bounded; the backoff is shrunk so a reconnect takes milliseconds.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import random
import select
import shutil
import socket
import tempfile
import threading
import time
import tty
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.transport import (
    ByteSource,
    Chunk,
    DeviceGone,
    EndOfStream,
    FileSource,
    SerialSource,
    SpoolDirSource,
    Supervisor,
    TcpPassThrough,
    backoff_delay,
    open_serial_writer,
    parse_host_port,
)

DATA = Path(__file__).parent / "data" / "transport"
RECEIPT_WITH_LOGO = (DATA / "receipt-with-logo.bin").read_bytes()      # 9579 bytes
RECEIPT = (DATA / "preview-tools-receipt.bin").read_bytes()             # 613 bytes
MINIMAL = (DATA / "preview-tools-minimal.bin").read_bytes()             # 41 bytes
FORMATTING = (DATA / "preview-tools-formatting.bin").read_bytes()       # 187 bytes

WAIT = 5.0  # generous upper bound for anything that should take milliseconds
FAST: dict[str, Any] = {"backoff_base": 0.01, "backoff_cap": 0.05, "read_timeout": 0.05}


# -- helpers ----------------------------------------------------------------------------------------

class Recorder:
    """Collects what a Supervisor reports; lets the test wait for a condition without sleeping."""

    def __init__(self, on_bytes_hook: Callable[[bytes, bool], None] | None = None) -> None:
        self.cond = threading.Condition()
        self.chunks: list[tuple[bytes, datetime, bool]] = []
        self.states: list[tuple[str, str]] = []
        self.hook = on_bytes_hook

    def on_bytes(self, data: bytes, received: datetime, boundary: bool) -> None:
        with self.cond:
            self.chunks.append((data, received, boundary))
            self.cond.notify_all()
        if self.hook is not None:
            self.hook(data, boundary)

    def on_state(self, state: str, detail: str) -> None:
        with self.cond:
            self.states.append((state, detail))
            self.cond.notify_all()

    def wait_for(self, predicate: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
        """Wakes on every report, and polls briefly for conditions on other objects (counters)."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while not predicate():
                remaining = deadline - time.monotonic()
                assert remaining > 0, f"timed out waiting for {what}; states={self.state_names}"
                self.cond.wait(min(remaining, 0.005))

    def wait_state(self, state: str, times: int = 1) -> None:
        self.wait_for(lambda: self.state_names.count(state) >= times, f"state {state!r} x{times}")

    @property
    def state_names(self) -> list[str]:
        return [s for s, _ in self.states]

    @property
    def data(self) -> bytes:
        with self.cond:
            return b"".join(d for d, _, _ in self.chunks)

    @property
    def jobs(self) -> list[bytes]:
        """The byte stream cut at boundaries: one entry per job / connection / file."""
        out: list[bytes] = []
        current = bytearray()
        with self.cond:
            for data, _, boundary in self.chunks:
                current += data
                if boundary:
                    out.append(bytes(current))
                    current.clear()
        return out


@contextmanager
def running(source: ByteSource, rec: Recorder, **kwargs: Any) -> Iterator[Supervisor]:
    sup = Supervisor(source, rec.on_bytes, rec.on_state, **{**FAST, **kwargs})
    sup.start()
    try:
        yield sup
    finally:
        sup.stop()
        sup.join(WAIT)
        assert not sup.is_alive(), "supervisor did not stop"


class Pty:
    """A pseudo-terminal: the test holds the master (the "terminal"), the agent opens the slave path."""

    def __init__(self) -> None:
        self.master, slave = os.openpty()
        tty.setraw(slave)
        self.path = os.ttyname(slave)
        os.close(slave)
        self.closed = False

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self.master, view)
            view = view[n:]

    def unplug(self) -> None:
        if not self.closed:
            os.close(self.master)
            self.closed = True


@pytest.fixture
def ptys() -> Iterator[list[Pty]]:
    made: list[Pty] = []
    yield made
    for p in made:
        p.unplug()


def repoint(link: Path, target: str) -> None:
    """What udev does on replug: the by-id name now leads to whichever ttyUSBn the adapter got."""
    tmp = link.with_name(link.name + ".new")
    os.symlink(target, tmp)
    os.replace(tmp, link)


class CountingRandom(random.Random):
    """Records the ceiling of every backoff draw."""

    def __init__(self) -> None:
        super().__init__(7)
        self.ceilings: list[float] = []

    @property
    def draws(self) -> int:
        return len(self.ceilings)

    def uniform(self, a: float, b: float) -> float:
        self.ceilings.append(b)
        return super().uniform(a, b)


# -- serial over a real pty -------------------------------------------------------------------------

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
        deadline = time.monotonic() + WAIT
        while len(got) < len(data) and time.monotonic() < deadline:
            chunk = source.read(0.05)
            assert len(chunk) <= max_chunk
            got += chunk
        assert bytes(got) == data
    finally:
        source.close()
        pty.unplug()


def test_simulator_writer_puts_bytes_on_the_line_for_the_terminal_side(ptys: list[Pty]) -> None:
    pty = Pty()
    ptys.append(pty)
    writer = open_serial_writer(pty.path, baudrate=9600)
    try:
        writer.write(RECEIPT)
        got = bytearray()
        while len(got) < len(RECEIPT) and select.select([pty.master], [], [], WAIT)[0]:
            got += os.read(pty.master, 4096)
        assert bytes(got) == RECEIPT
    finally:
        writer.close()
    with pytest.raises(DeviceGone):
        open_serial_writer(pty.path + "-missing")


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


# -- capture file ---------------------------------------------------------------------------------------

def test_capture_file_is_read_once_then_the_reader_ends_with_a_flush() -> None:
    fixed = datetime(2026, 11, 27, 14, 3, tzinfo=UTC)
    rec = Recorder()
    source = FileSource(DATA / "receipt-with-logo.bin", chunk_size=1000)
    sup = Supervisor(source, rec.on_bytes, rec.on_state, utc_now=lambda: fixed, **FAST)
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


# -- spool directory ------------------------------------------------------------------------------------

def drop(directory: Path, name: str, data: bytes, *, mtime: float | None = None) -> Path:
    path = directory / name
    with open(path, "wb") as fh:
        fh.write(data)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def spool(directory: Path, **kwargs: Any) -> SpoolDirSource:
    return SpoolDirSource(directory, **{"settle_seconds": 0.05, "rescan_seconds": 0.1, **kwargs})


def test_jobs_waiting_in_the_spool_at_start_are_delivered_oldest_first_and_moved_to_done(
        tmp_path: Path) -> None:
    now = time.time()
    drop(tmp_path, "b-newer.prn", RECEIPT, mtime=now - 10)
    drop(tmp_path, "z-oldest.prn", MINIMAL, mtime=now - 60)
    rec = Recorder()
    with running(spool(tmp_path), rec):
        rec.wait_for(lambda: len(rec.jobs) == 2, "two jobs")
    assert rec.jobs == [MINIMAL, RECEIPT]
    assert sorted(p.name for p in (tmp_path / "done").iterdir()) == ["b-newer.prn", "z-oldest.prn"]
    assert [p.name for p in tmp_path.iterdir()] == ["done"]


def test_each_job_is_processed_once_also_across_a_restart(tmp_path: Path) -> None:
    rec = Recorder()
    with running(spool(tmp_path), rec):
        rec.wait_state("open")
        drop(tmp_path, "job.prn", RECEIPT)
        rec.wait_for(lambda: len(rec.jobs) == 1, "the first job")
    rec2 = Recorder()
    with running(spool(tmp_path), rec2):
        rec2.wait_state("open")
        # The virtual printer reuses its file name for the next job.
        drop(tmp_path, "job.prn", FORMATTING)
        rec2.wait_for(lambda: len(rec2.jobs) == 1, "the job dropped after the restart")
        time.sleep(0.2)  # two rescan periods: a re-delivery of the first job would show up here
    assert rec.jobs == [RECEIPT]
    assert rec2.jobs == [FORMATTING]
    done = tmp_path / "done"
    assert sorted(p.read_bytes() for p in done.iterdir()) == sorted([RECEIPT, FORMATTING])


def test_a_job_still_being_written_is_delivered_whole_not_in_pieces(tmp_path: Path) -> None:
    rec = Recorder()
    with running(spool(tmp_path, settle_seconds=0.4), rec):
        rec.wait_state("open")
        thirds = [RECEIPT_WITH_LOGO[:3000], RECEIPT_WITH_LOGO[3000:6000], RECEIPT_WITH_LOGO[6000:]]
        with open(tmp_path / "slow-job.prn", "wb") as fh:
            for part in thirds:
                fh.write(part)
                fh.flush()
                time.sleep(0.1)
                assert rec.chunks == [], "nothing may be delivered while the writer still has the file open"
        rec.wait_for(lambda: len(rec.jobs) == 1, "the finished job")
    assert rec.jobs == [RECEIPT_WITH_LOGO]


def test_work_in_progress_names_are_left_alone_until_renamed_into_place(tmp_path: Path) -> None:
    drop(tmp_path, ".hidden-job", MINIMAL)
    drop(tmp_path, "job-17.part", RECEIPT)
    rec = Recorder()
    with running(spool(tmp_path), rec):
        rec.wait_state("open")
        drop(tmp_path, "marker.prn", FORMATTING)
        rec.wait_for(lambda: len(rec.jobs) == 1, "the marker job")
        os.rename(tmp_path / "job-17.part", tmp_path / "job-17.prn")
        rec.wait_for(lambda: len(rec.jobs) == 2, "the renamed job")
    assert rec.jobs == [FORMATTING, RECEIPT]
    assert (tmp_path / ".hidden-job").exists()


def test_spool_directory_missing_at_start_or_removed_later_is_waited_for_and_picked_up_again(
        tmp_path: Path) -> None:
    directory = tmp_path / "spool"
    rec = Recorder()
    with running(spool(directory), rec):
        rec.wait_state("waiting")
        directory.mkdir()
        drop(directory, "first.prn", MINIMAL)
        rec.wait_for(lambda: len(rec.jobs) == 1, "the job after the directory appeared")
        shutil.rmtree(directory)  # the share was unmounted
        rec.wait_state("gone")
        directory.mkdir()
        drop(directory, "second.prn", RECEIPT)
        rec.wait_for(lambda: len(rec.jobs) == 2, "the job after the directory came back")
    assert rec.state_names == ["opening", "waiting", "open", "gone", "open", "closed"]
    assert rec.jobs == [MINIMAL, RECEIPT]


@settings(max_examples=30, deadline=None)
@given(data=st.binary(max_size=5000), chunk_size=st.integers(1, 2000))
def test_a_spooled_job_comes_back_unchanged_in_capped_chunks_then_one_boundary(
        data: bytes, chunk_size: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        # No watcher and no settle time: readiness comes from the scan alone (empty files wait
        # for a close event, so give them one byte).
        payload = data or b"\x1b"
        drop(Path(tmp), "job.prn", payload)
        source = SpoolDirSource(tmp, settle_seconds=0.0, watch=False, chunk_size=chunk_size)
        source.open()
        try:
            chunks: list[Chunk] = []
            deadline = time.monotonic() + WAIT
            while not (chunks and chunks[-1].boundary) and time.monotonic() < deadline:
                chunk = source.read_chunk(0.05)
                if chunk.data or chunk.boundary:
                    chunks.append(chunk)
            source.commit()
            assert b"".join(c.data for c in chunks) == payload
            assert all(len(c.data) <= chunk_size for c in chunks)
            assert [c.boundary for c in chunks].count(True) == 1
            assert os.listdir(tmp) == ["done"]
            assert source.read_chunk(0.0) == Chunk(b"")
        finally:
            source.close()


# -- TCP printer pass-through ------------------------------------------------------------------------

class FakePrinter:
    """A network receipt printer on 127.0.0.1: answers each connection with a status byte,
    then records everything it is sent until the till closes."""

    STATUS = b"\x16"

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.server.settimeout(0.1)
        self.port = self.server.getsockname()[1]
        self.jobs: list[bytes] = []
        self.cond = threading.Condition()
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(WAIT)
                conn.sendall(self.STATUS)
                job = bytearray()
                while chunk := conn.recv(4096):
                    job += chunk
            with self.cond:
                self.jobs.append(bytes(job))
                self.cond.notify_all()

    def wait_jobs(self, n: int) -> list[bytes]:
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.jobs) >= n, WAIT), f"printer got {len(self.jobs)} jobs"
            return list(self.jobs)

    def close(self) -> None:
        self._stop.set()
        self.server.close()
        self.thread.join(WAIT)


@pytest.fixture
def printer() -> Iterator[FakePrinter]:
    p = FakePrinter()
    yield p
    p.close()


def print_from_till(address: tuple[str, int], data: bytes, pieces: int = 7) -> bytes:
    """Send a job the way a till does; return what the printer said back."""
    with socket.create_connection(address, timeout=WAIT) as till:
        step = max(1, len(data) // pieces)
        for start in range(0, len(data), step):
            till.sendall(data[start:start + step])
        till.shutdown(socket.SHUT_WR)
        reply = bytearray()
        while chunk := till.recv(4096):
            reply += chunk
        return bytes(reply)


def listening(passthrough: TcpPassThrough, rec: Recorder) -> tuple[str, int]:
    rec.wait_state("open")
    assert passthrough.address is not None
    return passthrough.address


def test_printer_gets_the_tills_bytes_unchanged_and_the_decoder_gets_a_copy_per_connection(
        printer: FakePrinter) -> None:
    passthrough = TcpPassThrough("127.0.0.1", 0, "127.0.0.1", printer.port)
    rec = Recorder()
    with running(passthrough, rec):
        address = listening(passthrough, rec)
        assert print_from_till(address, RECEIPT_WITH_LOGO) == FakePrinter.STATUS
        assert print_from_till(address, RECEIPT) == FakePrinter.STATUS
        assert printer.wait_jobs(2) == [RECEIPT_WITH_LOGO, RECEIPT]
        rec.wait_for(lambda: len(rec.jobs) == 2, "a copy of both connections")
    assert rec.jobs == [RECEIPT_WITH_LOGO, RECEIPT]
    assert passthrough.stats.bytes_to_printer == len(RECEIPT_WITH_LOGO) + len(RECEIPT)
    assert passthrough.stats.bytes_to_till == 2
    assert passthrough.stats.copies_dropped == 0


def test_unreachable_printer_closes_the_tills_connection_and_is_reported_once() -> None:
    spare = socket.create_server(("127.0.0.1", 0))
    dead_port = spare.getsockname()[1]
    spare.close()  # nothing listens there now: connection refused
    problems: list[str] = []
    passthrough = TcpPassThrough("127.0.0.1", 0, "127.0.0.1", dead_port, connect_timeout=1.0,
                                 on_problem=problems.append)
    rec = Recorder()
    with running(passthrough, rec):
        address = listening(passthrough, rec)
        for _ in range(2):
            with socket.create_connection(address, timeout=WAIT) as till:
                till.sendall(RECEIPT)
                # Closed with our bytes unread: a reset is just as clear to the till as an EOF.
                with contextlib.suppress(ConnectionResetError):
                    assert till.recv(10) == b""
        deadline = time.monotonic() + WAIT
        while passthrough.stats.forward_failures < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
    assert passthrough.stats.forward_failures == 2
    assert len(problems) == 1 and "unreachable" in problems[0]
    assert passthrough.stats.printer_reachable is False
    assert rec.jobs == [], "nothing was printed, so nothing may be decoded"


def test_a_decoder_that_falls_behind_loses_copies_but_never_holds_up_printing(printer: FakePrinter) -> None:
    release = threading.Event()

    def stuck_decoder(_data: bytes, _boundary: bool) -> None:
        release.wait(WAIT)

    passthrough = TcpPassThrough("127.0.0.1", 0, "127.0.0.1", printer.port, copy_queue_size=2, recv_size=64)
    rec = Recorder(stuck_decoder)
    with running(passthrough, rec):
        address = listening(passthrough, rec)
        print_from_till(address, RECEIPT_WITH_LOGO, pieces=40)
        assert printer.wait_jobs(1) == [RECEIPT_WITH_LOGO]
        assert passthrough.copy_backlog <= 2
        assert passthrough.stats.copies_dropped > 0
        release.set()
    assert passthrough.stats.bytes_to_printer == len(RECEIPT_WITH_LOGO)


def test_a_decoder_that_raises_does_not_affect_forwarding_or_later_connections(printer: FakePrinter) -> None:
    def broken_decoder(_data: bytes, _boundary: bool) -> None:
        raise RuntimeError("decoder bug")

    passthrough = TcpPassThrough("127.0.0.1", 0, "127.0.0.1", printer.port)
    rec = Recorder(broken_decoder)
    with running(passthrough, rec) as sup:
        address = listening(passthrough, rec)
        print_from_till(address, RECEIPT)
        print_from_till(address, MINIMAL)
        assert printer.wait_jobs(2) == [RECEIPT, MINIMAL]
        rec.wait_for(lambda: len(rec.jobs) == 2, "both copies offered to the decoder")
        assert sup.callback_errors >= 2
        assert sup.last_callback_error is not None and "decoder bug" in sup.last_callback_error
        assert sup.state == "open"


def test_stopping_the_agent_lets_a_receipt_in_progress_finish_printing(printer: FakePrinter) -> None:
    passthrough = TcpPassThrough("127.0.0.1", 0, "127.0.0.1", printer.port, drain_seconds=WAIT)
    rec = Recorder()
    sup = Supervisor(passthrough, rec.on_bytes, rec.on_state, **FAST)
    sup.start()
    address = listening(passthrough, rec)
    with socket.create_connection(address, timeout=WAIT) as till:
        till.sendall(RECEIPT[:300])
        deadline = time.monotonic() + WAIT
        while passthrough.stats.bytes_to_printer < 300 and time.monotonic() < deadline:
            time.sleep(0.005)
        sup.stop()  # e.g. systemctl restart settleguard, mid-receipt
        time.sleep(0.1)
        till.sendall(RECEIPT[300:])
        till.shutdown(socket.SHUT_WR)
        assert till.recv(16) == FakePrinter.STATUS
    assert printer.wait_jobs(1) == [RECEIPT]
    sup.join(WAIT)
    assert not sup.is_alive()
    with pytest.raises(OSError):
        socket.create_connection(address, timeout=1.0).close()  # no longer listening


def test_listen_and_forward_addresses_parse_like_the_config_writes_them() -> None:
    assert parse_host_port("0.0.0.0:9100") == ("0.0.0.0", 9100)
    assert parse_host_port("[::1]:9100") == ("::1", 9100)
    with pytest.raises(ValueError):
        parse_host_port("printer")
    with pytest.raises(ValueError):
        parse_host_port("printer:99999")


# -- supervisor -----------------------------------------------------------------------------------------

def test_a_quiet_line_still_shows_progress_and_stop_is_prompt(ptys: list[Pty]) -> None:
    pty = Pty()
    ptys.append(pty)
    rec = Recorder()
    sup = Supervisor(SerialSource(pty.path), rec.on_bytes, rec.on_state, **FAST)
    sup.start()
    try:
        rec.wait_state("open")
        seen = sup.last_progress
        rec.wait_for(lambda: sup.last_progress > seen, "progress while nothing arrives")
    finally:
        started = time.monotonic()
        sup.stop()
        sup.join(WAIT)
    assert not sup.is_alive()
    assert time.monotonic() - started < 1.0


def test_a_long_backoff_keeps_reporting_progress_and_does_not_delay_stop(tmp_path: Path) -> None:
    rec = Recorder()
    always_long = random.Random()
    always_long.uniform = lambda a, b: b  # type: ignore[method-assign]
    sup = Supervisor(SerialSource(str(tmp_path / "absent")), rec.on_bytes, rec.on_state, backoff_base=30.0,
                     backoff_cap=30.0, read_timeout=0.05, rng=always_long)
    sup.start()
    try:
        rec.wait_state("waiting")
        seen = sup.last_progress
        rec.wait_for(lambda: sup.last_progress > seen, "progress during a 30 s backoff")
    finally:
        started = time.monotonic()
        sup.stop()
        sup.join(WAIT)
    assert not sup.is_alive()
    assert time.monotonic() - started < 1.0
    assert rec.state_names == ["opening", "waiting", "closed"]


def test_backoff_doubles_up_to_the_cap() -> None:
    top = random.Random()
    top.uniform = lambda a, b: b  # type: ignore[method-assign]
    ceilings = [backoff_delay(n, base=0.5, cap=30.0, rng=top) for n in range(10)]
    assert ceilings == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0, 30.0]


@settings(max_examples=200, deadline=None)
@given(failures=st.integers(0, 10_000), base=st.floats(0.001, 10.0), cap=st.floats(0.001, 300.0),
       seed=st.integers(0, 2**32))
def test_backoff_is_full_jitter_never_negative_never_past_the_cap(
        failures: int, base: float, cap: float, seed: int) -> None:
    delay = backoff_delay(failures, base=base, cap=cap, rng=random.Random(seed))
    assert 0.0 <= delay <= min(cap, base * 2.0 ** min(failures, 62))
