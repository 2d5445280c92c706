"""Prometheus metrics scraped over HTTP on 127.0.0.1 from a daemon reading a pty."""

from __future__ import annotations

import re
import urllib.error
import urllib.request
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from agent.config import ConfigError, parse_config
from agent.service.daemon import Daemon
from agent.service.metrics import JournalSample, Snapshot, SourceSample, render
from agent.sim.terminal import PtyTerminal, encode_event
from drivers.clock import ManualClock
from tests.helpers import SHANGHAI, committed_alerts, jsonl_line_config, sale, wait_until

METRICS = """
[metrics]
listen = "127.0.0.1:0"
"""

SAMPLE = re.compile(r"^([a-z_]+)(\{[^}]*\})? (\S+)$")


def scrape(address: str, identity: str | None = None) -> dict[str, float]:
    """Samples by name and labels; with ``identity`` (the till's shop_id/till_id labels) every sample must
    start with them, and they are left out of the keys."""
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as resp:
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = resp.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#") or not line:
            continue
        m = SAMPLE.match(line)
        assert m, f"not exposition format: {line!r}"
        labels = m.group(2) or ""
        if identity is not None:
            assert labels.startswith("{" + identity), f"no shop/till labels: {line!r}"
            labels = labels.replace(identity, "", 1).replace("{,", "{").replace("{}", "")
        out[m.group(1) + labels] = float(m.group(3))
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
        wait_until(lambda: committed_alerts(daemon) >= 1, "the DUP-001 alert")
        shop = daemon.loaded.config.shop
        # Every sample names the till (issue 19), so a central scrape of a chain tells them apart.
        identity = f'shop_id="{shop.shop_id}",till_id="{shop.till_slug}"'
        got = scrape(daemon.metrics.address, identity)
        clock.advance(12.5)
        later = scrape(daemon.metrics.address, identity)
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


# -- issue 19: a LAN address with an allow-list, and the till's ids on every sample ---------------------


@pytest.mark.parametrize("listen", ["0.0.0.0:9477", "10.1.2.3:9477", "[::]:9477"])
def test_a_lan_metrics_address_is_accepted_with_an_allow_list(listen: str) -> None:
    metrics = parse_config(f'[metrics]\nlisten = "{listen}"\nallow = ["10.0.0.0/8", "192.168.1.5"]\n').config.metrics
    assert metrics.listen == listen and len(metrics.allowed) == 2


def test_a_lan_metrics_address_without_an_allow_list_says_how_to_fix_it() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config('[metrics]\nlisten = "10.1.2.3:9477"\n', "/etc/settleguard/settleguard.toml")
    text = str(err.value)
    assert "line 2: metrics.listen: 10.1.2.3 is not loopback" in text and 'allow = ["10.0.0.0/8"]' in text


def test_a_bad_allow_entry_is_refused_with_its_index() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config('[metrics]\nallow = ["10.0.0.0/8", "head office"]\nlisten = "10.1.2.3:9477"\n')
    assert "line 2: metrics.allow: allow[1]: 'head office' is not an IP address or network" in str(err.value)


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        exc.close()
        return int(exc.code)


@pytest.mark.parametrize(("allow", "status"), [('["10.0.0.0/8"]', 403), ('["10.0.0.0/8", "127.0.0.0/8"]', 200)])
def test_the_metrics_server_answers_403_outside_its_allow_list(tmp_path: Path, allow: str, status: int) -> None:
    loaded = parse_config(f'[shop]\nid = "haowei-jingan"\ntill_id = "till-2"\n'
                          f'[metrics]\nlisten = "127.0.0.1:0"\nallow = {allow}\n')
    clock = ManualClock(datetime(2026, 11, 27, 12, 0, tzinfo=SHANGHAI))
    daemon = Daemon(loaded, tmp_path, clock=clock, use_scheduler=False)
    daemon.start()
    try:
        assert daemon.metrics is not None
        got = _get(f"http://{daemon.metrics.address}/metrics")
        text = "" if got != 200 else urllib.request.urlopen(f"http://{daemon.metrics.address}/metrics",
                                                           timeout=5).read().decode()
    finally:
        daemon.stop()
    assert got == status
    assert daemon.metrics.refused == (1 if status == 403 else 0)
    if status == 200:
        assert 'settleguard_outbox_pending{shop_id="haowei-jingan",till_id="till-2"} 0' in text


def test_identity_labels_go_first_on_every_sample() -> None:
    snap = Snapshot(sources=(SourceSample("terminal", 3, 0, 0, 1, 1.5),), journal=JournalSample(),
                    delivery_failures={"hook": 2}, identity=("haowei-jingan", "till-2"))
    samples = [line for line in render(snap).splitlines() if line and not line.startswith("#")]
    assert samples and all(s.startswith(s.split("{")[0] + '{shop_id="haowei-jingan",till_id="till-2"')
                           for s in samples), samples
    assert 'settleguard_events_decoded_total{shop_id="haowei-jingan",till_id="till-2",source="terminal"} 3' in samples
