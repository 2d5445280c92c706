"""The TCP printer pass-through with a fake network printer on 127.0.0.1."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from drivers.transports import Supervisor, TcpPassThrough, parse_host_port
from tests.helpers import wait_until
from tests.transport_support import (
    FAST,
    MINIMAL,
    RECEIPT,
    RECEIPT_WITH_LOGO,
    WAIT,
    Recorder,
    running,
)


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
        wait_until(lambda: len(self.jobs) >= n, f"{n} job(s) at the printer", timeout=WAIT, wakeup=self.cond,
                   detail=lambda: f"printer got {len(self.jobs)} jobs")
        with self.cond:
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
        wait_until(lambda: passthrough.stats.forward_failures >= 2, "two failed forwards", timeout=WAIT)
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
        wait_until(lambda: passthrough.stats.bytes_to_printer >= 300, "the first 300 bytes at the printer",
                   timeout=WAIT, pace=0.005)
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
