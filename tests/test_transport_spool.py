"""The spool directory source on a real directory; settling is measured on a manual clock."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.clock import ManualClock
from drivers.transports import Chunk, SpoolDirSource
from tests.helpers import wait_until
from tests.transport_support import (
    FORMATTING,
    MINIMAL,
    RECEIPT,
    RECEIPT_WITH_LOGO,
    WAIT,
    Recorder,
    running,
)


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


def read_job(source: SpoolDirSource, clock: ManualClock, *, most_steps: int = 50) -> bytes | None:
    """Read through one job with the clock standing still; None when the spool has nothing ready now."""
    got = bytearray()
    for _ in range(most_steps):
        chunk = source.read_chunk(0.0)
        got += chunk.data
        if chunk.boundary:
            source.commit()
            return bytes(got)
        if not chunk.data and not got:
            return None
    raise AssertionError("a job did not end within the steps allowed")


def test_each_job_is_processed_once_also_across_a_restart(tmp_path: Path) -> None:
    clock = ManualClock()
    drop(tmp_path, "job.prn", RECEIPT)
    with SpoolDirSource(tmp_path, settle_seconds=1.0, rescan_seconds=2.0, watch=False, clock=clock) as first:
        assert read_job(first, clock) is None, "a job is taken only once it has settled"
        clock.advance(1.0)
        assert read_job(first, clock) == RECEIPT
    with SpoolDirSource(tmp_path, settle_seconds=1.0, rescan_seconds=2.0, watch=False, clock=clock) as again:
        # The virtual printer reuses its file name for the next job.
        drop(tmp_path, "job.prn", FORMATTING)
        assert read_job(again, clock) is None
        clock.advance(1.0)
        assert read_job(again, clock) == FORMATTING
        for _ in range(3):  # rescan periods in which a re-delivery of either job would show up
            clock.advance(2.0)
            assert read_job(again, clock) is None
    done = tmp_path / "done"
    assert sorted(p.read_bytes() for p in done.iterdir()) == sorted([RECEIPT, FORMATTING])
    assert [p.name for p in tmp_path.iterdir()] == ["done"]


def test_a_job_still_being_written_is_delivered_whole_not_in_pieces(tmp_path: Path) -> None:
    clock = ManualClock()
    thirds = [RECEIPT_WITH_LOGO[:3000], RECEIPT_WITH_LOGO[3000:6000], RECEIPT_WITH_LOGO[6000:]]
    with SpoolDirSource(tmp_path, settle_seconds=0.4, watch=False, clock=clock) as source:
        with open(tmp_path / "slow-job.prn", "wb") as fh:
            for part in thirds:
                fh.write(part)
                fh.flush()
                assert read_job(source, clock) is None
                # The writer is slower than the settle time would allow if it had stopped...
                clock.advance(0.3)
                assert read_job(source, clock) is None, "a growing file is not a finished job"
        # Once it stops changing it becomes one job: seen changed at one scan, unchanged a settle time later.
        jobs = []
        for _ in range(3):
            clock.advance(0.4)
            jobs.append(read_job(source, clock))
        assert [j for j in jobs if j is not None] == [RECEIPT_WITH_LOGO]


def test_a_file_closed_by_its_writer_is_taken_at_once_without_waiting_to_settle(tmp_path: Path) -> None:
    clock = ManualClock()
    rec = Recorder()
    with running(SpoolDirSource(tmp_path, settle_seconds=3600.0, clock=clock), rec, clock=clock):
        rec.wait_state("open")
        drop(tmp_path, "job.prn", RECEIPT)   # inotify reports the close-after-write
        rec.wait_for(lambda: len(rec.jobs) == 1, "the closed job")
    assert rec.jobs == [RECEIPT]


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


def _gone_is_fine(func: object, path: str, exc_info: tuple[type[BaseException], BaseException, object]) -> None:
    if not isinstance(exc_info[1], FileNotFoundError):
        raise exc_info[1]


def test_spool_directory_missing_at_start_or_removed_later_is_waited_for_and_picked_up_again(
        tmp_path: Path) -> None:
    directory = tmp_path / "spool"
    rec = Recorder()
    with running(spool(directory), rec):
        rec.wait_state("waiting")
        directory.mkdir()
        drop(directory, "first.prn", MINIMAL)
        rec.wait_for(lambda: len(rec.jobs) == 1, "the job after the directory appeared")
        # The share was unmounted. The source may be deleting the job it just handed over at this very
        # moment (its commit after the journal): a file gone under rmtree is what we want anyway.
        shutil.rmtree(directory, onerror=_gone_is_fine)
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

            def read_job() -> bool:
                chunk = source.read_chunk(0.05)
                if chunk.data or chunk.boundary:
                    chunks.append(chunk)
                return bool(chunks and chunks[-1].boundary)

            wait_until(read_job, "the whole job up to its boundary", timeout=WAIT, pace=0)
            source.commit()
            assert b"".join(c.data for c in chunks) == payload
            assert all(len(c.data) <= chunk_size for c in chunks)
            assert [c.boundary for c in chunks].count(True) == 1
            assert os.listdir(tmp) == ["done"]
            assert source.read_chunk(0.0) == Chunk(b"")
        finally:
            source.close()
