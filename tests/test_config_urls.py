"""A channel address check-config accepts is one the delivery thread can send to (issue 13, observation 4)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from agent.config import ConfigError, parse_config
from agent.sim.rig import new_secret

BASE = """
[shop]
name = "地址测试店"
timezone = "Asia/Shanghai"

[[source]]
name = "terminal"
protocol = "jsonl"
file = "/dev/null"
"""


def webhook(url: str) -> str:
    return f'\n[[channel]]\nname = "hook"\ntype = "webhook"\nurl = "{url}"\nsecret = "{new_secret()}"\n'


@pytest.mark.parametrize(("url", "says"), [
    ("ftp://127.0.0.1/x", "must start with http:// or https:// (got ftp:)"),
    ("http:///x", "has no host name"),
    ("http://[::1/x", "not a valid address"),
    ("http://127.0.0.1:99999/x", "not a valid address"),
    ("127.0.0.1:8080/hook", "must start with http://"),
])
def test_an_address_that_can_never_deliver_is_refused_without_repeating_it(url: str, says: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(BASE + webhook(url.replace("/x", "/x?token=s3cr3t-in-the-query")), path=Path("shop.toml"))
    message = str(info.value)
    assert says in message and "url" in message
    assert "s3cr3t" not in message, "a URL may carry a token: the error never repeats it"


def test_a_robot_override_url_is_checked_too() -> None:
    text = BASE + '\n[[channel]]\nname = "robot"\ntype = "wecom"\nurl = "gopher://qyapi.example/x"\n'
    with pytest.raises(ConfigError, match="must start with http:// or https://"):
        parse_config(text, path=Path("shop.toml"))


def test_ordinary_addresses_pass() -> None:
    for url in ("https://hooks.example.com/settleguard", "http://127.0.0.1:8080/hook", "http://[::1]:9/x"):
        parse_config(BASE + webhook(url), path=Path("shop.toml"))


def test_a_printer_port_out_of_range_is_refused_by_check_config(tmp_path: Path) -> None:
    config = tmp_path / "shop.toml"
    config.write_text(BASE + '\n[[channel]]\nname = "slip"\ntype = "printer"\n'
                      '[channel.printer]\nkind = "network"\nhost = "127.0.0.1"\nport = 99999\n', encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "agent.cli", "check-config", str(config)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 78, proc.stdout + proc.stderr
    assert "printer.port must be a TCP port, 1 to 65535 (got 99999)" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, "one plain line, no traceback"
