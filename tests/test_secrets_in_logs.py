"""No configured secret reaches a log line, in any form (issue 14, observation 2: "Redaction by construction").

Observed before: httpx logged every request URL at INFO; a WeCom channel given by ``url=`` was never
registered with the redactor; a key needing URL-encoding was not matched; ``http://user:password@host/
hook?token=...`` was logged whole. Here real daemons (``settleguard run`` in a subprocess, and one
in-process with every record captured at DEBUG) deliver an alert through every channel kind, each
with distinctive secrets, to receivers on 127.0.0.1 that answer with an error echoing the request
line back (so the delivery loop logs it); one channel points at a closed port. Every log line is then
searched for every secret, raw and URL-encoded.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest

from agent.config import parse_config
from agent.service import logs
from agent.service.daemon import Daemon
from drivers.clock import ManualClock
from drivers.events import event_to_json
from tests.helpers import SHANGHAI, sale, wait_until

ROOT = Path(__file__).resolve().parents[1]
HOOK_USER, HOOK_PASSWORD = "hookuser-S3cr3t-0", "hookpass-S3cr3t-1"
HOOK_QUERY_TOKEN = "qTok-S3cr3t-2"
HOOK_PATH_TOKEN = "pathTok3nAAAABBBBCCCC"
WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"webhook-signing-S3cr3t-3!").decode()
WECOM_URL_KEY = "wecomUrlKey-S3cr3t-4"
WECOM_KEY = "wecom key+S3cr3t/5=需要"          # needs URL-encoding
DINGTALK_TOKEN, DINGTALK_SIGN = "dingTok-S3cr3t-6", "SECdingSign-S3cr3t-7"
FEISHU_TOKEN, FEISHU_SIGN = "feishuTok-S3cr3t-8", "feishuSign-S3cr3t-9"
CLOSED_PASSWORD, CLOSED_TOKEN = "closedPass-S3cr3t-10", "closedTok-S3cr3t-11"
SECRETS = [HOOK_USER, HOOK_PASSWORD, HOOK_QUERY_TOKEN, HOOK_PATH_TOKEN, WEBHOOK_SECRET, WECOM_URL_KEY, WECOM_KEY,
           DINGTALK_TOKEN, DINGTALK_SIGN, FEISHU_TOKEN, FEISHU_SIGN, CLOSED_PASSWORD, CLOSED_TOKEN]


def forms(secret: str) -> set[str]:
    """The secret as a log line could carry it: raw, percent-encoded (either hex case), form-encoded."""
    out = {secret}
    for encoded in (quote(secret, safe=""), quote_plus(secret), quote(secret)):
        out |= {encoded, re.sub(r"%[0-9A-F]{2}", lambda m: m.group().lower(), encoded)}
    return out


class EchoingReceiver:
    """Every channel's endpoint on 127.0.0.1, answering each request with an error that quotes the request
    line back: a robot's unknown errcode with the path in errmsg, the webhook a 400 with the path in the body."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.paths.append(self.path)
                auth = self.headers.get("Authorization", "")
                echo = f"rejected {self.path} {auth}"
                if self.path.startswith("/hook/"):
                    body, status = echo.encode(), 400
                else:
                    answer = {"errcode": 4242, "code": 4242, "errmsg": echo, "msg": echo}
                    body, status = json.dumps(answer).encode(), 200
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def heard_every_channel(self) -> bool:
        wanted = ("/hook/", f"key={quote(WECOM_URL_KEY)}", f"key={quote(WECOM_KEY, safe='')}", "/robot/send",
                  "/open-apis/bot/v2/hook/")
        return all(any(w in p for p in list(self.paths)) for w in wanted)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def config_text(port: int, capture: Path, out: Path) -> str:
    base = f"http://127.0.0.1:{port}"
    return f"""
[shop]
name = "密钥测试店"
till = "t1"
timezone = "Asia/Shanghai"

[rules.DUP-001]
window = "10m"

[[source]]
name = "terminal"
protocol = "jsonl"
file = "{capture}"

[[channel]]
name = "hq"
type = "webhook"
url = "http://{HOOK_USER}:{HOOK_PASSWORD}@127.0.0.1:{port}/hook/{HOOK_PATH_TOKEN}?token={HOOK_QUERY_TOKEN}&v=1"
secret = "{WEBHOOK_SECRET}"

[[channel]]
name = "wecom-url"
type = "wecom"
url = "{base}/cgi-bin/webhook/send?key={WECOM_URL_KEY}"

[[channel]]
name = "wecom-key"
type = "wecom"
key = "env:SG_TEST_WECOM_KEY"
url = "{base}/cgi-bin/webhook/send"

[[channel]]
name = "dingtalk"
type = "dingtalk"
key = "{DINGTALK_TOKEN}"
secret = "{DINGTALK_SIGN}"
url = "{base}/robot/send"

[[channel]]
name = "feishu"
type = "feishu"
key = "{FEISHU_TOKEN}"
secret = "{FEISHU_SIGN}"
url = "{base}/open-apis/bot/v2/hook/"

[[channel]]
name = "dead-end"
type = "webhook"
url = "http://closer:{CLOSED_PASSWORD}@127.0.0.1:{closed_port()}/h?access_token={CLOSED_TOKEN}"

[[channel]]
name = "slip"
type = "printer"
[channel.printer]
kind = "file"
path = "{out}"

[delivery]
group_wait = "0s"
timeout = "5s"
"""


def capture_file(tmp: Path, at: datetime) -> Path:
    capture = tmp / "capture.jsonl"
    capture.write_text("".join(event_to_json(ev) + "\n" for ev in (
        sale("000122", 12800, at), sale("000123", 12800, at + timedelta(minutes=1)))), encoding="utf-8")
    return capture


# The webhook URL's userinfo as httpx sends it: an Authorization: Basic header.
BASIC = base64.b64encode(f"{HOOK_USER}:{HOOK_PASSWORD}".encode()).decode()


def leaks(text: str) -> list[str]:
    found = {f"{secret!r} as {form!r}" for secret in SECRETS for form in forms(secret) if form in text}
    return sorted(found | ({"the webhook's userinfo as Basic auth"} if BASIC in text else set()))


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[EchoingReceiver]:
    monkeypatch.setenv("SG_TEST_WECOM_KEY", WECOM_KEY)
    saved = list(logs._filter.secrets)
    r = EchoingReceiver()
    yield r
    r.close()
    logs._filter.secrets = saved


def test_settleguard_run_logs_no_secret_in_any_form(tmp_path: Path, receiver: EchoingReceiver) -> None:
    capture = capture_file(tmp_path, datetime.now(SHANGHAI).replace(microsecond=0) - timedelta(minutes=5))
    config = tmp_path / "settleguard.toml"
    config.write_text(config_text(receiver.port, capture, tmp_path / "slips.bin"), encoding="utf-8")
    stderr = tmp_path / "daemon.log"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("JOURNAL_STREAM", None)
    with open(stderr, "wb") as log:   # not a tty: the journald format, as under systemd
        proc = subprocess.Popen([sys.executable, "-m", "agent.cli", "run", "--config", str(config), "--state",
                                 str(tmp_path / "state"), "--log-level", "DEBUG"],
                                stdout=subprocess.DEVNULL, stderr=log, env=env)
    try:
        wait_until(receiver.heard_every_channel, "a request on every channel", timeout=60,
                   detail=lambda: f"heard {receiver.paths}; log: {stderr.read_text(errors='replace')[-2000:]}")
        wait_until(lambda: "dead-end" in stderr.read_text(errors="replace"), "the closed port's failure logged",
                   timeout=60)
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    text = stderr.read_text(encoding="utf-8", errors="replace")
    assert leaks(text) == [], text
    assert "<3>settleguard.delivery" in text or "<4>settleguard.delivery" in text, text[-3000:]
    for channel in ("hq", "wecom-url", "wecom-key", "dingtalk", "feishu", "dead-end"):
        assert f"channel {channel}" in text, f"nothing logged for {channel}: the test would prove nothing"
    assert "rejected /hook/***" in text, "the path stays readable; only the credentials are masked"


def test_an_in_process_daemon_makes_no_log_record_with_a_secret_even_at_debug(
        tmp_path: Path, receiver: EchoingReceiver, caplog: pytest.LogCaptureFixture) -> None:
    start = datetime(2026, 11, 27, 14, 0, tzinfo=SHANGHAI)
    capture = capture_file(tmp_path, start)
    caplog.set_level(logging.DEBUG)
    loaded = parse_config(config_text(receiver.port, capture, tmp_path / "slips.bin"), "<test>")
    daemon = Daemon(loaded, tmp_path / "state", clock=ManualClock(start + timedelta(minutes=5)), use_scheduler=False)
    daemon.start()
    try:
        wait_until(receiver.heard_every_channel, "a request on every channel", timeout=60,
                   detail=lambda: f"heard {receiver.paths}")
        wait_until(lambda: any("dead-end" in r.getMessage() for r in caplog.records), "the closed port's failure")
        logging.getLogger("settleguard.test").warning("url in use: %s",
                                                      f"http://x:{HOOK_PASSWORD}@h/?token={HOOK_QUERY_TOKEN}")
    finally:
        daemon.stop()
    text = "\n".join(f"{r.name}: {r.getMessage()}\n{r.exc_text or ''}" for r in caplog.records)
    assert leaks(text) == [], text
    for channel in ("hq", "wecom-url", "wecom-key", "dingtalk", "feishu", "dead-end"):
        assert f"channel {channel}" in text, f"nothing logged for {channel}: the test would prove nothing"
    assert "url in use: http://***@h/?token=***" in text


def test_secrets_never_format_as_their_value() -> None:
    loaded = parse_config(f"""
[[channel]]
name = "d"
type = "dingtalk"
key = "{DINGTALK_TOKEN}"
secret = "{DINGTALK_SIGN}"
""")
    ch = loaded.config.channel[0]
    shown = " ".join([repr(ch), str(ch), f"{ch}", f"{ch.key}", f"{ch.secret!s}", ch.model_dump_json(),
                      json.dumps(ch.model_dump(mode="json")), repr(loaded.config)])
    assert DINGTALK_TOKEN not in shown and DINGTALK_SIGN not in shown
    assert ch.key is not None and ch.key.get_secret_value() == DINGTALK_TOKEN


def test_the_redactor_masks_url_credentials_in_every_encoding() -> None:
    f = logs.RedactingFilter()
    logs.add_secrets(["http://u:pw-S3cr3t@h:1/p/pathTok3nAAAABBBBCCCC?key=a%2Bb%20c-S3cr3t"])
    for line in ("POST http://u:pw-S3cr3t@h:1/p/pathTok3nAAAABBBBCCCC?key=a%2Bb%20c-S3cr3t",
                 "key was a+b c-S3cr3t", "key a%2bb%20c-S3cr3t", "userinfo pw-S3cr3t"):
        clean = logs._filter.redact(line)
        assert "S3cr3t" not in clean and "pathTok3n" not in clean, clean
    assert logs._filter.redact("POST http://h:1/p?x=1") == "POST http://h:1/p?x=1"
    # Unregistered credentials in a URL are masked by shape.
    assert f.redact("GET http://bob:hunter22@h/x?access_token=abcdef&n=1") == "GET http://***@h/x?access_token=***&n=1"
