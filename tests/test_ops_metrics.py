"""Prometheus metrics scraped over HTTP on 127.0.0.1 from a daemon reading a pty."""

from __future__ import annotations

import re
import urllib.request
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from agent.config import ConfigError, parse_config
from agent.service.daemon import Daemon
from agent.service.metrics import JournalSample, Snapshot, SourceSample, render
from agent.sim.terminal import PtyTerminal, encode_event
from drivers.clock import ManualClock
from tests.helpers import SHANGHAI, jsonl_line_config, sale, wait_until

METRICS = """
[metrics]
listen = "127.0.0.1:0"
"""

SAMPLE = re.compile(r"^([a-z_]+)(\{[^}]*\})? (\S+)$")


def scrape(address: str) -> dict[str, float]:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as resp:
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = resp.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#") or not line:
            continue
        m = SAMPLE.match(line)
        assert m, f"not exposition format: {line!r}"
        out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return out


def test_a_scrape_shows_decoded_events_skipped_garbage_and_open_alerts(tmp_path: Path) -> None:
    term = PtyTerminal()
    clock = ManualClock(datetime(2026, 11, 27, 12, 0, tzinfo=SHANGHAI))
    daemon = Daemon(parse_config(jsonl_line_config("指标测试店", term.device, METRICS)), tmp_path, clock=clock,
                    use_scheduler=False)
    daemon.start()
    try:
        assert daemon.metrics is not None and daemon.metrics.address.startswith("127.0.0.1:")
        at = daemon.clock.now() - timedelta(minutes=5)
        term.write(b"\x00\x17line noise\n")
        term.write(encode_event("jsonl", sale("000001", 12800, at)))
        term.write(encode_event("jsonl", sale("000002", 12800, at + timedelta(minutes=1))))
        pipeline = daemon.pipeline
        assert pipeline is not None
        wait_until(lambda: pipeline.counts["alerts_opened"] >= 1, "the DUP-001 alert")
        got = scrape(daemon.metrics.address)
        clock.advance(12.5)
        later = scrape(daemon.metrics.address)
    finally:
        daemon.stop()
        term.close()
    assert got['settleguard_events_decoded_total{source="terminal"}'] == 2
    assert got['settleguard_bytes_skipped_total{source="terminal"}'] > 0
    assert got['settleguard_bad_frames_total{source="terminal"}'] == 1  # the line noise: one bad JSON line
    assert got['settleguard_reconnects_total{source="terminal"}'] == 0
    assert got['settleguard_seconds_since_last_event{source="terminal"}'] == 0, "the clock has not moved"
    assert later['settleguard_seconds_since_last_event{source="terminal"}'] == 12.5
    assert got['settleguard_alerts{rule="DUP-001",state="open"}'] == 1
    assert got["settleguard_outbox_pending"] == 0 and got["settleguard_outbox_dead"] == 0
    assert got["settleguard_outbox_oldest_pending_seconds"] == 0


def test_label_values_are_escaped_and_counters_render_as_integers() -> None:
    snap = Snapshot(sources=(SourceSample('till "A"\\1', 3, 0, 0, 1, 1.5),),
                    journal=JournalSample(alerts={("AMT-003", "escalated"): 2}, outbox_pending=4,
                                          outbox_oldest_pending_seconds=12.25, outbox_dead=1),
                    delivery_failures={"shop-group": 7})
    text = render(snap)
    assert 'settleguard_events_decoded_total{source="till \\"A\\"\\\\1"} 3' in text
    assert 'settleguard_alerts{rule="AMT-003",state="escalated"} 2' in text
    assert "settleguard_outbox_oldest_pending_seconds 12.25" in text
    assert 'settleguard_delivery_failures_total{channel="shop-group"} 7' in text
    assert "# TYPE settleguard_reconnects_total counter" in text and text.endswith("\n")


@pytest.mark.parametrize("listen", ["0.0.0.0:9477", "192.168.1.10:9477", "till.local:9477", "127.0.0.1"])
def test_metrics_refuse_to_listen_beyond_loopback(listen: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(f'[metrics]\nlisten = "{listen}"\n', "/etc/settleguard/settleguard.toml")
    assert "metrics.listen" in str(err.value) and "line 2" in str(err.value)


@pytest.mark.parametrize("listen", ["127.0.0.1:9477", "[::1]:9477", "localhost:9477"])
def test_loopback_metrics_addresses_are_accepted(listen: str) -> None:
    assert parse_config(f'[metrics]\nlisten = "{listen}"\n').config.metrics.listen == listen
