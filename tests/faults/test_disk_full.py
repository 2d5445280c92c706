"""The state directory's filesystem fills up, then space comes back.

Needs root and a tmpfs mount (a small filesystem of its own, so filling it
touches nothing else); skipped with the reason otherwise.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.sim.rig import ShopRig
from tests.faults.support import FULL, Till, vouchers_in_journal
from tests.helpers import wait_until

TMPFS_SIZE = "8m"


@contextlib.contextmanager
def small_filesystem(where: Path) -> Iterator[Path]:
    where.mkdir()
    if os.geteuid() != 0:
        pytest.skip("filling a filesystem needs a tmpfs mount, and mounting needs root")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE}", "tmpfs", str(where)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip() or proc.returncode})")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(directory: Path) -> Path:
    """Take every free byte; returns the filler so it can be removed."""
    filler = directory / "filler"
    block = b"\0" * 65536
    with filler.open("wb", buffering=0) as f:
        try:
            while True:
                f.write(block)
                f.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    # Small writes may still fit in the last partial block: take those too.
    with filler.open("ab", buffering=0) as f, contextlib.suppress(OSError):
        while True:
            f.write(b"\0" * 512)
            f.flush()
    return filler


def test_a_full_disk_is_reported_loudly_and_journalling_resumes_when_space_returns(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    with small_filesystem(tmp_path / "state") as state, ShopRig(name="故障测试店", till="faults-1", state=state) as rig:
        daemon = rig.daemon()
        till = Till(rig.terminal.write, dup_every=10**9)
        try:
            daemon.start()
            wait_until(lambda: daemon.sources[0].state == "open", "the terminal line open")
            for _ in range(5):
                till.send()
            wait_until(lambda: len(vouchers_in_journal(state)) == 5, "5 charges journalled")
            filler = fill(state)
            during = [till.send() for _ in range(20 if FULL else 5)]
            wait_until(lambda: [r for r in caplog.records
                                if r.levelno >= logging.ERROR or "full" in r.getMessage().lower()],
                       "a full disk reported")
            assert daemon.sources[0].state == "open", "the reader must keep reading while the disk is full"
            filler.unlink()
            after = [till.send() for _ in range(5)]
            wait_until(lambda: set(after) <= set(vouchers_in_journal(state)),
                       "journalling to resume when space came back", timeout=30)
            # Held in memory and written once there was room: a full disk loses nothing the reader got.
            assert set(during) <= set(vouchers_in_journal(state)), "transactions read during the outage were lost"
        finally:
            daemon.stop()
