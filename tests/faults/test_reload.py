"""A configuration reload with a corrupt file keeps the old configuration and keeps working.

Runs only once agent/service/reload.py exists (hot reload is being written in
parallel); until then ``settleguard run`` has no SIGHUP handler and a HUP
would simply end it, which is not what this test is about.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

from agent.sim.sink import WebhookSink
from agent.sim.terminal import PtyTerminal
from tests.faults.support import CONFIG, DaemonProcess, Till, vouchers_in_journal, wait_until


def test_a_corrupt_config_on_sighup_is_refused_and_the_daemon_keeps_its_old_one(tmp_path: Path) -> None:
    sink = WebhookSink().start()
    term = PtyTerminal()
    config = tmp_path / "settleguard.toml"
    config.write_text(CONFIG.format(device=term.device, url=sink.url, secret="whsec_cmVsb2FkcmVsb2FkcmVsb2Fk"),
                      encoding="utf-8")
    daemon = DaemonProcess(config, tmp_path / "state")
    till = Till(term.write, dup_every=2)
    try:
        daemon.start()
        till.send()
        till.send()
        assert sink.wait_for(lambda got: len(got) == 1, timeout=10)
        config.write_text(config.read_text(encoding="utf-8").replace('protocol = "cn_ecr"', 'protocol = "cn_ecr'),
                          encoding="utf-8")
        assert daemon.proc is not None
        daemon.proc.send_signal(signal.SIGHUP)
        time.sleep(1.0)
        assert daemon.alive, "a corrupt config on reload must not stop the daemon"
        till.send()
        till.send()
        assert wait_until(lambda: len(vouchers_in_journal(daemon.state)) == 4, timeout=10)
        assert sink.wait_for(lambda got: len(got) == 2, timeout=10), "alerting stopped after the refused reload"
        assert daemon.stop() == 0
        assert "settleguard.toml" in daemon.log.read_text(encoding="utf-8"), "the refusal must name the file"
    finally:
        daemon.close()
        term.close()
        sink.stop()
