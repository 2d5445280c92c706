"""Sources end to end into the pipeline's queue: a replugged serial adapter, the printer pass-through, a spool dir."""

from __future__ import annotations

import contextlib
import os
import queue
import socket
import threading
import time
import tty
from pathlib import Path

from agent.config import SourceConfig
from agent.messages import EventBatch
from agent.sim.day import build_day
from agent.sim.terminal import encode_event
from agent.sim.wire_escpos import slip_lines
from agent.sources import SourceRunner
from drivers.events import Transaction
from drivers.protocols.escpos import encode_text_receipt
from tests.helpers import SHANGHAI, Harness, wait_until


def drain(inbox: queue.Queue[EventBatch]) -> list[object]:
    out: list[object] = []
    while True:
        try:
            out.extend(inbox.get_nowait().events)
        except queue.Empty:
            return out


def new_pty(link: Path) -> tuple[int, int]:
    master, slave = os.openpty()
    tty.setraw(slave)
    tmp = link.with_suffix(".new")
    os.symlink(os.ttyname(slave), tmp)
    os.replace(tmp, link)  # udev-style: the stable name now points at the new adapter
    return master, slave


def test_replugged_adapter_behind_the_same_name_loses_no_frame_sent_after_replug(tmp_path: Path) -> None:
    link = tmp_path / "settleguard-terminal"
    master, slave = new_pty(link)
    inbox: queue.Queue[EventBatch] = queue.Queue()
    cfg = SourceConfig(name="terminal", protocol="cn_ecr", port=str(link), baudrate=115200)
    runner = SourceRunner(cfg, SHANGHAI, inbox)  # type: ignore[arg-type]
    runner.start()
    runner.supervisor.backoff_base = 0.05
    days = [e for e in build_day("clean", seed=5, count=30, settle=False) if not e.reprint]
    before, after = days[:10], days[10:]
    try:
        wait_until(lambda: runner.state == "open", "the source open")
        for ev in before:
            os.write(master, encode_event("cn_ecr", ev.event))
        wait_until(lambda: runner.events >= len(before), "the events before the unplug")
        half = encode_event("cn_ecr", after[0].event)
        os.write(master, half[: len(half) // 2])  # unplugged mid-frame
        time.sleep(0.1)
        os.close(master)
        os.close(slave)
        wait_until(lambda: runner.state in ("gone", "waiting", "opening"), "the unplug noticed")
        master, slave = new_pty(link)
        wait_until(lambda: runner.state == "open", "the source open")
        for ev in after:
            os.write(master, encode_event("cn_ecr", ev.event))
        wait_until(lambda: runner.events >= len(days), "every event after the replug")
    finally:
        runner.stop()
        for fd in (master, slave):
            with contextlib.suppress(OSError):
                os.close(fd)
    got = [e for e in drain(inbox) if isinstance(e, Transaction)]
    assert [t.voucher_no for t in got] == [e.event.voucher_no for e in days]  # type: ignore[union-attr]
    assert runner.supervisor.reconnects >= 1
    assert runner.stats is not None and runner.stats.bytes_skipped > 0  # the half frame, counted not used


class FakePrinter:
    """A network receipt printer on 127.0.0.1 that records what it prints."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.received = bytearray()
        self._t = threading.Thread(target=self._serve, daemon=True)
        self._t.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                while chunk := conn.recv(65536):
                    self.received += chunk

    def close(self) -> None:
        self.sock.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_printer_pass_through_prints_unchanged_and_yields_the_transaction(tmp_path: Path) -> None:
    printer = FakePrinter()
    port = free_port()
    inbox: queue.Queue[EventBatch] = queue.Queue()
    cfg = SourceConfig(name="printer", protocol="escpos", listen=f"127.0.0.1:{port}",
                       forward=f"127.0.0.1:{printer.port}")
    runner = SourceRunner(cfg, SHANGHAI, inbox)  # type: ignore[arg-type]
    runner.start()
    sale = next(e.event for e in build_day("demo", settle=False) if isinstance(e.event, Transaction))
    job = encode_text_receipt(slip_lines(sale))
    try:
        wait_until(lambda: runner.state == "open", "the source open")
        with socket.create_connection(("127.0.0.1", port)) as till:
            till.sendall(job)
        wait_until(lambda: bytes(printer.received) == job, "the job passed through to the printer")
        wait_until(lambda: runner.events >= 2, "2 events from the printer stream")
    finally:
        runner.stop()
        printer.close()
    events = drain(inbox)
    txns = [e for e in events if isinstance(e, Transaction)]
    assert len(txns) == 1 and txns[0].voucher_no == sale.voucher_no and txns[0].amount_minor == sale.amount_minor


def test_three_copies_and_a_reprint_are_one_transaction_and_no_alert(tmp_path: Path) -> None:
    sale = next(e.event for e in build_day("demo", settle=False) if isinstance(e.event, Transaction))
    stream = b"".join(encode_text_receipt(slip_lines(sale, copy=c)) for c in ("商户存根", "银行存根", "持卡人存根"))
    stream += encode_text_receipt(slip_lines(sale, reprint=True))
    spool = tmp_path / "spool"
    spool.mkdir()
    inbox: queue.Queue[EventBatch] = queue.Queue()
    cfg = SourceConfig(name="printer", protocol="escpos", spool=str(spool))
    runner = SourceRunner(cfg, SHANGHAI, inbox)  # type: ignore[arg-type]
    runner.start()
    try:
        (spool / "job1.prn.part").write_bytes(stream)
        os.rename(spool / "job1.prn.part", spool / "job1.prn")
        wait_until(lambda: runner.events >= 8, "8 events from the spool")
    finally:
        runner.stop()
    h = Harness(tmp_path)
    batches = []
    while not inbox.empty():
        batches.append(inbox.get_nowait())
    h.pipeline.process(batches)
    assert h.journal.count_transactions() == 1
    assert h.pipeline.counts["reprints"] == 3
    assert h.changes == []
    assert (spool / "done" / "job1.prn").exists()  # processed once, also across restarts
