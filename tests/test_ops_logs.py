"""Log lines for journald: priority prefixes, no timestamps, no secrets, no card numbers."""

from __future__ import annotations

import base64
import io
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.config import parse_config
from agent.service import logs
from agent.service.daemon import Daemon

FULL_PAN = "6225760012346693"   # Luhn-valid, the shape the simulator sends


@pytest.fixture
def journald_stream(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    root = logging.getLogger()
    saved = (list(root.handlers), root.level, list(logs._filter.secrets))
    logs.setup_logging("INFO", journald=True)
    yield stream
    for h in list(root.handlers):
        root.removeHandler(h)
    for h in saved[0]:
        root.addHandler(h)
    root.setLevel(saved[1])
    logs._filter.secrets = saved[2]


def test_the_daemon_registers_its_channel_secrets_so_no_log_line_carries_them(
        tmp_path: Path, journald_stream: io.StringIO, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "whsec_" + base64.b64encode(os.urandom(24)).decode()
    robot_key = "wecom-key-" + os.urandom(8).hex()
    monkeypatch.setenv("SG_TEST_WECOM_KEY", robot_key)
    loaded = parse_config(f"""
[shop]
name = "日志测试店"
timezone = "Asia/Shanghai"

[[channel]]
name = "hq"
type = "webhook"
url = "http://127.0.0.1:9/hook"
secret = "{secret}"

[[channel]]
name = "group"
type = "wecom"
key = "env:SG_TEST_WECOM_KEY"
""")
    daemon = Daemon(loaded, tmp_path, use_scheduler=False)
    daemon.start()
    try:
        log = logging.getLogger("settleguard.test")
        log.error("robot refused key %s for card %s", robot_key, FULL_PAN)
        log.warning("signing with %s", secret)
        try:
            raise RuntimeError(f"bad secret {secret}")
        except RuntimeError:
            log.exception("delivery step failed")
    finally:
        daemon.stop()
    text = journald_stream.getvalue()
    assert robot_key not in text and secret not in text and FULL_PAN not in text
    assert "robot refused key *** for card 622576******6693" in text
    lines = [line for line in text.splitlines() if line]
    assert any(line.startswith("<3>settleguard.test: robot refused") for line in lines)
    assert any(line.startswith("<4>settleguard.test: signing with ***") for line in lines)
    assert any(line.startswith("<6>settleguard.daemon: settleguard running") for line in lines)
    # journald stamps lines itself: none of ours starts with a clock.
    assert not any(re.match(r"<\d>\d\d:\d\d", line) for line in lines)
    assert all(re.match(r"<[2-7]>", line) for line in lines), "every line of a traceback keeps its priority"
