"""Issue 13, observation 6: a spool job is moved to done/ only once its events are in the journal,
and a job still open in its writer is not read yet. Real spool directories, real SQLite files."""

from __future__ import annotations

import contextlib
import dataclasses
import queue
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

from agent.config import SourceConfig
from agent.messages import EventBatch
from agent.pipeline import Pipeline
from agent.sim.terminal import encode_event
from agent.sources import SourceRunner
from agent.store.journal import Journal
from drivers.clock import ManualClock
from drivers.transports import SpoolDirSource
from tests.helpers import SHANGHAI, config, sale, wait_until
from tests.transport_support import RECEIPT

START = datetime(2026, 11, 27, 12, 0, tzinfo=SHANGHAI)


def job_bytes(n: int) -> bytes:
    """Job ``n``: one charge. Jobs 3 and 4 are the same card and amount two minutes apart (a double charge)."""
    at = START + timedelta(minutes=n)
    amount, card = (12_800, "622576******0001") if n in (3, 4) else (1_000 + n, f"622576******{n:04d}")
    return encode_event("jsonl", sale(f"{n:06d}", amount, at, card=card))


@contextlib.contextmanager
def spool_runner(directory: Path, inbox: queue.Queue[EventBatch], clock: ManualClock) -> Iterator[SourceRunner]:
    cfg = SourceConfig(name="printer", protocol="jsonl", spool=str(directory))
    # settle 0: files already there at start are taken at the first scan; no watcher needed for that.
    transport = SpoolDirSource(directory, settle_seconds=0.0, rescan_seconds=0.05, watch=False, clock=clock)
    runner = SourceRunner(cfg, SHANGHAI, inbox, clock=clock, transport=transport)  # type: ignore[arg-type]
    runner.start()
    try:
        yield runner
    finally:
        runner.stop()


def take(inbox: queue.Queue[EventBatch], jobs: int) -> list[EventBatch]:
    """Batches until ``jobs`` job boundaries (batches carrying an ack) have come."""
    got: list[EventBatch] = []
    deadline = time.monotonic() + 10
    while sum(b.ack is not None for b in got) < jobs:
        assert time.monotonic() < deadline, f"only {sum(b.ack is not None for b in got)} of {jobs} jobs read"
        with contextlib.suppress(queue.Empty):
            got.append(inbox.get(timeout=0.05))
    return got


def test_a_job_is_moved_to_done_only_after_the_pipeline_committed_it(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    for n in range(1, 6):
        (spool / f"job-{n}.jsonl").write_bytes(job_bytes(n))
    clock = ManualClock(START + timedelta(hours=1))
    journal = Journal(tmp_path / "settleguard.sqlite3")
    pipeline = Pipeline(config(), journal, clock=clock, channels=("hook",))
    inbox: queue.Queue[EventBatch] = queue.Queue()
    with spool_runner(spool, inbox, clock):
        batches = take(inbox, 5)
        # Read, decoded and queued -- but nothing is committed yet, so nothing may leave the spool.
        assert sorted(p.name for p in spool.iterdir() if p.is_file()) == [f"job-{n}.jsonl" for n in range(1, 6)]
        assert not list((spool / "done").iterdir())
        pipeline.process(batches)
        assert journal.count_transactions() == 5
        assert sorted(p.name for p in (spool / "done").iterdir()) == [f"job-{n}.jsonl" for n in range(1, 6)]
    journal.close()


def test_a_crash_between_commit_and_move_rereads_the_job_and_the_journal_is_unchanged(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    for n in range(1, 6):
        (spool / f"job-{n}.jsonl").write_bytes(job_bytes(n))
    clock = ManualClock(START + timedelta(hours=1))
    path = tmp_path / "settleguard.sqlite3"
    journal = Journal(path)
    pipeline = Pipeline(config(), journal, clock=clock, channels=("hook",))
    inbox: queue.Queue[EventBatch] = queue.Queue()
    with spool_runner(spool, inbox, clock):
        # Committed, then "killed" before any job was marked done: the acks are dropped.
        pipeline.process([dataclasses.replace(b, ack=None) for b in take(inbox, 5)])
    journal.close()
    assert not list((spool / "done").iterdir()), "nothing was acknowledged, so nothing may be moved"

    def journal_facts(j: Journal) -> tuple[object, ...]:
        alerts = j.alerts()
        return (j.count_transactions(), sorted((a.rule, a.revision, a.state) for a in alerts),
                j.conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])

    journal = Journal(path)
    before = journal_facts(journal)
    assert before[0] == 5 and "DUP-001" in [r for r, _, _ in before[1]], before  # type: ignore[index]
    # The restart: the same files are read again and go through a fresh pipeline.
    pipeline = Pipeline(config(), journal, clock=clock, channels=("hook",))
    with spool_runner(spool, inbox, clock):
        pipeline.process(take(inbox, 5))
    assert journal_facts(journal) == before, "re-reading a committed job changed the journal's findings"
    assert sorted(p.name for p in (spool / "done").iterdir()) == [f"job-{n}.jsonl" for n in range(1, 6)]
    assert [p.name for p in spool.iterdir()] == ["done"]
    journal.close()


def test_a_job_that_decodes_to_nothing_is_still_moved_once_committed(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    (spool / "noise.jsonl").write_bytes(b"not json at all\n")
    clock = ManualClock(START)
    journal = Journal(tmp_path / "settleguard.sqlite3")
    pipeline = Pipeline(config(), journal, clock=clock)
    inbox: queue.Queue[EventBatch] = queue.Queue()
    with spool_runner(spool, inbox, clock):
        batches = take(inbox, 1)
        assert all(b.events == () for b in batches)
        # The line that is not JSON travels to the quarantine (drivers/boundary.py), the job's ack after it.
        assert [len(b.rejected) for b in batches] == [1, 0]
        assert (spool / "noise.jsonl").exists()
        pipeline.process(batches)
    assert [p.name for p in (spool / "done").iterdir()] == ["noise.jsonl"]
    assert journal.quarantine_total() == 1
    journal.close()


def test_a_writer_pausing_mid_job_is_waited_for_not_read_in_half(tmp_path: Path) -> None:
    clock = ManualClock()
    job = tmp_path / "job.prn"
    with SpoolDirSource(tmp_path, settle_seconds=1.0, rescan_seconds=2.0, clock=clock) as source:
        with open(job, "wb") as writer:
            writer.write(RECEIPT[:300])
            writer.flush()
            # The watcher (inotify) has seen the write and no close yet.
            wait_until(lambda: str(job) in source.being_written(), "the watcher to see the open writer")
            got = bytearray()
            for _ in range(10):  # the writer pauses far longer than the settle time
                clock.advance(1.0)
                chunk = source.read_chunk(0.0)
                got += chunk.data
                assert not chunk.boundary, f"half a job ({len(got)} bytes) was taken as a whole one"
            assert not got
            writer.write(RECEIPT[300:])
        # The close-after-write vouches it is complete: taken at once, whole.
        job_data = bytearray()

        def read_whole() -> bool:
            chunk = source.read_chunk(0.05)
            job_data.extend(chunk.data)
            return chunk.boundary

        wait_until(read_whole, "the finished job", pace=0)
        assert bytes(job_data) == RECEIPT
        source.commit()
    assert [p.name for p in (tmp_path / "done").iterdir()] == ["job.prn"]
