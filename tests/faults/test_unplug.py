"""The terminal's USB-serial adapter is pulled in the middle of a frame, then plugged back in."""

from __future__ import annotations

import os
import time
from pathlib import Path

from agent.config import parse_config
from agent.service.daemon import Daemon
from agent.sim.sink import WebhookSink
from agent.sim.terminal import PtyTerminal
from tests.faults.support import CONFIG, FULL, Till, vouchers_in_journal, wait_until

CYCLES = 5 if FULL else 1


def _point(link: Path, device: str) -> None:
    """What udev does for /dev/serial/by-id/...: the stable name now leads to the new tty."""
    tmp = link.with_name(link.name + ".new")
    tmp.unlink(missing_ok=True)
    os.symlink(device, tmp)
    os.replace(tmp, link)


def test_a_frame_cut_by_unplugging_is_dropped_and_reading_resumes_after_replug(tmp_path: Path) -> None:
    sink = WebhookSink().start()
    term = PtyTerminal()
    link = tmp_path / "usb-FTDI_FT232R_A5XK3RJT-if00-port0"
    _point(link, term.device)
    loaded = parse_config(CONFIG.format(device=link, url=sink.url, secret="whsec_dW5wbHVndW5wbHVndW5wbHVn"))
    daemon = Daemon(loaded, tmp_path / "state", use_scheduler=False)
    till = Till(term.write, dup_every=10**9)
    cut: list[str] = []
    try:
        daemon.start()
        runner = daemon.sources[0]
        assert wait_until(lambda: runner.state == "open", timeout=10)
        for _ in range(CYCLES):
            for _ in range(3):
                till.send()
            assert wait_until(lambda: set(vouchers_in_journal(tmp_path / "state")) >= set(till.written), 10)
            voucher, data = till.sale()
            term.write(data[:len(data) // 2])
            cut.append(voucher)
            time.sleep(0.05)
            term.close()  # unplugged: the daemon's next read fails
            assert wait_until(lambda: runner.state in ("gone", "waiting", "opening"), timeout=10), runner.state
            term = PtyTerminal()
            till.write = term.write
            _point(link, term.device)
            assert wait_until(lambda: runner.state == "open", timeout=30), f"never reopened: {runner.state}"
        for _ in range(3):
            till.send()
        assert wait_until(lambda: set(vouchers_in_journal(tmp_path / "state")) >= set(till.written), timeout=10)
        stats = runner.stats
    finally:
        daemon.stop()
        term.close()
        sink.stop()
    seen = vouchers_in_journal(tmp_path / "state")
    assert not set(cut) & set(seen), "half a frame must never become a transaction"
    assert set(seen) == set(till.written)
    assert stats is not None and stats.bad_frames + stats.bytes_skipped > 0, "the cut frame went uncounted"
    assert runner.supervisor.reconnects >= CYCLES
