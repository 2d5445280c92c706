"""The in-process source and the reader loop on a manual clock: no device, no real-time margins."""

from __future__ import annotations

import queue
import random
from datetime import UTC, datetime

import pytest

from agent.config import SourceConfig
from agent.messages import Command, EventBatch
from agent.sim.wire_escpos import slip_lines
from agent.sources import SourceRunner
from drivers.clock import ManualClock
from drivers.events import ReceiptText
from drivers.protocols.escpos import encode_text_receipt
from drivers.transports import Chunk, DeviceGone, EndOfStream, Supervisor, VirtualSource
from tests.helpers import SHANGHAI
from tests.transport_support import Recorder, running

START = datetime(2026, 11, 27, 6, 0, tzinfo=UTC)


def test_a_virtual_source_opens_and_closes_with_a_with_block_and_hands_out_what_was_pushed() -> None:
    wire = VirtualSource()
    wire.push(b"\x02abc")
    wire.end_job()
    with wire as source:
        assert source.read_chunk(0.0) == Chunk(b"\x02abc")
        assert source.read_chunk(0.0) == Chunk(b"", boundary=True)
        assert source.read_chunk(0.0) == Chunk(b"")
        wire.unplug()
        with pytest.raises(DeviceGone):
            source.read_chunk(0.0)
        wire.finish()
        with pytest.raises(EndOfStream):
            source.read_chunk(0.0)
    assert wire.opened == 1


def test_receive_times_come_from_the_injected_clock() -> None:
    clock = ManualClock(START)
    wire = VirtualSource()
    rec = Recorder()
    with running(wire, rec, clock=clock):
        rec.wait_state("open")
        wire.push(b"one")
        rec.wait_for(lambda: rec.data == b"one", "the first bytes")
        clock.advance(90)
        wire.push(b"two")
        rec.wait_for(lambda: rec.data == b"onetwo", "the second bytes")
    assert [r for data, r, _ in rec.chunks if data] == [START, START.replace(minute=1, second=30)]


def test_after_an_unplug_the_reader_flushes_and_reopens_only_when_the_backoff_has_passed_on_its_clock() -> None:
    clock = ManualClock(START)
    wire = VirtualSource()
    ceiling = random.Random()
    ceiling.uniform = lambda a, b: b  # type: ignore[method-assign]
    rec = Recorder()
    with running(wire, rec, clock=clock, backoff_base=60.0, backoff_cap=60.0, rng=ceiling) as sup:
        rec.wait_state("open")
        wire.push(b"\x02half a frame")
        wire.unplug()
        rec.wait_state("gone")
        rec.wait_for(lambda: rec.jobs == [b"\x02half a frame"], "a boundary for the half frame")
        wire.replug()
        assert wire.opened == 1
        clock.advance(60)
        rec.wait_state("open", times=2)
        assert wire.opened == 2 and sup.reconnects == 1
    assert rec.state_names == ["opening", "open", "gone", "open", "closed"]


def test_a_finite_source_ends_the_reader_with_a_flush_and_no_retry() -> None:
    wire = VirtualSource()
    rec = Recorder()
    sup = Supervisor(wire, rec.on_bytes, rec.on_state, clock=ManualClock(START))
    wire.push(b"last bytes")
    wire.finish()
    sup.start()
    sup.join(5.0)
    assert not sup.is_alive()
    assert rec.jobs == [b"last bytes"]
    assert rec.state_names == ["opening", "open", "ended"]


def test_a_printer_stream_ends_its_receipt_after_the_idle_time_on_the_sources_clock() -> None:
    clock = ManualClock(START)
    wire = VirtualSource("printer")
    inbox: queue.Queue[EventBatch | Command] = queue.Queue()
    cfg = SourceConfig(name="printer", protocol="escpos", file="/nonexistent", idle_flush="3s")
    runner = SourceRunner(cfg, SHANGHAI, inbox, clock=clock, transport=wire)
    runner.start()
    try:
        # No cut at the end: only the quiet spell says the receipt is over.
        wire.push(encode_text_receipt(slip_lines_for_test(), cut=False))
        assert wire.wait_handled()
        clock.advance(2.9)
        runner.idle_flush()
        assert inbox.empty(), "2.9 s of quiet is not yet the end of a receipt"
        clock.advance(0.1)
        runner.idle_flush()
        batch = inbox.get_nowait()
        assert isinstance(batch, EventBatch) and batch.received == START.replace(second=3)
        assert any(isinstance(e, ReceiptText) for e in batch.events)
    finally:
        runner.stop()


def slip_lines_for_test() -> list[str]:
    from agent.sim.day import build_day
    from drivers.events import Transaction

    sale = next(e.event for e in build_day("demo", settle=False) if isinstance(e.event, Transaction))
    return slip_lines(sale)
