"""A local webhook receiver for the demo and tests: verifies signatures, dedups on webhook-id.

It is what a back office would run: it accepts Standard Webhooks requests on
127.0.0.1, checks the HMAC signature, and keeps the first copy of each
``webhook-id`` (retries of one revision are the same id).

``event_check``, when set (the test suite sets it for every test, see
tests/conftest.py), is called on every CloudEvent a sink receives and raises
when the event is not valid CloudEvents 1.0; the sink then answers 400 and
keeps the event in ``invalid``, so a test whose daemon sends one fails.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from drivers.clock import SYSTEM_CLOCK, Clock


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def verify(secret: str, headers: dict[str, str], body: bytes, *, now: float, tolerance: int = 300) -> bool:
    """A valid Standard Webhooks signature, timestamped within ``tolerance`` seconds of ``now`` (Unix time)."""
    msg_id = headers.get("webhook-id", "")
    ts = headers.get("webhook-timestamp", "")
    if not msg_id or not ts.isdigit():
        return False
    if abs(now - int(ts)) > tolerance:
        return False
    expected = sign(secret, msg_id, int(ts), body).split(",", 1)[1]
    for part in headers.get("webhook-signature", "").split():
        version, _, sig = part.partition(",")
        if version == "v1" and hmac.compare_digest(sig, expected):
            return True
    return False


CLOUDEVENTS_JSON = "application/cloudevents+json"
EventCheck = Callable[[dict[str, Any]], None]
# Process-wide, so the sinks a daemon under test talks to need no wiring of their own.
event_check: EventCheck | None = None


@dataclass
class Received:
    webhook_id: str
    body: dict[str, Any]
    arrived: float      # the sink's clock, monotonic


@dataclass
class WebhookSink:
    secret: str | None = None
    tolerance: int = 300               # seconds of clock skew accepted on webhook-timestamp
    clock: Clock = SYSTEM_CLOCK        # the demo's sink shares the shop's simulated clock
    host: str = "127.0.0.1"
    port: int = 0
    # Scripted failures for fault tests: each call returns (status, headers) or None to accept.
    fault: Callable[[int], tuple[int, dict[str, str]] | None] | None = None
    received: list[Received] = field(default_factory=list)
    seen_ids: set[str] = field(default_factory=set)
    requests: int = 0
    rejected: int = 0
    on_receive: Callable[[Received], None] | None = None
    invalid: list[tuple[dict[str, Any], str]] = field(default_factory=list)   # (event, why) refused by event_check

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                with sink._lock:
                    sink.requests += 1
                    n = sink.requests
                if sink.fault is not None:
                    scripted = sink.fault(n)
                    if scripted is not None:
                        status, extra = scripted
                        self.send_response(status)
                        for k, v in extra.items():
                            self.send_header(k, v)
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                headers = {k.lower(): v for k, v in self.headers.items()}
                now = sink.clock.now().timestamp()
                if sink.secret and not verify(sink.secret, headers, body, now=now, tolerance=sink.tolerance):
                    with sink._lock:
                        sink.rejected += 1
                    self.send_response(401)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                try:
                    parsed = json.loads(body)
                except ValueError:
                    self.send_response(400)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                check = event_check
                if check is not None and headers.get("content-type", "").startswith(CLOUDEVENTS_JSON):
                    try:
                        check(parsed)
                    except Exception as exc:  # the check's own error type is the test suite's business
                        with sink._lock:
                            sink.invalid.append((parsed, str(exc)))
                        self.send_response(400)
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                rec = Received(headers.get("webhook-id", ""), parsed, sink.clock.monotonic())
                with sink._cond:
                    if rec.webhook_id not in sink.seen_ids:
                        sink.seen_ids.add(rec.webhook_id)
                        sink.received.append(rec)
                        fresh = True
                    else:
                        fresh = False
                    sink._cond.notify_all()
                if fresh and sink.on_receive:
                    sink.on_receive(rec)
                self.send_response(204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((self.host, self.port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        # A short poll interval: stop() returns within 50 ms instead of half a second.
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="webhook-sink", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/settleguard"

    def start(self) -> WebhookSink:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def wait_for(self, predicate: Callable[[list[Received]], bool], timeout: float) -> bool:
        """Wait up to ``timeout`` real seconds for the received requests to satisfy ``predicate``."""
        with self._cond:
            return bool(self._cond.wait_for(lambda: predicate(self.received), timeout))


class RobotSink:
    """A WeCom group robot stand-in on 127.0.0.1 for the demo: what a shop's phones would be shown.

    It answers as the real robot does when it takes a message (HTTP 200, ``errcode`` 0) and hands each
    message's markdown on to ``on_message``; the demo prints it, so whoever runs ``make demo`` sees the
    messages a phone gets (and, by their absence, what the noise budget held back).
    """

    def __init__(self, on_message: Callable[[str], None], host: str = "127.0.0.1") -> None:
        self.messages: list[str] = []
        self._lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    content = str(json.loads(body)["markdown"]["content"])
                except (ValueError, KeyError, TypeError):
                    content = None
                reply = b'{"errcode":0,"errmsg":"ok"}' if content is not None else b'{"errcode":40008,"errmsg":"bad"}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)
                if content is not None:
                    with sink._lock:
                        sink.messages.append(content)
                    on_message(content)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.server.daemon_threads = True
        self.host, self.port = host, self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="robot-sink", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/cgi-bin/webhook/send"

    def start(self) -> RobotSink:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
