"""Issue 13, observation 6: kill -9 while the journal cannot be written must not lose spooled jobs.

A stalled disk is played by another connection holding the journal's write lock. The daemon reads
the 20 jobs and cannot commit them; it is killed. Before the fix the 20 files sat in done/ and were
never read again; now they stay in the spool until their transactions are committed, and the next
start journals each exactly once.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from datetime import datetime, timedelta
from pathlib import Path

from agent.sim.terminal import encode_event
from tests.faults.support import DaemonProcess, journal
from tests.helpers import SHANGHAI, sale, wait_until

JOBS = 20


def test_spooled_jobs_survive_kill9_while_the_journal_is_locked(tmp_path: Path) -> None:
    spool, state = tmp_path / "spool", tmp_path / "state"
    spool.mkdir()
    cfg = tmp_path / "settleguard.toml"
    cfg.write_text('[shop]\nname = "锁测试店"\ntill = "t1"\ntimezone = "Asia/Shanghai"\n\n'
                   f'[[source]]\nname = "terminal"\nprotocol = "jsonl"\nspool = "{spool}"\n', encoding="utf-8")
    daemon = DaemonProcess(cfg, state)
    at = datetime.now(SHANGHAI) - timedelta(hours=1)
    try:
        daemon.start()
        blocker = sqlite3.connect(state / "settleguard.sqlite3", isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")  # the disk stalls: nobody else can write the journal
        for n in range(1, JOBS + 1):
            tmp = spool / f"job-{n:02d}.part"
            tmp.write_bytes(encode_event("jsonl", sale(f"{n:06d}", 1000 + n, at + timedelta(seconds=n),
                                                        card=f"622576******{n:04d}")))
            tmp.rename(spool / f"job-{n:02d}.jsonl")  # published whole, as a virtual printer does

        def events_read() -> int:
            reply = daemon.status()
            return int(reply["sources"]["terminal"]["events"]) if reply else 0

        wait_until(lambda: events_read() >= JOBS, "the daemon to read every job", timeout=20,
                   detail=lambda: f"status {daemon.status()}")
        done = spool / "done"
        assert not list(done.iterdir()), (f"{len(list(done.iterdir()))} jobs moved to done/ while none "
                                          "could be journalled")
        daemon.kill9()
        blocker.execute("ROLLBACK")
        blocker.close()

        daemon.start()
        wait_until(lambda: len(list(done.iterdir())) == JOBS, "every job in done/ after the restart", timeout=20,
                   detail=lambda: f"spool {sorted(p.name for p in spool.iterdir())}")
        assert [p.name for p in spool.iterdir()] == ["done"]
        with closing(journal(state)) as conn:
            rows = conn.execute("SELECT voucher_no, sightings FROM transactions ORDER BY voucher_no").fetchall()
        assert [(r[0], r[1]) for r in rows] == [(f"{n:06d}", 1) for n in range(1, JOBS + 1)]
        assert daemon.stop() == 0
    finally:
        daemon.close()
