"""A configuration reload with a corrupt file keeps the old configuration and keeps working.

Runs only once agent/service/reload.py exists (hot reload is being written in
parallel); until then ``settleguard run`` has no SIGHUP handler and a HUP
would simply end it, which is not what this test is about.
"""

from __future__ import annotations

import signal
from pathlib import Path

from agent.sim.rig import ShopRig
from tests.faults.support import DaemonProcess, Till, vouchers_in_journal
from tests.helpers import wait_until


def test_a_corrupt_config_on_sighup_is_refused_and_the_daemon_keeps_its_old_one(tmp_path: Path) -> None:
    rig = ShopRig(name="故障测试店", till="faults-1", state=tmp_path / "state")
    sink = rig.sink
    config = rig.write_config(tmp_path / "settleguard.toml")
    daemon = DaemonProcess(config, rig.state)
    till = Till(rig.terminal.write, dup_every=2)
    try:
        daemon.start()
        till.send()
        till.send()
        assert sink.wait_for(lambda got: len(got) == 1, timeout=10)
        config.write_text(config.read_text(encoding="utf-8").replace('protocol = "cn_ecr"', 'protocol = "cn_ecr'),
                          encoding="utf-8")
        assert daemon.proc is not None
        since = daemon.notify.mark()
        daemon.proc.send_signal(signal.SIGHUP)
        # RELOADING=1 ... READY=1 brackets the attempt: after READY the refusal is decided.
        daemon.notify.wait_for("READY=1", since=since)
        assert "RELOADING=1" in daemon.notify.lines(since)
        assert daemon.alive, "a corrupt config on reload must not stop the daemon"
        till.send()
        till.send()
        wait_until(lambda: len(vouchers_in_journal(daemon.state)) == 4, "4 charges journalled")
        assert sink.wait_for(lambda got: len(got) == 2, timeout=10), "alerting stopped after the refused reload"
        assert daemon.stop() == 0
        assert "settleguard.toml" in daemon.log.read_text(encoding="utf-8"), "the refusal must name the file"
    finally:
        daemon.close()
        rig.close()
