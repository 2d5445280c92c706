"""The terminal's USB-serial adapter is pulled in the middle of a frame, then plugged back in."""

from __future__ import annotations

import os
import time
from pathlib import Path

from agent.sim.rig import ShopRig
from agent.sim.terminal import PtyTerminal
from tests.faults.support import FULL, Till, vouchers_in_journal
from tests.helpers import wait_until

CYCLES = 5 if FULL else 1


def _point(link: Path, device: str) -> None:
    """What udev does for /dev/serial/by-id/...: the stable name now leads to the new tty."""
    tmp = link.with_name(link.name + ".new")
    tmp.unlink(missing_ok=True)
    os.symlink(device, tmp)
    os.replace(tmp, link)


def test_a_frame_cut_by_unplugging_is_dropped_and_reading_resumes_after_replug(tmp_path: Path) -> None:
    link = tmp_path / "usb-FTDI_FT232R_A5XK3RJT-if00-port0"
    rig = ShopRig(name="故障测试店", till="faults-1", state=tmp_path / "state", device=link)
    _point(link, rig.terminal.device)
    daemon = rig.daemon()
    till = Till(rig.terminal.write, dup_every=10**9)
    cut: list[str] = []

    def all_journalled() -> bool:
        return set(vouchers_in_journal(tmp_path / "state")) >= set(till.written)

    try:
        daemon.start()
        runner = daemon.sources[0]
        wait_until(lambda: runner.state == "open", "the terminal line open")
        for _ in range(CYCLES):
            for _ in range(3):
                till.send()
            wait_until(all_journalled, "every charge journalled")
            voucher, data = till.sale()
            rig.terminal.write(data[:len(data) // 2])
            cut.append(voucher)
            time.sleep(0.05)
            rig.terminal.close()  # unplugged: the daemon's next read fails
            wait_until(lambda: runner.state in ("gone", "waiting", "opening"), "the reader to notice the unplug",
                       detail=lambda: runner.state)
            rig.terminal = PtyTerminal()
            till.write = rig.terminal.write
            _point(link, rig.terminal.device)
            wait_until(lambda: runner.state == "open", "the reader to reopen", timeout=30,
                       detail=lambda: runner.state)
        for _ in range(3):
            till.send()
        wait_until(all_journalled, "every charge after the replug journalled")
        stats = runner.stats
    finally:
        daemon.stop()
        rig.close()
    seen = vouchers_in_journal(tmp_path / "state")
    assert not set(cut) & set(seen), "half a frame must never become a transaction"
    assert set(seen) == set(till.written)
    assert stats is not None and stats.bad_frames + stats.bytes_skipped > 0, "the cut frame went uncounted"
    assert runner.supervisor.reconnects >= CYCLES
