"""The daemon, ``replay`` and ``decode`` build their decoders in one place, so the same bytes and the same
source options give the same events on all three paths (issue 12: a cn_ecr source with lrc_init = 127
decoded live, but ``replay`` of the same bytes gave only "LRC mismatch")."""

from __future__ import annotations

import json
import os
import queue
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agent.cli import main
from agent.config import SourceConfig, load_config
from agent.messages import Command, EventBatch
from agent.replay import decode_captures
from agent.sim import wire_cn_ecr, wire_zvt
from agent.sim.day import build_day
from agent.sources import SourceRunner, decoder_options
from drivers.clock import ManualClock
from drivers.events import event_to_json
from drivers.transports import VirtualSource
from tests.helpers import SHANGHAI

CONFIG = """
[shop]
name = "三条路测试店"
timezone = "Asia/Shanghai"

[[source]]
name = "printer"
protocol = "escpos"
spool = "/var/spool/settleguard"

[[source]]
name = "terminal"
protocol = "{protocol}"
port = "/dev/ttyUSB0"
{options}
"""

# When the capture was taken: places the terminal's year-less timestamps (file mtime for replay and decode).
TAKEN = datetime(2026, 11, 27, 23, 30, tzinfo=UTC)

CASES = {
    # The vendor starts its XOR at 0x7F: with the default 0x00 every frame is an LRC mismatch.
    "cn_ecr": ("options = { lrc_init = 127 }", ["lrc_init=127"],
               lambda ev: wire_cn_ecr.encode(ev, lrc_init=0x7F)),
    # A tty carries DLE-framed ZVT: the daemon infers transport = "serial" from the port.
    "zvt": ("", ["transport=serial"], wire_zvt.encode),
}


def capture_for(protocol: str) -> bytes:
    encode = CASES[protocol][2]
    return b"".join(encode(e.event) for e in build_day("demo", seed=3, settle=False) if not e.reprint)


def daemon_path(cfg: SourceConfig, data: bytes) -> list[str]:
    inbox: queue.Queue[EventBatch | Command] = queue.Queue()
    wire = VirtualSource("terminal")
    runner = SourceRunner(cfg, SHANGHAI, inbox, clock=ManualClock(TAKEN), transport=wire)
    runner.start()
    for start in range(0, len(data), 37):  # an awkward read size, as a slow line delivers
        wire.push(data[start:start + 37])
    wire.finish()
    assert runner.supervisor is not None
    runner.supervisor.join(10.0)
    assert runner.state == "ended"
    events = []
    while not inbox.empty():
        batch = inbox.get_nowait()
        assert isinstance(batch, EventBatch)
        events.extend(batch.events)
    return [event_to_json(e) for e in events]


def replay_path(cfg: SourceConfig, capture: Path) -> list[str]:
    events, _ = decode_captures([capture], cfg.protocol, SHANGHAI, options=decoder_options(cfg))
    return [event_to_json(e) for e, _ in events]


def decode_path(protocol: str, capture: Path, capsys: pytest.CaptureFixture[str]) -> list[str]:
    capsys.readouterr()
    options = [arg for opt in CASES[protocol][1] for arg in ("--option", opt)]
    assert main(["decode", "--protocol", protocol, "--tz", "Asia/Shanghai", *options, str(capture)]) == 0
    return [json.dumps(json.loads(line), ensure_ascii=False, separators=(",", ":"))
            for line in capsys.readouterr().out.splitlines()]


@pytest.mark.parametrize("protocol", sorted(CASES))
def test_daemon_replay_and_decode_give_the_same_events_with_the_sources_options(
        tmp_path: Path, protocol: str, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "settleguard.toml"
    config.write_text(CONFIG.format(protocol=protocol, options=CASES[protocol][0]), encoding="utf-8")
    cfg = load_config(str(config)).config.source[1]
    capture = tmp_path / f"{protocol}.bin"
    capture.write_bytes(capture_for(protocol))
    os.utime(capture, (TAKEN.timestamp(), TAKEN.timestamp()))

    live = daemon_path(cfg, capture.read_bytes())
    assert len(live) >= 10
    assert replay_path(cfg, capture) == live
    decoded = decode_path(protocol, capture, capsys)
    assert [json.loads(x) for x in decoded] == [json.loads(x) for x in live]

    # The replay command picks the configured source of that protocol, not the first one (escpos).
    assert main(["replay", "--config", str(config), "--protocol", protocol, "--json", str(capture)]) == 0
    assert main(["replay", "--config", str(config), "--source", "terminal", "--json", str(capture)]) == 0
    assert "skipped in" not in capsys.readouterr().err
    assert main(["replay", "--config", str(config), "--source", "till", str(capture)]) == 2
    assert main(["replay", "--config", str(config), "--source", "terminal", "--protocol", "escpos", str(capture)]) == 2


def test_without_the_sources_options_the_vendors_frames_do_not_decode(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capture = tmp_path / "cn_ecr.bin"
    capture.write_bytes(capture_for("cn_ecr"))
    assert main(["decode", "--protocol", "cn_ecr", str(capture)]) == 65
    assert "LRC mismatch" in capsys.readouterr().err
